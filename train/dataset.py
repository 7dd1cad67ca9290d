"""Training samples: fixed-length segments of streams with per-chunk responses.

Samples are drawn by global index (seed, index), so any number of data-parallel ranks
sees exactly the samples one process with the summed batch would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from soundflow import audio, protocol
from soundflow.train.smoke import toy_stream


@dataclass
class Segment:
    pcm: np.ndarray  # (n_chunks * chunk_samples,) float32
    task: str
    responses: list[str | None]  # per chunk: response text or None (silence)
    transcript: str  # words wholly inside the segment, for the CTC loss


class StreamSource(Protocol):
    def __len__(self) -> int: ...
    def get(self, i: int) -> tuple[np.ndarray, dict]: ...


@runtime_checkable
class TextSource(Protocol):
    """A source that lists every target text at once (the tokenizer trains on them)."""

    def texts(self) -> list[str]: ...


class ToySource:
    """Generated on the fly (the smoke recipe)."""

    def __init__(self, n_streams: int, seed: int = 0, seconds: float = 12.8):
        self.n, self.seed, self.seconds = n_streams, seed, seconds

    def __len__(self) -> int:
        return self.n

    def get(self, i: int):
        return toy_stream(self.seed * 1_000_003 + i, self.seconds)


class ShardSource:
    """Streams from shard directories of Contract 1 (streams.jsonl + audio/*.flac)."""

    def __init__(self, dirs: list[Path | str], cache_streams: int = 64):
        self.records: list[tuple[Path, dict]] = []
        for d in map(Path, dirs):
            files = (
                [d / "streams.jsonl"]
                if (d / "streams.jsonl").is_file()
                else sorted(d.rglob("streams.jsonl"))
            )
            if not files:
                raise FileNotFoundError(
                    f"no streams.jsonl under {d}; build data with `soundflow data build`"
                )
            for f in files:
                with open(f) as fh:
                    self.records += [(f.parent, json.loads(line)) for line in fh if line.strip()]
        self._cache: dict[int, np.ndarray] = {}
        self._cache_size = cache_streams

    def __len__(self) -> int:
        return len(self.records)

    def texts(self) -> list[str]:
        return [t["text"] for _, r in self.records for ts in r["targets"].values() for t in ts]

    def get(self, i: int):
        import soundfile as sf

        root, rec = self.records[i]
        if i not in self._cache:
            pcm, sr = sf.read(root / rec["audio"], dtype="float32")
            if sr != audio.SAMPLE_RATE or pcm.ndim != 1:
                raise ValueError(
                    f"{root / rec['audio']}: expected 16 kHz mono, got {sr} Hz {pcm.shape}"
                )
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[i] = pcm
        return self._cache[i], rec


def chunk_targets(record: dict, task: str, chunk_ms: int, n_chunks: int) -> dict[int, str]:
    """Targets of one task by chunk index; several due in one chunk join into one response."""
    due: dict[int, list[str]] = {}
    for target in record["targets"].get(task, []):
        c = min(protocol.chunk_index(target["t"], chunk_ms), n_chunks - 1)
        due.setdefault(c, []).append(target["text"])
    return {c: _join(texts) for c, texts in due.items()}


def _join(texts: list[str]) -> str:
    if len(texts) == 1:
        return texts[0]
    tags = {}
    plain = []
    for t in texts:
        tg, p = protocol.parse_tags(t)
        tags.update(tg)
        plain.append(p)
    head = " ".join(f"<{k}:{v}>" for k, v in tags.items())
    return " ".join(x for x in [head, *plain] if x)


def segment(
    pcm: np.ndarray, record: dict, task: str, start: int, n_chunks: int, chunk_ms: int
) -> Segment:
    s = audio.chunk_samples(chunk_ms)
    total = len(pcm) // s
    due = chunk_targets(record, task, chunk_ms, total)
    piece = pcm[start * s : (start + n_chunks) * s]
    if len(piece) < n_chunks * s:
        piece = np.pad(piece, (0, n_chunks * s - len(piece)))
    t0, t1 = start * chunk_ms / 1000, (start + n_chunks) * chunk_ms / 1000
    words = [w["word"] for w in record.get("words", []) if w["start"] >= t0 and w["end"] <= t1]
    return Segment(
        piece.astype(np.float32),
        task,
        [due.get(start + c) for c in range(n_chunks)],
        " ".join(words),
    )


def draw(
    source: StreamSource,
    seed: int,
    index: int,
    tasks: tuple[str, ...],
    n_chunks: int,
    chunk_ms: int,
    focus_prob: float = 0.5,
    task_p: np.ndarray | None = None,
) -> Segment:
    """Sample number `index` of the run: the same for any rank layout."""
    rng = np.random.default_rng([seed, index])
    pcm, record = source.get(int(rng.integers(len(source))))
    task = tasks[int(rng.choice(len(tasks), p=task_p))]
    total = len(pcm) // audio.chunk_samples(chunk_ms)
    last_start = max(0, total - n_chunks)
    due = sorted(chunk_targets(record, task, chunk_ms, total))
    if due and rng.random() < focus_prob:  # rare responses: centre some samples on one
        c = due[int(rng.integers(len(due)))]
        start = int(np.clip(c - rng.integers(n_chunks), 0, last_start))
    else:
        start = int(rng.integers(last_start + 1))
    return segment(pcm, record, task, start, n_chunks, chunk_ms)
