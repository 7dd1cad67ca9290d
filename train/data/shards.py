"""Shard I/O: build streams into a shard directory (deterministic, resumable, parallel,
partitionable as shard I of N), merge shards built elsewhere, and read them back lazily.

Layout (ARCHITECTURE.md "Contract 1"): DIR/streams.jsonl, DIR/audio/ID.flac, plus
DIR/build.json (what was asked) and DIR/meta/ID.json (per-stream completion markers).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from soundflow.audio import SAMPLE_RATE

from . import espeak, natural
from .library import Library, corpus_clips
from .planner import GrammarPlanner, choose_scenario
from .recipe import Recipe
from .render import StreamRenderer

SPLITS = {"train": 0, "eval": 1}  # mixed into every seed, so the splits never share a stream
FORMAT_VERSION = 1


class ShardError(RuntimeError):
    """A shard directory that is inconsistent or was built with other settings."""


@dataclass(frozen=True)
class StreamSpec:
    index: int
    id: str
    seed: int  # the stream's own seed: its bytes depend on nothing else
    duration: float


def plan_streams(recipe: Recipe, hours: float, seed: int, split: str) -> list[StreamSpec]:
    """Stream lengths until `hours` are covered. Cheap (no audio), so every shard agrees."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)}, not {split!r}")
    rng = np.random.default_rng([seed, SPLITS[split], 0xD0])
    specs, total, i = [], 0.0, 0
    while total < hours * 3600.0:
        duration = round(float(rng.uniform(*recipe.duration_s)), 1)
        stream_seed = int(np.random.SeedSequence([seed, SPLITS[split], i]).generate_state(1)[0])
        specs.append(StreamSpec(i, f"{split}-{i:06d}", stream_seed, duration))
        total += duration
        i += 1
    return specs


_LIBRARIES: dict[tuple[str, bool, str], Library] = {}


def library_for(split: str, recipe: Recipe) -> Library:
    key = (split, recipe.packages, json.dumps(recipe.corpora, sort_keys=True))
    if key not in _LIBRARIES:  # one per process: indexing packages runs dpkg
        extra = corpus_clips(recipe.corpora)
        _LIBRARIES[key] = Library.default(split, packages=recipe.packages, extra=extra)
    return _LIBRARIES[key]


def library_fingerprint(library: Library) -> str:
    ids = "\n".join(sorted(c.id for c in library.clips))
    return hashlib.sha256(ids.encode()).hexdigest()[:16]


def render_spec(spec: StreamSpec, recipe: Recipe, split: str) -> tuple[np.ndarray, dict]:
    """One stream's audio and its Contract-1 record, from its spec alone."""
    rng = np.random.default_rng(spec.seed)
    library = library_for(split, recipe)
    scenario = choose_scenario(rng, recipe)
    plan = GrammarPlanner(split).plan(scenario, spec.duration, rng, recipe, set(library.labels()))
    audio, meta = StreamRenderer(plan, library, recipe, rng).render()
    record = {
        "id": spec.id,
        "audio": f"audio/{spec.id}.flac",
        "sample_rate": SAMPLE_RATE,
        "duration": round(len(audio) / SAMPLE_RATE, 4),
        "split": split,
        "scenario": meta.pop("scenario"),
        "seed": spec.seed,
        **meta,
    }
    return audio, record


