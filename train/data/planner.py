"""Hierarchical event selection, top level: scenario -> an ordered plan of events.

The default planner is a seeded grammar; any object with `plan(...)` (an LLM prompt, a
script) can replace it as long as it returns a `Plan`, which round-trips through JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from . import text
from .recipe import EVENT_KINDS, Recipe


@dataclass(frozen=True)
class Scenario:
    name: str
    beds: tuple[str, ...]  # procedural bed names (procedural.BEDS)
    alerts: tuple[str, ...]  # alert-worthy labels that fit the place
    ordinary: tuple[str, ...]  # everyday labels
    negatives: tuple[str, ...]  # sounds that resemble alerts but are not
    tv_share: float = 0.0  # share of speech that comes from a TV (band-limited, music)


def _load_scenarios() -> dict[str, Scenario]:
    """The places a stream can be set in, from scenarios.json in file order (choose_scenario
    draws from them in this order, so reordering the file changes every seeded build)."""
    rows = json.loads(Path(__file__).with_name("scenarios.json").read_text(encoding="utf-8"))
    out = {}
    for row in rows:
        s = Scenario(**{k: tuple(v) if isinstance(v, list) else v for k, v in row.items()})
        out[s.name] = s
    return out


SCENARIOS = _load_scenarios()


@dataclass(frozen=True)
class PlannedEvent:
    """One abstract event; the renderer grounds it with a clip or a synthesizer."""

    kind: str  # "sound", "speech", "tv", "shout", "instruction"
    gap_s: float  # bed-only time before it starts, after the previous event ends (<0: overlap)
    label: str = ""  # sound label, or "chatter"/"hard_negative" for speech
    speaker: int = 0  # index into the stream's speakers (0 addresses the device)
    text: str = ""  # fixed wording, if the plan chooses it
    intent: str = ""  # for instructions
    snr_db: float = 10.0


@dataclass(frozen=True)
class Plan:
    scenario: str
    bed: str
    duration: float
    n_speakers: int
    events: tuple[PlannedEvent, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, s: str) -> Plan:
        d = json.loads(s)
        d["events"] = tuple(PlannedEvent(**e) for e in d["events"])
        return cls(**d)


class Planner(Protocol):
    def plan(
        self,
        scenario: Scenario,
        duration: float,
        rng: np.random.Generator,
        recipe: Recipe,
        labels: set[str],
    ) -> Plan: ...


class GrammarPlanner:
    """Seeded grammar: pick an event kind by the recipe's shares, then its concrete form."""

    mean_event_s = 3.5  # rough length of a grounded event, to fill the stream

    def __init__(self, split: str = "train") -> None:
        self.split = split  # whose natural sentences the speech draws on

    def plan(
        self,
        scenario: Scenario,
        duration: float,
        rng: np.random.Generator,
        recipe: Recipe,
        labels: set[str],
    ) -> Plan:
        kinds = [k for k in EVENT_KINDS if recipe.task_shares.get(k, 0) > 0]
        weights = np.array([recipe.task_shares[k] for k in kinds], np.float64)
        weights /= weights.sum()
        pick = lambda names: [n for n in names if n in labels]  # noqa: E731
        alerts, ordinary, negatives = (
            pick(scenario.alerts),
            pick(scenario.ordinary),
            pick(scenario.negatives),
        )
        n_speakers = int(rng.integers(2, 4))  # the device's user plus 1-2 others
        pools = {
            "alerts": alerts,
            "ordinary": ordinary,
            "negatives": negatives,
            "n_speakers": n_speakers,
            "corpus_speech": "speech" in labels,
            "overlap": recipe.overlap_prob,
        }
        mean_gap = max(0.5, 60.0 / recipe.events_per_minute - self.mean_event_s)
        events: list[PlannedEvent] = []
        t = 0.0
        window_end = 0.0
        while t < duration:
            gap = float(rng.uniform(0.5, 3.0) if not events else 0.5 + rng.exponential(mean_gap))
            if t + gap >= window_end:  # a new 30 s window: maybe leave it to the bed
                window_end = (int((t + gap) // 30) + 1) * 30.0
                if rng.uniform() < recipe.silence_ratio:
                    gap = window_end - t + float(rng.uniform(0, 2))
                    window_end += 30.0
            snr = float(rng.uniform(*recipe.snr_db))
            kind = str(rng.choice(kinds, p=weights))
            new = self._event(kind, gap, snr, rng, scenario, pools)
            events += new
            t += gap + self.mean_event_s * len(new)
        return Plan(
            scenario.name, str(rng.choice(scenario.beds)), duration, n_speakers, tuple(events)
        )

    def _event(self, kind, gap, snr, rng, scenario, pools):
        alerts, ordinary, negatives = pools["alerts"], pools["ordinary"], pools["negatives"]
        n_speakers = pools["n_speakers"]
        other = lambda: int(rng.integers(1, n_speakers))  # noqa: E731 (not the device's user)
        if kind == "alert" and (alerts and rng.uniform() > 0.1):
            return [PlannedEvent("sound", gap, str(rng.choice(alerts)), snr_db=snr)]
        if kind == "alert":
            return [
                PlannedEvent(
                    "shout", gap, "shout_for_help", other(), text.shout(rng), snr_db=snr + 5
                )
            ]
        if kind == "ordinary" and ordinary:
            if rng.uniform() < pools["overlap"]:  # everyday sounds do not wait for people to finish
                gap = -float(rng.uniform(0.5, 2.5))
            return [PlannedEvent("sound", gap, str(rng.choice(ordinary)), snr_db=snr)]
        if kind == "hard_negative" and negatives and rng.uniform() < 0.5:
            return [PlannedEvent("sound", gap, str(rng.choice(negatives)), snr_db=snr)]
        if kind == "hard_negative":
            return [
                PlannedEvent(
                    "speech", gap, "hard_negative", other(), text.hard_negative(rng), snr_db=snr
                )
            ]
        if kind == "assist":
            intent = str(rng.choice(text.INTENTS))
            return [
                PlannedEvent(
                    "instruction", gap, "instruction", 0, intent=intent, snr_db=max(snr, 8.0)
                )
            ]
        # speech: a TV line, or a short exchange between the people in the room
        if rng.uniform() < scenario.tv_share:
            return [
                PlannedEvent(
                    "tv", gap, "tv", n_speakers, text.chatter(rng, self.split), snr_db=snr - 3
                )
            ]
        if pools["corpus_speech"] and rng.uniform() < 0.5:  # a user corpus (LibriSpeech-style)
            return [PlannedEvent("speech", gap, "corpus", other(), snr_db=snr)]
        turns = int(rng.integers(1, 4))
        first = other()
        speakers = [first if k % 2 == 0 else int(rng.integers(0, n_speakers)) for k in range(turns)]
        return [
            PlannedEvent(
                "speech",
                gap if k == 0 else float(rng.uniform(0.2, 0.8)),
                "chatter",
                s,
                text.chatter(rng, self.split),
                snr_db=snr,
            )
            for k, s in enumerate(speakers)
        ]


def choose_scenario(rng: np.random.Generator, recipe: Recipe) -> Scenario:
    names = recipe.scenarios or tuple(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; known: {sorted(SCENARIOS)}")
    return SCENARIOS[str(rng.choice(names))]
