"""Faults inside one process, on real ONNX Runtime sessions of the embedded default bundle:
NaN/Inf audio, poisoned encoder and decoder state, sources that raise, overruns, pushed
audio from threads, a frozen listener and a producer that goes quiet."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from soundflow.runtime.demo import procedural_demo
from soundflow.runtime.kinds import open_engine
from soundflow.runtime.listener import Listener
from soundflow.runtime.loop import Loop
from soundflow.runtime.options import RuntimeOptions
from soundflow.runtime.push import PushSource
from soundflow.runtime.sources import Source, array_source

SR = 16_000
# Every chunk answers (p >= 0) with one token and no refractory time: a chunk without a
# response is a chunk whose decision went non-finite, i.e. a deaf listener.
EVERY_CHUNK = {"threshold": 0.0, "refractory_s": 0.0, "max_response_tokens": 1}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """The embedded default without its `opens_with` rule, which withholds an alert-mode
    response that does not open with a label, and with the protocol's own captions (window
    agreement emits only words two readings agree on): here every chunk must answer."""
    import json
    import shutil

    from soundflow.runtime.bundle import load_spec

    bundle = tmp_path_factory.mktemp("every-chunk") / "bundle"
    shutil.copytree(load_spec(None).path, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["decision"].pop("opens_with", None)
    manifest["decision"].pop("captions", None)
    # its readings, those confirming assist intents and the assist grammar's use the captions'
    # prompt
    manifest.get("tagger", {}).pop("verify", None)
    manifest["decision"].pop("verify", None)
    manifest["decision"].pop("assist", None)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return open_engine(bundle, RuntimeOptions())


def _pcm(seconds: float) -> np.ndarray:
    """The demo scene (16 s: quiet noise, tones and chirps), cut or repeated."""
    scene = procedural_demo()
    return np.resize(scene, int(seconds * SR)).astype(np.float32)


def _run(engine, source, **opts):
    options = RuntimeOptions.from_flags(**{"realtime": False, "stats_every_s": 0, **opts})
    events: list = []
    loop = Loop(engine, source, events.append, options)
    return loop.run(), events, loop


def _of(events, type_):
    return [e for e in events if e.type == type_]


class Scripted(Source):
    """A custom source: chunks of `pcm`, with `hook(k, chunk)` run before chunk k."""

    name = "scripted"

    def __init__(self, pcm: np.ndarray, hook=None) -> None:
        self.pcm, self.hook, self.k = pcm, hook, 0

    def read_chunk(self, n: int):
        if (self.k + 1) * n > len(self.pcm):
            return None
        chunk = self.pcm[self.k * n : (self.k + 1) * n].copy()
        if self.hook is not None:
            chunk = self.hook(self.k, chunk)
        self.k += 1
        return chunk


def test_nan_and_inf_audio_are_zeroed_counted_and_the_model_keeps_listening(engine):
    pcm = _pcm(16.0)
    bad = pcm.copy()
    bad[5 * SR] = np.nan  # one sample at 5 s
    bad[10 * SR : 10 * SR + SR // 10] = np.nan  # 0.1 s at 10 s
    bad[12 * SR] = np.inf
    clean = np.where(np.isfinite(bad), bad, 0).astype(np.float32)
    base, base_events, _ = _run(engine, array_source(clean, SR), **EVERY_CHUNK)
    summary, events, _ = _run(engine, array_source(bad, SR), **EVERY_CHUNK)
    assert summary.error is None and summary.chunks == 40
    assert summary.nonfinite_samples == 1 + SR // 10 + 1
    assert summary.responses == summary.chunks  # never deaf
    got = [(e.chunk, round(e.probability, 5)) for e in _of(events, "response")]
    assert got == [(e.chunk, round(e.probability, 5)) for e in _of(base_events, "response")]
    assert summary.state_resets == 0
    # A custom source's NaN/Inf is caught at the loop's boundary, and said once.
    hook = lambda k, c: np.where(np.arange(c.size) % 97 == 0, np.inf, c).astype(np.float32)  # noqa: E731
    summary, events, _ = _run(engine, Scripted(pcm[: 8 * SR], hook), **EVERY_CHUNK)
    assert summary.nonfinite_samples == 20 * len(range(0, 6400, 97))
    assert summary.responses == summary.chunks == 20
    notices = [e for e in events if e.type == "warning" and e.kind == "nonfinite_audio"]
    assert len(notices) == 1 and "NaN/Inf" in notices[0].text


def _poison(obj) -> int:
    """Fill every float array reachable from `obj` (attributes, lists, dicts) with NaN."""
    n = 0
    items = obj.values() if isinstance(obj, dict) else vars(obj).values()
    for v in items:
        for a in v if isinstance(v, list) else [v]:
            if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size:
                a[...] = np.nan
                n += 1
    return n


def test_poisoned_encoder_state_is_reset_and_reported(engine):
    pcm = _pcm(8.0)
    loop_ref = []

    def hook(k, chunk):
        if k == 6:
            assert _poison(loop_ref[0].encoder.state)
        return chunk

    options = RuntimeOptions.from_flags(
        realtime=False, stats_every_s=0, asynchronous=False, **EVERY_CHUNK
    )
    events: list = []
    loop = Loop(engine, Scripted(pcm, hook), events.append, options)
    loop_ref.append(loop)
    summary = loop.run()
    assert summary.error is None and summary.state_resets == 1
    resets = [e for e in events if getattr(e, "kind", "") == "state_reset"]
    assert len(resets) == 1 and "encoder" in resets[0].text and resets[0].type == "warning"
    assert summary.responses == summary.chunks == 20  # the poisoned chunk is heard too


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the NaN logits themselves
def test_poisoned_decoder_cache_is_reset_and_reported(engine):
    pcm = _pcm(8.0)
    loop_ref = []

    def hook(k, chunk):
        if k == 6:
            assert _poison(loop_ref[0].decoder.cache)
        return chunk

    options = RuntimeOptions.from_flags(
        realtime=False, stats_every_s=0, asynchronous=False, **EVERY_CHUNK
    )
    events: list = []
    loop = Loop(engine, Scripted(pcm, hook), events.append, options)
    loop_ref.append(loop)
    summary = loop.run()
    assert summary.error is None and summary.state_resets == 1
    resets = [e for e in events if getattr(e, "kind", "") == "state_reset"]
    assert len(resets) == 1 and "decoder" in resets[0].text
    # One decision was lost to the poison; every later chunk is decided normally again.
    assert summary.responses == summary.chunks - 1 == 19
    assert [e.chunk for e in _of(events, "response")][6:] == list(range(7, 20))


class Unplugged(Source):
    """A USB device that disappears after three chunks."""

    name = "usb-mic"

    def __init__(self) -> None:
        self.k = 0

    def read_chunk(self, n: int):
        self.k += 1
        if self.k > 3:
            raise OSError(19, "No such device")
        return np.zeros(n, np.float32)


@pytest.mark.parametrize("asynchronous", [True, False])
def test_a_source_raising_oserror_ends_the_run_with_an_error(engine, asynchronous):
    seen = []
    listener = Listener(
        engine,
        input=Unplugged(),
        asynchronous=asynchronous,
        stats_every_s=0,
        on_event=seen.append,
    )
    summary = listener.run()  # a Summary in sync mode too, never None
    assert summary is not None and seen[-1] is summary
    assert summary.chunks == 3
    assert "OSError" in summary.error and "No such device" in summary.error
    assert "usb-mic" in summary.error and "\n" not in summary.error


def test_a_source_failing_to_start_or_returning_junk_is_an_error(engine):
    class NoStart(Source):
        name = "nostart"

        def start(self):
            raise PermissionError("device busy")

    summary, events, _ = _run(engine, NoStart())
    assert "PermissionError" in summary.error and events[-1] is summary

    class Short(Source):
        name = "short"

        def read_chunk(self, n):
            return np.zeros(n // 2, np.float32)

    summary, _, _ = _run(engine, Short())
    assert "exact chunks" in summary.error and summary.chunks == 0


def test_stream_time_after_an_overrun_includes_the_dropped_audio(engine):
    source = PushSource(buffer_s=1.0)
    source.push(_pcm(3.0))  # 3 s into a 1 s buffer before anyone reads
    source.end()
    summary, events, _ = _run(engine, source, **EVERY_CHUNK)
    assert summary.overruns == 1 and summary.overrun_samples == 2 * SR
    assert [round(e.t, 3) for e in _of(events, "response")] == [2.4, 2.8, 3.2]
    assert summary.t == pytest.approx(3.2)


def test_push_from_threads_at_any_rate(engine):
    source = PushSource(sample_rate=48_000, channels=2, dtype="int16", gap_s=5.0)
    seen = []
    listener = Listener(engine, input=source, stats_every_s=0, threshold=1.0, on_event=seen.append)
    listener.start()
    t = np.arange(48_000 * 2) / 48_000
    stereo = (np.stack([np.sin(2 * np.pi * 440 * t)] * 2, 1) * 12_000).astype(np.int16)

    def producer(block):
        for i in range(0, len(block), 480):  # 10 ms blocks, as bytes, twice real time
            assert source.push(block[i : i + 480].tobytes()) == len(block[i : i + 480])
            time.sleep(0.005)

    th = threading.Thread(target=producer, args=(stereo,))
    th.start()
    th.join()
    source.push(np.zeros(8_000, np.float32), sample_rate=8_000)  # another rate, a float array
    # Four threads at once: the lock keeps the single-writer ring whole.
    threads = [
        threading.Thread(
            target=lambda: [source.push(np.zeros(160, np.float32), 16_000) for _ in range(50)]
        )
        for _ in range(4)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    source.end()
    assert source.push(np.zeros(10, np.float32)) == 0  # after end: ignored, no error
    summary = listener.wait(timeout=60)
    assert summary.error is None and summary.overruns == 0
    assert abs(summary.chunks - (2 * SR + SR + 4 * 50 * 160) / 6400) <= 1
    assert summary.decision_p50_ms < 400  # counted from the push, not from stream start


def test_a_frozen_listener_counts_stalls_from_arrival(engine):
    source = PushSource(gap_s=5.0)
    froze = threading.Event()

    def on_event(e):
        if e.type == "stats" and not froze.is_set():
            froze.set()
            time.sleep(2.0)  # the app's handler blocks the respond thread

    listener = Listener(engine, input=source, threshold=1.0, stats_every_s=0.4, on_event=on_event)
    listener.start()
    pcm = _pcm(4.0)
    for i in range(0, len(pcm), 1600):  # 100 ms blocks in real time
        source.push(pcm[i : i + 1600])
        time.sleep(0.1)
    source.end()
    summary = listener.wait(timeout=60)
    assert froze.is_set() and summary.error is None and summary.overruns == 0
    assert summary.stalls >= 3, summary  # ~5 chunks waited behind the 2 s freeze
    assert summary.decision_p99_ms > 1000


def test_a_producer_going_quiet_is_a_reported_gap(engine):
    source = PushSource(gap_s=0.5)
    events: list = []
    listener = Listener(
        engine, input=source, threshold=1.0, stats_every_s=0, on_event=events.append
    )
    listener.start()
    pcm = _pcm(2.0)
    source.push(pcm[:SR])
    time.sleep(1.6)
    source.push(pcm[SR:])
    source.end()
    summary = listener.wait(timeout=60)
    kinds = [(e.type, e.kind) for e in events if hasattr(e, "kind")]
    assert ("warning", "input_gap") in kinds and ("info", "input_resumed") in kinds
    assert summary.input_gaps == 1 and 1.3 < summary.input_gap_s < 2.2
    assert summary.stalls >= 3  # the chunk lengths the listener heard nothing
    assert summary.error is None and summary.chunks == 5