def _write_stream(out: Path, spec: StreamSpec, recipe: Recipe, split: str) -> str:
    audio, record = render_spec(spec, recipe, split)
    flac, meta = out / record["audio"], out / "meta" / f"{spec.id}.json"
    tmp = flac.with_name(f".{spec.id}.{os.getpid()}.tmp")
    sf.write(tmp, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, flac)  # rename is atomic: a half-written FLAC never has the final name
    tmp = meta.with_name(f".{spec.id}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, sort_keys=True))
    os.replace(tmp, meta)  # written last: its presence marks the stream complete
    return spec.id


def _work(args: tuple[str, StreamSpec, dict, str]) -> str:
    out, spec, recipe, split = args
    return _write_stream(Path(out), spec, Recipe.from_dict(recipe), split)


def build(
    out: str | Path,
    recipe: Recipe,
    hours: float,
    seed: int,
    split: str = "train",
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Build (or finish building) shard I of N into `out`; returns the build description."""
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= I < N")
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "meta").mkdir(exist_ok=True)
    specs = plan_streams(recipe, hours, seed, split)
    mine = [s for s in specs if s.index % count == index]
    desc = {
        "format": FORMAT_VERSION,
        "recipe": recipe.to_dict(),
        "recipe_fingerprint": recipe.fingerprint(),
        "library_fingerprint": library_fingerprint(library_for(split, recipe)),
        "library_notes": library_for(split, recipe).notes,
        "hours": hours,
        "seed": seed,
        "split": split,
        "shard": [index, count],
        "streams_total": len(specs),
        "streams": [s.id for s in mine],
    }
    desc_path = out / "build.json"
    if desc_path.exists():
        old = json.loads(desc_path.read_text())
        keys = ("recipe_fingerprint", "library_fingerprint", "hours", "seed", "split", "shard")
        diff = [k for k in keys if old.get(k) != desc[k]]
        if diff:
            raise ShardError(
                f"{out} was built with other {', '.join(diff)}; use a new --out directory"
            )
    desc_path.write_text(json.dumps(desc, indent=1, sort_keys=True))
    for stale in [*(out / "audio").glob(".*.tmp"), *(out / "meta").glob(".*.tmp")]:
        stale.unlink()  # left by an interrupted run; their streams are rebuilt below
    todo = [s for s in mine if not (out / "meta" / f"{s.id}.json").exists()]
    done = len(mine) - len(todo)
    if progress:
        progress(done, len(mine))
    # libespeak-ng carries state from one utterance into the next (pitch flutter, echo),
    # so a stream is only reproducible from a pristine engine: each stream is rendered in
    # its own process forked from this one, after the engine is loaded but before it spoke.
    library_for(split, recipe)
    natural.available()  # parse the sentence pools once, not in every forked process
    if espeak.available():
        espeak.load_engine()
    with mp.get_context("fork").Pool(max(1, workers), maxtasksperchild=1) as pool:
        jobs = [(str(out), s, recipe.to_dict(), split) for s in todo]
        for _ in pool.imap_unordered(_work, jobs):
            done += 1
            if progress:
                progress(done, len(mine))
    _write_index(out, [s.id for s in mine])
    return desc


def _write_index(out: Path, ids: list[str], dirs: dict[str, Path] | None = None) -> None:
    tmp = out / ".streams.jsonl.tmp"
    with open(tmp, "w") as f:
        for sid in ids:
            src = (dirs or {}).get(sid, out)
            f.write((src / "meta" / f"{sid}.json").read_text() + "\n")
    os.replace(tmp, out / "streams.jsonl")


def merge(shard_dirs: list[str | Path], out: str | Path) -> dict:
    """Check shards built elsewhere (same recipe, library, seed; all N present once; every
    stream complete and decodable) and index them into one directory (audio hard-linked)."""
    descs = []
    for d in map(Path, shard_dirs):
        if not (d / "build.json").is_file():
            raise ShardError(f"{d} has no build.json: is it a `soundflow data build` output?")
        descs.append((d, json.loads((d / "build.json").read_text())))
    keys = ("recipe_fingerprint", "library_fingerprint", "hours", "seed", "split")
    first = descs[0][1]
    for d, desc in descs[1:]:
        diff = [k for k in keys if desc[k] != first[k]]
        if diff:
            raise ShardError(f"{d} differs from {descs[0][0]} in {', '.join(diff)}")
    count = first["shard"][1]
    got = sorted(desc["shard"][0] for _, desc in descs)
    if any(desc["shard"][1] != count for _, desc in descs) or got != list(range(count)):
        raise ShardError(f"need shards 0..{count - 1} of {count} exactly once, got {got}")
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    owner: dict[str, Path] = {}
    for d, desc in descs:
        for sid in desc["streams"]:
            meta, flac = d / "meta" / f"{sid}.json", d / "audio" / f"{sid}.flac"
            if not meta.is_file() or not flac.is_file():
                raise ShardError(f"{d}: stream {sid} is incomplete; rerun its build to finish it")
            record = json.loads(meta.read_text())
            info = sf.info(str(flac))
            if info.samplerate != SAMPLE_RATE or abs(info.duration - record["duration"]) > 1e-3:
                raise ShardError(
                    f"{flac}: {info.samplerate} Hz, {info.duration:.3f} s, expected {record['duration']} s"
                )
            owner[sid] = d
            target = out / "audio" / flac.name
            if target.resolve() != flac.resolve():
                target.unlink(missing_ok=True)
                try:
                    os.link(flac, target)
                except OSError:  # another filesystem
                    shutil.copy2(flac, target)
    ids = sorted(owner, key=lambda s: int(s.rsplit("-", 1)[1]))
    if len(ids) != first["streams_total"]:
        raise ShardError(f"{len(ids)} streams found, the build plans {first['streams_total']}")
    _write_index(out, ids, owner)
    merged = {**first, "shard": [0, 1], "streams": ids, "merged_from": [str(d) for d, _ in descs]}
    (out / "build.json").write_text(json.dumps(merged, indent=1, sort_keys=True))
    return merged


def iter_streams(directory: str | Path, load_audio: bool = True) -> Iterator[dict]:
    """Yield one stream record at a time (with `samples`, (n,) float32, if load_audio)."""
    directory = Path(directory)
    index = directory / "streams.jsonl"
    if not index.is_file():
        raise ShardError(f"{directory} has no streams.jsonl; build it or merge its shards first")
    with open(index) as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            if load_audio:
                samples, rate = sf.read(directory / record["audio"], dtype="float32")
                if rate != record["sample_rate"]:
                    raise ShardError(
                        f"{record['audio']}: {rate} Hz, index says {record['sample_rate']}"
                    )
                record["samples"] = samples
            yield record
