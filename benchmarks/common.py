"""Shared benchmark machinery: synthetic streams, an instrumented loop, resources, output.

`ProbeLoop` is the runtime's own `Loop` with timers wrapped around its calls (the runtime is
not edited): every chunk's encode, decide and response times land in preallocated arrays.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundflow import audio
from soundflow.runtime.loop import Loop
from soundflow.runtime.sources import PacedSource, PulledSource

SEGMENT_S = 30.0  # synthetic streams are toy segments of this length, one seed each


# ---------------------------------------------------------------------- streams
def toy_segment(k: int, seed: int = 20_000) -> tuple[np.ndarray, dict]:
    """Segment k of the endless synthetic stream: tones/chirps in noise and its record.
    Seeds from 20_000 up are never used by the smoke recipe's training."""
    from soundflow.train.smoke import toy_stream  # numpy only, no torch

    return toy_stream(seed + k, SEGMENT_S)


def synthetic_blocks(seconds: float, seed: int = 20_000) -> Iterator[np.ndarray]:
    """`seconds` of synthetic audio, generated one segment at a time (flat memory)."""
    left = int(round(seconds * audio.SAMPLE_RATE))
    k = 0
    while left > 0:
        pcm, _ = toy_segment(k, seed)
        piece = pcm[:left]
        left -= piece.size
        k += 1
        yield piece


def synthetic_events(t0: float, t1: float, seed: int = 20_000) -> list[dict]:
    """Ground-truth events with start in [t0, t1) stream seconds, shifted to stream time."""
    out = []
    for k in range(int(t0 // SEGMENT_S), int(np.ceil(t1 / SEGMENT_S))):
        _, rec = toy_segment(k, seed)
        for ev in rec["events"]:
            ev = {**ev, "start": ev["start"] + k * SEGMENT_S, "end": ev["end"] + k * SEGMENT_S}
            if t0 <= ev["start"] < t1:
                out.append(ev)
    return out


class ClockedPacedSource(PacedSource):
    """A real-time paced source that remembers when it started, so chunk i's audio is
    known to have ended at `t0 + (i + 1) * chunk_s` (the pacing thread's own schedule)."""

    t0: float = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        super().start()


def make_source(seconds: float, realtime: bool, seed: int = 20_000, pcm: np.ndarray | None = None):
    blocks = iter([pcm]) if pcm is not None else synthetic_blocks(seconds, seed)
    if realtime:
        return ClockedPacedSource(blocks, "synthetic", seconds)
    return PulledSource(blocks, "synthetic", seconds)


# ---------------------------------------------------------------------- probe
@dataclass
class ChunkTimes:
    """Per-chunk timings in ms, preallocated (NaN = did not happen)."""

    encode: np.ndarray
    decide: np.ndarray  # the decoder call(s) of the decision alone
    decision: np.ndarray  # audio end (fast mode: loop could take it) -> decision
    first_token: np.ndarray
    done: np.ndarray  # audio end -> response complete
    n: int = 0

    @classmethod
    def empty(cls, capacity: int) -> ChunkTimes:
        def z():
            return np.full(capacity, np.nan)

        return cls(z(), z(), z(), z(), z())


class ProbeLoop(Loop):
    """`Loop` with timers: same threads, same calls, plus per-chunk timings."""

    def __init__(self, engine, source, emit, options, capacity: int) -> None:
        super().__init__(engine, source, emit, options)
        self.times = ChunkTimes.empty(capacity)
        self._ref = 0.0
        self._index = 0
        self._enc_index = 0
        enc, decide, begin = self.encoder.encode, self.decoder.decide, self.decoder.begin_response
        cap = capacity

        def encode(chunk):
            t = time.perf_counter()
            out = enc(chunk)
            if self._enc_index < cap:
                self.times.encode[self._enc_index] = (time.perf_counter() - t) * 1e3
            return out

        def timed_decide(*a, **k):
            t = time.perf_counter()
            out = decide(*a, **k)
            now = time.monotonic()
            if self._index < cap:
                self.times.decide[self._index] = (time.perf_counter() - t) * 1e3
                self.times.decision[self._index] = (now - self._ref) * 1e3
            return out

        def timed_begin(*a, **k):
            out = begin(*a, **k)
            if out is not None and self._index < cap:
                self.times.first_token[self._index] = (time.monotonic() - self._ref) * 1e3
            return out

        self.encoder.encode = encode
        self.decoder.decide = timed_decide
        self.decoder.begin_response = timed_begin

    def _read(self, index):
        self._enc_index = index
        return super()._read(index)

    def respond(self, item) -> None:
        self._index = item.index
        t0 = getattr(self.source, "t0", None)
        # Real time: the chunk's audio ended on the pacing schedule, whenever it was read.
        self._ref = t0 + (item.index + 1) * self.chunk_s if t0 else self._reference(item.ready)
        super().respond(item)
        i = item.index
        if i < len(self.times.done):
            if not np.isnan(self.times.first_token[i]):
                self.times.done[i] = (time.monotonic() - self._ref) * 1e3
            self.times.n = max(self.times.n, i + 1)


def run_probe(engine, source, options, capacity: int, on_event=None, on_start=None):
    """Run `source` through a ProbeLoop; -> (Summary, ChunkTimes, cpu %, wall s).
    `on_start()` runs once everything is allocated, just before the loop starts."""
    loop = ProbeLoop(engine, source, on_event or (lambda e: None), options, capacity)
    if on_start is not None:
        on_start()
    cpu0, w0 = time.process_time(), time.monotonic()
    summary = loop.run()
    wall = time.monotonic() - w0
    cpu = 100.0 * (time.process_time() - cpu0) / wall if wall > 0 else 0.0
    if summary.error:
        raise RuntimeError(f"benchmark run failed: {summary.error}")
    return summary, loop.times, cpu, wall


# ---------------------------------------------------------------------- numbers
def pct(x, q: float) -> float | None:
    x = np.asarray(x, np.float64)
    x = x[~np.isnan(x)]
    return round(float(np.percentile(x, q)), 3) if x.size else None


def rss_mb() -> float:
    """Resident set size of this process now (VmRSS), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 2)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 2)  # peak, Linux KB


def machine() -> dict:
    """What the numbers were measured on, including how busy it was."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime as ort

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "platform": platform.platform(),
    }


def bundle_name(engine) -> dict:
    m = engine.spec.manifest["model"]
    return {"name": m.get("name"), "recipe": m.get("recipe"), "trained": m.get("trained")}


def write_json(path: Path | str | None, result: dict) -> dict:
    result = {
        **result,
        "meta": {
            "command": "soundflow " + " ".join(sys.argv[1:])
            if Path(sys.argv[0]).name == "soundflow"
            else " ".join(sys.argv),
            "machine": machine(),
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **result.get("meta", {}),
        },
    }
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
