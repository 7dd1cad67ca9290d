"""The clip library: an index of every sound a stream can be grounded with, and its loader.

Sources: procedural generators, the Debian sound packages train/data/README.md lists (labelled by
the curated sources/labels.csv, never by file names), and user corpora (LibriSpeech-style
folders, ESC-50-style CSVs, JSONL manifests). Speech synthesis lives in espeak/festival.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import struct
import subprocess
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from soundflow.audio import SAMPLE_RATE
from soundflow.train.held_out_sources import HELD_OUT, held_out_source

from . import procedural

CATEGORIES = ("Human", "Daily", "Equipment", "Traffic", "Nature", "Music", "Speech")
LABELS_CSV = Path(__file__).parent / "sources" / "labels.csv"
AUDIO_SUFFIXES = (".wav", ".ogg", ".oga", ".flac")
MAX_FILE_S = 60.0  # decode at most this much of a file
EVAL_HASH_MOD = 5  # files whose id hashes to 0 mod this go to eval (20 %), never to train


@dataclass(frozen=True)
class Clip:
    """One library entry. Procedural clips have no path: they are generated per use."""

    id: str
    source: str  # "procedural:smoke_alarm", "deb:oxygen-sounds", "esc50", "librispeech", ...
    label: str  # [a-z0-9_]
    category: str  # one of CATEGORIES
    tags: tuple[str, ...] = ()
    alert: bool = False
    caption: str = ""  # the response text when this clip is announced or recalled
    license: str = "unknown"
    split: str = "any"  # "train", "eval" or "any" (procedural: the split picks parameters)
    path: str | None = None
    duration: float | None = None  # seconds; None until loaded (procedural: varies)
    text: str | None = None  # transcript, for speech corpora
    extra: dict = field(default_factory=dict, compare=False)


def _file_split(clip_id: str) -> str:
    # crc32, not hash(): Python salts str hashes per process, and splits must be stable.
    return "eval" if zlib.crc32(clip_id.encode()) % EVAL_HASH_MOD == 0 else "train"


def procedural_clips() -> list[Clip]:
    return [
        Clip(
            id=f"procedural:{s.label}",
            source=f"procedural:{s.label}",
            label=s.label,
            category=s.category,
            tags=s.tags,
            alert=s.alert,
            caption=s.caption,
            license="generated (Apache-2.0)",
        )
        for s in procedural.SOUNDS.values()
    ]


def load_label_table(path: Path = LABELS_CSV) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


CAT_SEP = "#"  # "container.cat#17": entry 17 of an OpenTTD sound container


def cat_entries(path: str) -> list[tuple[int, str]]:
    """(index, description) of each sound in an OpenTTD .cat (opensfx keeps name, author and
    licence of every sound in its description)."""
    data = Path(path).read_bytes()
    count = (struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF) // 8
    out = []
    for i in range(count):
        offset = struct.unpack_from("<I", data, i * 8)[0] & 0x7FFFFFFF
        n = data[offset]
        out.append((i, data[offset + 1 : offset + 1 + n].rstrip(b"\0").decode("latin-1")))
    return out


@lru_cache(maxsize=2)
def _container(path: str) -> bytes:
    return Path(path).read_bytes()


def _cat_wav(path: str, index: int) -> bytes:
    data = _container(path)
    offset, size = struct.unpack_from("<II", data, index * 8)
    offset &= 0x7FFFFFFF
    n = data[offset]
    return data[offset + 1 + n : offset + size]


def _cat_entry_matches(path: str, note: str) -> bool:
    """A container row names its sound in quotes ('"Crash"'); the entry must say the same."""
    if not note.startswith('"'):
        return True
    container, index = path.rsplit(CAT_SEP, 1)
    desc = dict(_cat_descriptions(container)).get(int(index), "")
    return desc.startswith('"' + note.split('"')[1] + '"')


@lru_cache(maxsize=8)
def _cat_descriptions(container: str) -> tuple[tuple[int, str], ...]:
    return tuple(cat_entries(container))


def _package_files(package: str) -> list[str]:
    """Audio files an installed Debian package owns (dpkg -L), or [] if absent.

    Sound containers (.cat) are listed entry by entry as "FILE.cat#INDEX"."""
    try:
        out = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return []
    if out.returncode != 0:
        return []
    files = []
    for p in out.stdout.splitlines():
        if p.endswith(AUDIO_SUFFIXES) and Path(p).is_file():
            files.append(p)
        elif p.endswith(".cat") and Path(p).is_file():
            files += [f"{p}{CAT_SEP}{i}" for i, _ in cat_entries(p)]
    return sorted(files)


def package_clips(table: list[dict] | None = None) -> tuple[list[Clip], list[str]]:
    """Clips from installed packages that the label table covers; and the missing packages.

    The first matching row wins, so specific rows precede a package's catch-all; a row
    with an empty label excludes its files; a file no row matches is not indexed.
    """
    table = table if table is not None else load_label_table()
    clips, missing = [], []
    for package in dict.fromkeys(row["package"] for row in table):
        files = _package_files(package)
        if not files:
            missing.append(package)
            continue
        rows = [r for r in table if r["package"] == package]
        for path in files:
            row = next((r for r in rows if fnmatch.fnmatch(path, "*/" + r["pattern"])), None)
            if row is None or not row["label"]:
                continue
            if CAT_SEP in path and not _cat_entry_matches(path, row["note"]):
                continue  # another package version reordered the container: label unknown
            cid = f"deb:{package}:{Path(path).name}"
            clips.append(
                Clip(
                    id=cid,
                    source=f"deb:{package}",
                    label=row["label"],
                    category=row["category"],
                    tags=tuple(row["tags"].split()),
                    alert=row["alert"] == "1",
                    caption=row["caption"],
                    license=row["license"],
                    split=_file_split(cid),
                    path=path,
                )
            )
    return clips, missing


# --- user corpora --------------------------------------------------------------------------

# ESC-50 class -> (label, category, alert, caption). Classes not listed are indexed as
# ordinary sounds of their own name.
ESC50_MAP = {
    "siren": ("siren", "Traffic", True, "a siren is sounding nearby"),
    "crying_baby": ("baby_cry", "Human", True, "a baby is crying"),
    "glass_breaking": ("glass_break", "Daily", True, "something made of glass just broke"),
    "clock_alarm": ("alarm_clock", "Equipment", True, "an alarm clock is ringing"),
    "car_horn": ("car_horn", "Traffic", True, "a car horn is honking"),
    "door_wood_knock": ("knock", "Daily", False, "someone knocking"),
    "dog": ("dog_bark", "Nature", False, "a dog barking"),
    "rain": ("rain", "Nature", False, "rain"),
    "engine": ("engine", "Traffic", False, "an engine running"),
    "keyboard_typing": ("typing", "Equipment", False, "someone typing"),
    "vacuum_cleaner": ("vacuum", "Equipment", False, "a vacuum cleaner"),
    "footsteps": ("footsteps", "Human", False, "footsteps"),
    "coughing": ("cough", "Human", False, "someone coughing"),
    "clapping": ("applause", "Human", False, "people clapping"),
}
ESC50_CATEGORY = {0: "Nature", 1: "Nature", 2: "Human", 3: "Daily", 4: "Traffic"}  # target // 10


def esc50_clips(csv_path: str | Path, eval_fold: int = 5) -> list[Clip]:
    """ESC-50-style CSV (filename, fold, target, category, ...); audio under ../audio/."""
    csv_path = Path(csv_path)
    audio_dir = csv_path.parent.parent / "audio"
    clips = []
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            cls = row["category"]
            label, cat, alert, caption = ESC50_MAP.get(
                cls,
                (
                    cls,
                    ESC50_CATEGORY.get(int(row["target"]) // 10, "Daily"),
                    False,
                    cls.replace("_", " "),
                ),
            )
            clips.append(
                Clip(
                    id=f"esc50:{row['filename']}",
                    source="esc50",
                    label=label,
                    category=cat,
                    tags=(cls,),
                    alert=alert,
                    caption=caption,
                    license="see corpus",
                    split="eval" if int(row["fold"]) == eval_fold else "train",
                    path=str(audio_dir / row["filename"]),
                )
            )
    return clips


def librispeech_clips(root: str | Path) -> list[Clip]:
    """LibriSpeech-style folders: */*/*.trans.txt lines 'UTT-ID WORDS...' beside UTT-ID.flac."""
    clips = []
    for trans in sorted(Path(root).rglob("*.trans.txt")):
        for line in trans.read_text().splitlines():
            utt, _, text = line.partition(" ")
            audio = trans.parent / f"{utt}.flac"
            if audio.is_file() and text:
                cid = f"librispeech:{utt}"
                clips.append(
                    Clip(
                        cid,
                        "librispeech",
                        "speech",
                        "Speech",
                        ("speech",),
                        license="see corpus",
                        split=_file_split(cid),
                        path=str(audio),
                        text=text.lower(),
                        extra={"speaker": utt.split("-")[0]},
                    )
                )
    return clips


def manifest_clips(path: str | Path) -> list[Clip]:
    """JSONL manifest: one {"path", "label", "category", ...Clip fields} per line."""
    clips = []
    base = Path(path).parent
    with open(path) as f:
        for n, line in enumerate(f):
            if not line.strip():
                continue
            d = json.loads(line)
            p = Path(d["path"])
            d["path"] = str(p if p.is_absolute() else base / p)
            d.setdefault("id", f"manifest:{Path(path).stem}:{n}")
            d.setdefault("source", "manifest")
            d["tags"] = tuple(d.get("tags", ()))
            if d.get("category") not in CATEGORIES:
                raise ValueError(f"{path}:{n + 1}: category must be one of {CATEGORIES}")
            d.setdefault("split", _file_split(d["id"]))
            clips.append(Clip(**d))
    return clips


CORPUS_LOADERS = {
    "esc50": esc50_clips,
    "manifest": manifest_clips,
    "librispeech": librispeech_clips,
}


def corpus_clips(corpora: Iterable[dict]) -> list[Clip]:
    """Clips of every {"kind", "path"} corpus a recipe names."""
    out = []
    for c in corpora:
        if c.get("kind") not in CORPUS_LOADERS:
            raise ValueError(
                f"corpus kind must be one of {sorted(CORPUS_LOADERS)}, not {c.get('kind')!r}"
            )
        out += CORPUS_LOADERS[c["kind"]](c["path"])
    return out


# --- the index -------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _read_file(path: str) -> np.ndarray:
    if CAT_SEP in path:
        container, index = path.rsplit(CAT_SEP, 1)
        src = io.BytesIO(_cat_wav(container, int(index)))
    else:
        src = path
    with sf.SoundFile(src) as f:
        # Long files (soundtracks) are cut at MAX_FILE_S: events use seconds, not minutes.
        audio = f.read(
            min(f.frames, int(f.samplerate * MAX_FILE_S)), dtype="float32", always_2d=True
        )
        rate = f.samplerate
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return np.ascontiguousarray(mono, dtype=np.float32)


class HeldOutError(ValueError):
    """A clip from a source that train/heldout.py holds out of training."""


def check_not_held_out(clip: Clip) -> None:
    """Raise HeldOutError if the clip is one of train/heldout.py's HELD_OUT sources."""
    name = held_out_source(clip.path, clip.source)
    if name is not None:
        raise HeldOutError(
            f"{clip.id} ({clip.path or clip.source}) is held out of training as the "
            f"{name!r} benchmark set ({HELD_OUT[name].description}; train/heldout.py)"
        )


class Library:
    """The clips one split may use, queryable by tags, label, category and alert. Clips of
    a held-out source (train/heldout.py's HELD_OUT) are left out, with a note, whatever
    index or corpus they came from; `load` refuses them outright."""

    def __init__(self, clips: Iterable[Clip], split: str, notes: Iterable[str] = ()) -> None:
        self.split = split
        self.notes = list(notes)
        clips, held = list(clips), {}
        for c in clips:
            name = held_out_source(c.path, c.source)
            if name is not None:
                held[name] = held.get(name, 0) + 1
        if held:
            clips = [c for c in clips if held_out_source(c.path, c.source) is None]
            self.notes.append(
                "held-out benchmark sources left out: "
                + ", ".join(f"{k} ({n} clips)" for k, n in sorted(held.items()))
            )
        # Eval asks only for classes train can teach: a label whose every file hashed into
        # eval (one OpenTTD level-crossing bell, say) would be a class the model never saw.
        taught = {c.label for c in clips if c.split in ("any", "train")}
        untaught = sorted({c.label for c in clips if c.label not in taught})
        if untaught and split == "eval":
            self.notes.append("eval-only labels left out of eval: " + ", ".join(untaught))
        self.clips = [c for c in clips if c.split in ("any", split) and c.label in taught]

    @classmethod
    def default(cls, split: str, packages: bool = True, extra: Iterable[Clip] = ()) -> Library:
        clips, notes = procedural_clips(), []
        if packages:
            pkg, missing = package_clips()
            clips += pkg
            if missing:
                notes.append(
                    "not installed (falling back to procedural + TTS): "
                    + ", ".join(missing)
                    + "; run train/data/setup_sources.sh"
                )
        return cls(clips + list(extra), split, notes)

    def query(
        self,
        *,
        label: str | None = None,
        tags: Iterable[str] = (),
        category: str | None = None,
        alert: bool | None = None,
    ) -> list[Clip]:
        tags = set(tags)
        return [
            c
            for c in self.clips
            if (label is None or c.label == label)
            and (category is None or c.category == category)
            and (alert is None or c.alert == alert)
            and (not tags or tags & set(c.tags))
        ]

    def labels(self) -> dict[str, Clip]:
        """One representative clip per label (its caption, category and alert flag)."""
        out: dict[str, Clip] = {}
        for c in self.clips:
            out.setdefault(c.label, c)
        return out

    def load(self, clip: Clip, rng: np.random.Generator) -> np.ndarray:
        """The clip's 16 kHz mono audio. (samples,) float32."""
        check_not_held_out(clip)
        if clip.path is None:
            sound = procedural.SOUNDS[clip.label]
            return sound.make(procedural.Params(rng, self.split))
        return _read_file(clip.path).copy()

    def __iter__(self) -> Iterator[Clip]:
        return iter(self.clips)

    def to_jsonl(self, path: str | Path) -> None:
        with open(path, "w") as f:
            for c in self.clips:
                f.write(json.dumps(asdict(c), sort_keys=True) + "\n")
