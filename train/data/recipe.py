"""Recipes: the committed mix parameters of a build (recipes/*.json), as a frozen dataclass.

A recipe names the stream lengths, event rate, silence, SNRs, task shares, scenarios and
augmentation; `soundflow data build --recipe NAME` loads recipes/NAME.json (or a path).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .augment import AugmentConfig
from .tfjp import TFJPConfig

RECIPE_DIR = Path(__file__).parent / "recipes"
EVENT_KINDS = ("speech", "alert", "assist", "ordinary", "hard_negative")


@dataclass(frozen=True)
class Recipe:
    name: str
    duration_s: tuple[float, float] = (60.0, 600.0)  # stream length range
    events_per_minute: float = 4.0  # foreground events (sounds and utterances) while active
    silence_ratio: float = 0.2  # share of 30 s windows left to the bed alone
    snr_db: tuple[float, float] = (0.0, 20.0)  # event core RMS over bed RMS
    bed_db: tuple[float, float] = (-50.0, -32.0)  # bed RMS, dBFS
    # Shares of planned events by kind: speech feeds transcribe, alert feeds alert,
    # assist feeds assist; ordinary sounds and hard negatives teach silence.
    task_shares: dict[str, float] = field(
        default_factory=lambda: {
            "speech": 0.35,
            "alert": 0.2,
            "assist": 0.2,
            "ordinary": 0.15,
            "hard_negative": 0.1,
        }
    )
    scenarios: tuple[str, ...] = ()  # empty: every scenario, uniformly
    overlap_prob: float = 0.15  # share of ordinary sounds that start before the previous event ends
    festival_share: float = 0.15  # share of chatter speakers voiced by festival (if installed)
    packages: bool = True  # use the Debian sound packages when installed
    # User corpora added to the library: [{"kind": "esc50"|"manifest", "path": "..."}]. Their
    # labels join scenarios through the same names (siren, dog_bark, ...).
    corpora: tuple[dict, ...] = ()
    augment: AugmentConfig = AugmentConfig()
    tfjp: TFJPConfig = TFJPConfig()

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        d = dict(d)
        d["augment"] = AugmentConfig(**{k: _tuple(v) for k, v in d.get("augment", {}).items()})
        d["tfjp"] = TFJPConfig(**d.get("tfjp", {}))
        for key in ("duration_s", "snr_db", "bed_db", "scenarios", "corpora"):
            if key in d:
                d[key] = _tuple(d[key])
        unknown = set(d.get("task_shares", {})) - set(EVENT_KINDS)
        if unknown:
            raise ValueError(
                f"recipe {d.get('name')}: unknown task_shares {sorted(unknown)}; use {EVENT_KINDS}"
            )
        return cls(**d)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def fingerprint(self) -> str:
        """Short hash of every parameter: shards built elsewhere must agree on it."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _tuple(v):
    return tuple(v) if isinstance(v, list) else v


def load_recipe(name_or_path: str) -> Recipe:
    """recipes/NAME.json, or a JSON file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPE_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.json")))
        raise FileNotFoundError(f"no recipe {name_or_path!r}: use one of {known} or a .json path")
    return Recipe.from_dict(json.loads(path.read_text()))
