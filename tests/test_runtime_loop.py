"""The perceive/respond loop and the Listener on a real smoke bundle: async equals sync,
refractory time, an unbounded stream through a small cache budget, real-time pacing,
stop-and-flush, and errors that end a run without losing its events."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import soundfile as sf

from soundflow.runtime.kinds import open_engine
from soundflow.runtime.listener import Listener
from soundflow.runtime.loop import Loop
from soundflow.runtime.options import RuntimeOptions
from soundflow.runtime.sources import array_source, file_source


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from soundflow.train.smoke import toy_stream

    pcm = np.concatenate([toy_stream(seed)[0] for seed in range(3)])  # 38.4 s
    path = tmp_path_factory.mktemp("toy") / "toy.wav"
    sf.write(path, pcm, 16_000)
    return pcm, path


def _run(bundle, source, **opts):
    options = RuntimeOptions.from_flags(**{"realtime": False, "stats_every_s": 0, **opts})
    engine = open_engine(bundle, options)
    events = []
    loop = Loop(engine, source, events.append, options)
    summary = loop.run()
    return events, summary, loop


def _responses(events):
    return [(e.chunk, e.raw, e.tags) for e in events if e.type == "response"]


def test_async_and_sync_give_the_same_responses(smoke_bundle, toy):
    pcm, _ = toy
    runs = {}
    for asynchronous in (True, False):
        events, summary, _ = _run(
            smoke_bundle,
            array_source(pcm, 16_000),
            mode="alert",
            threshold=0.0,
            refractory_s=3.0,
            asynchronous=asynchronous,
        )
        assert events[-1] is summary and summary.error is None
        runs[asynchronous] = _responses(events)
        assert summary.chunks == len(pcm) // 6400 and summary.responses == len(runs[asynchronous])
    assert runs[True] == runs[False] and runs[True]


def test_refractory_time_withholds_repeated_tags(smoke_bundle, toy):
    pcm, _ = toy
    events, summary, _ = _run(
        smoke_bundle, array_source(pcm, 16_000), mode="alert", threshold=0.0, refractory_s=4.0
    )
    fired = [e for e in events if e.type == "response" and e.alert]
    assert fired and summary.suppressed > 0
    times = [e.t for e in fired if e.alert == fired[0].alert]
    assert all(b - a >= 4.0 for a, b in zip(times, times[1:], strict=False))
    for e in fired:
        assert e.tags["alert"] and e.text and "<" not in e.text  # tags parsed out of the text
        assert e.decision_latency_ms <= e.first_token_latency_ms <= e.latency_ms
        assert e.mode == "alert" and 0.0 <= e.probability <= 1.0


@pytest.mark.parametrize("policy", ["evict", "reprefill"])
def test_unbounded_stream_through_a_small_cache_budget(smoke_bundle, toy, policy):
    """~96 s of audio with a response after every chunk: some 30x the 64-slot budget."""
    pcm, _ = toy
    long = np.concatenate([pcm] * 2 + [pcm[: len(pcm) // 2]])
    events, summary, loop = _run(
        smoke_bundle,
        array_source(long, 16_000),
        mode="assist",
        threshold=0.0,
        refractory_s=0.0,
        cache_budget=64,
        cache_policy=policy,
    )
    cache = loop.decoder.cache
    entries = summary.chunks * 6 + sum(e.tokens + 1 for e in events if e.type == "response")
    assert entries > 25 * 64
    assert summary.error is None and summary.cache_evictions > 20
    assert cache.length <= 64 and cache.nbytes() == loop.decoder.cache.nbytes()
    live = np.sort(cache.positions[cache.valid])
    np.testing.assert_array_equal(live, np.arange(len(live)))  # contiguous after eviction
    # The task prompt is still the sink: the last responses are still assist-mode answers.
    last = [e for e in events if e.type == "response"][-5:]
    assert all(e.tags.get("intent") for e in last)


def test_realtime_file_is_paced_and_latency_is_measured(smoke_bundle, tmp_path, toy):
    pcm, _ = toy
    path = tmp_path / "short.wav"
    sf.write(path, pcm[: 16_000 * 2], 16_000)
    t0 = time.monotonic()
    events, summary, _ = _run(
        smoke_bundle, file_source(path, realtime=True), mode="alert", threshold=0.0, realtime=True
    )
    assert time.monotonic() - t0 >= 1.9  # two seconds of audio take two seconds
    assert summary.chunks == 5 and summary.overruns == 0 and summary.realtime_factor <= 1.1
    assert summary.decision_p50_ms > 0 and summary.decision_p99_ms >= summary.decision_p50_ms


def test_stop_flushes_captured_audio_then_summarises(smoke_bundle, toy):
    pcm, path = toy
    seen = []
    listener = Listener(
        smoke_bundle, input=path, mode="alert", realtime=True, threshold=0.0, on_event=seen.append
    )
    listener.start()
    time.sleep(1.5)
    listener.stop()
    summary = listener.wait(timeout=30)
    assert summary is not None and summary.interrupted and summary.error is None
    captured = listener.loop.source.ring.total_written
    assert summary.chunks == -(-captured // 6400)  # every captured sample was decided
    assert 2 <= summary.chunks <= 10
    assert seen[-1] is summary


def test_listener_events_iterator_and_callbacks_agree(smoke_bundle, toy):
    pcm, _ = toy
    got = []
    with Listener(
        smoke_bundle,
        input=pcm[: 16_000 * 6],
        sample_rate=16_000,
        mode="transcribe",
        realtime=False,
        threshold=0.0,
        stats_every_s=2.0,
    ) as listener:
        listener.on(got.append)
        events = list(listener.events(timeout=60))
    assert events[-1].type == "summary" and events[-1].chunks == 15
    assert [e.type for e in events].count("stats") == 3
    assert [e.t for e in events if e.type == "response"] == sorted(
        e.t for e in events if e.type == "response"
    )
    assert got[-1] is events[-1]


def test_truncated_file_reports_error_after_its_events(smoke_bundle, tmp_path, toy):
    pcm, _ = toy
    path = tmp_path / "cut.wav"
    sf.write(path, pcm[: 16_000 * 4], 16_000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    events, summary, _ = _run(smoke_bundle, file_source(path), mode="alert", threshold=0.0)
    assert summary.error and "truncated" in summary.error
    assert summary.chunks == 5 and any(e.type == "response" for e in events)


def test_callback_errors_end_the_run_with_a_reason(smoke_bundle, toy):
    pcm, _ = toy

    def boom(event):
        if event.type == "response":
            raise ValueError("my handler broke")

    listener = Listener(
        smoke_bundle,
        input=pcm[: 16_000 * 8],
        sample_rate=16_000,
        mode="alert",
        realtime=False,
        threshold=0.0,
        on_event=boom,
    )
    done = threading.Event()
    listener.on(lambda e: done.set() if e.type == "summary" else None)
    summary = listener.run()
    assert done.is_set() and "my handler broke" in summary.error


def test_sync_latency_counts_queueing_from_the_audio_clock(smoke_bundle, tmp_path, toy):
    """A decoder slower than real time (here: the real engine, slowed to 0.6 s per call, as
    on a weaker board) makes chunks queue; latency is counted from when each chunk's audio
    was captured, so the queue shows in p99 and in the stalls, not just the call time."""
    pcm, _ = toy
    path = tmp_path / "three.wav"
    sf.write(path, pcm[: int(16_000 * 2.8)], 16_000)  # 7 chunks
    options = RuntimeOptions.from_flags(
        realtime=True, asynchronous=False, stats_every_s=0, mode="alert", threshold=1.0
    )
    engine = open_engine(smoke_bundle, options)
    real_step = engine.decode_step

    def slow_step(*args, **kwargs):
        out = real_step(*args, **kwargs)
        time.sleep(0.6)
        return out

    engine.decode_step = slow_step
    summary = Loop(engine, file_source(path, realtime=True), lambda e: None, options).run()
    assert summary.chunks == 7
    # Chunk k waits behind k slow decisions: the last one lands ~1.8 s after its audio,
    # where read-time accounting would have reported ~0.6 s for every chunk.
    assert summary.decision_p99_ms > 1200
    assert summary.stalls >= 5
