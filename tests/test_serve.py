"""`soundflow serve` (#15): a real server on an ephemeral localhost port, real WebSocket
clients, real audio (espeak-ng), real ONNX Runtime sessions of the embedded default."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

websockets = pytest.importorskip("websockets")
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from soundflow.runtime.engine import OrtEngine  # noqa: E402
from soundflow.runtime.kinds import open_engine, open_stream  # noqa: E402
from soundflow.runtime.listener import Listener  # noqa: E402
from soundflow.runtime.options import RuntimeOptions  # noqa: E402
from soundflow.runtime.serve import (  # noqa: E402
    BackgroundServer,
    ProtocolError,
    ServerConfig,
    ServerError,
    ServerStream,
    parse_hello,
    stream_source,
)
from soundflow.runtime.sources import file_source  # noqa: E402

SENTENCES = [
    ("en-us", "A closed surface with only one side."),
    ("en-gb+f3", "Please turn on the kitchen lights."),
]


def key(events):
    """What must match local `listen`: every event but the summary, by type, t, text."""
    return [(e["type"], e["t"], e["text"]) for e in events if e["type"] != "summary"]


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> list[Path]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup-dev.sh installs it)")
    out = tmp_path_factory.mktemp("serve_audio")
    paths = []
    for i, (voice, text) in enumerate(SENTENCES):
        p = out / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(p), text], check=True)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def engine() -> OrtEngine:
    return open_engine(None, RuntimeOptions.from_flags(asynchronous=False))


def local_events(engine, path, mode="transcribe") -> list[dict]:
    events: list[dict] = []
    Listener(
        engine,
        mode=mode,
        input=str(path),
        realtime=False,
        on_event=lambda e: events.append(e.to_json()),
    ).run()
    return events


@pytest.fixture(scope="module")
def reference(engine, audio) -> dict[Path, list[dict]]:
    return {p: local_events(engine, p) for p in audio}


def run_streams(url, paths, mode="transcribe", tolerate=False, **kwargs) -> list[list[dict]]:
    """Each path as one stream, all at once: their events. `tolerate`: a stream the server
    closed with an error gives (its events so far, the exception) instead of failing."""
    results: list = [None] * len(paths)
    errors: list = []

    def go(i, p):
        events: list[dict] = []
        try:
            stream_source(
                url, file_source(str(p), realtime=False), events.append, mode=mode, **kwargs
            )
            results[i] = events
        except Exception as e:  # noqa: BLE001
            if tolerate:
                results[i] = (events, e)
            else:
                errors.append(e)

    threads = [threading.Thread(target=go, args=(i, p)) for i, p in enumerate(paths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


# ----------------------------------------------------------------------------- equality
def test_eight_streams_match_local_listen(engine, audio, reference):
    """8 concurrent streams, encoder and decision steps batched: the same events (types,
    t, text) as the local Loop on the same audio, and the calls really were batched."""
    assert any(e["type"] == "response" and e["text"] for e in reference[audio[0]])
    paths = [audio[i % len(audio)] for i in range(8)]
    with BackgroundServer(engine, ServerConfig(port=0, batch="full", max_wait_ms=50)) as srv:
        results = run_streams(srv.url, paths)
        sched = srv.server.scheduler
    for p, events in zip(paths, results, strict=True):
        assert key(events) == key(reference[p])
        s = events[-1]
        assert s["type"] == "summary" and s["error"] is None and s["overruns"] == 0
        assert s["chunks"] == reference[p][-1]["chunks"]
    chunks = sum(e[-1]["chunks"] for e in results)
    if sched.encoder.stackable:
        assert sched.encoder.calls < chunks / 2  # several streams per encoder call
    else:  # the default's int8-MatMul encoder quantizes per call: one call per stream
        assert sched.encoder.calls == chunks
    assert sched.batch_sizes.percentile(50) > 1  # several streams per round
    # Transcribe streams of the default caption by reading their own windows: they have no
    # decision call to stack (the alert-mode batching is checked below).

    captions = (
        open_stream(engine, RuntimeOptions.from_flags(mode="transcribe")).captions is not None
    )
    assert (sched.decoder.calls == 0) == captions


def test_streams_on_two_workers_match_local_listen(engine, audio, reference):
    """Four streams over two worker threads: each worker drives two of them (pinned to the
    least loaded at hello), both did work, and every stream gives local listen's events."""
    paths = [audio[i % len(audio)] for i in range(4)]
    with BackgroundServer(engine, ServerConfig(port=0, workers=2)) as srv:
        results = run_streams(srv.url, paths)
        workers = srv.server.workers
    for p, events in zip(paths, results, strict=True):
        assert key(events) == key(reference[p])
        assert events[-1]["type"] == "summary" and events[-1]["error"] is None
    assert len(workers) == 2 and all(w.rounds > 0 for w in workers)


def test_a_worker_crash_ends_only_its_own_streams(engine, audio, reference):
    """A bug that escapes a worker's round (not a graph error: those are per stream already)
    ends that worker's streams with an error summary; the other worker's stream is untouched
    and the worker itself goes on serving."""
    with BackgroundServer(engine, ServerConfig(port=0, workers=2)) as srv:
        broken = srv.server.workers[0]
        real = broken._round

        def crash(sessions):
            if broken.failures == 0:
                raise RuntimeError("a bug in the round")
            return real(sessions)

        broken._round = crash
        results = run_streams(srv.url, [audio[0], audio[1]], tolerate=True)
        again = run_streams(srv.url, [audio[0], audio[1]])  # both workers serve afterwards

    def failed(r) -> bool:  # closed 1011 ("stream failed"), or a summary with the error
        if isinstance(r, tuple):
            events, e = r
            return getattr(getattr(e, "rcvd", None), "code", None) == 1011
        return bool(r[-1].get("error")) and "internal error in worker 0" in r[-1]["error"]

    assert sum(failed(r) for r in results) == 1, results
    ok = [r for r in results if not isinstance(r, tuple) and not r[-1].get("error")]
    assert len(ok) == 1 and key(ok[0]) in (key(reference[audio[0]]), key(reference[audio[1]]))
    assert broken.failures == 1
    for p, events in zip([audio[0], audio[1]], again, strict=True):
        assert key(events) == key(reference[p])


def test_batched_decisions_equal_one_call_per_stream(smoke_bundle):
    """Both decoder kinds' batched paths against one call per stream, chunk by chunk, in
    alert mode (the default's by the decoder's own step, `alerts="protocol"`); the default's
    transcribe streams (captions by window reading) and its alert streams decided by the
    tagger make no decision call and decide as they do alone."""
    from soundflow.runtime.kinds.decoder import EncoderStream
    from soundflow.runtime.serve.batching import BatchDecoder, BatchEncoder

    cases = (
        (smoke_bundle, "alert", None),
        (None, "alert", "protocol"),
        (None, "alert", None),
        (None, "transcribe", None),
    )
    for bundle, mode, alerts in cases:
        eng = open_engine(bundle, RuntimeOptions.from_flags(asynchronous=False))
        n, streams = eng.spec.chunk_samples, 3
        rng = np.random.default_rng(1)
        audio = [rng.standard_normal(n * 12).astype(np.float32) * 0.05 for _ in range(streams)]
        opts = RuntimeOptions.from_flags(mode=mode, alerts=alerts)
        solo = [(EncoderStream(eng), open_stream(eng, opts)) for _ in range(streams)]
        many = [(EncoderStream(eng), open_stream(eng, opts)) for _ in range(streams)]
        own = many[0][1]
        reads = getattr(own, "captions", None) is not None or getattr(own, "alerts", None)
        if bundle is None and mode == "alert":  # the default has a tagger: None picks it
            assert (own.alerts is None) == (alerts == "protocol")
        be, bd = BatchEncoder(eng), BatchDecoder(eng)
        for c in range(12):
            chunks = [a[c * n : (c + 1) * n] for a in audio]
            ref = [d.decide(e.encode(x)) for (e, d), x in zip(solo, chunks, strict=True)]
            enc = be.encode(chunks, [e.state for e, _ in many])
            for (e, _), (_, state) in zip(many, enc, strict=True):
                e.state = state
            got = bd.decide([d for _, d in many], [x for x, _ in enc])
            for a, b in zip(ref, got, strict=True):
                assert abs(a.p - b.p) < 1e-4 and a.respond == b.respond
        # one call per chunk for all streams (the encoder's, unless it quantizes per call)
        assert be.calls == (12 if be.stackable else 12 * streams)
        assert bd.calls == (0 if reads else 12)
        for (_, a), (_, b) in zip(solo, many, strict=True):
            assert a.cache.length == b.cache.length and a._pending == b._pending


def test_smoke_bundle_served_like_local(smoke_bundle):
    """The decoder-only kind through the server, every batch mode."""
    eng = open_engine(smoke_bundle, RuntimeOptions.from_flags(asynchronous=False))
    pcm = (np.random.default_rng(3).standard_normal(16000 * 4) * 0.1).astype(np.float32)
    ref: list[dict] = []
    Listener(
        eng,
        input=pcm,
        sample_rate=16000,
        realtime=False,
        on_event=lambda e: ref.append(e.to_json()),
    ).run()
    for batch in ("off", "encoder", "full"):
        with BackgroundServer(eng, ServerConfig(port=0, batch=batch)) as srv:
            results = []
            for _ in range(3):
                s = ServerStream(srv.url, realtime=False)
                results.append(s)
            for s in results:
                for i in range(0, len(pcm), 3000):  # frames of any size
                    s.send(pcm[i : i + 3000])
                s.end()
            for s in results:
                events = list(s.events())
                s.close()
                assert key(events) == key(ref), batch
                assert events[-1]["chunks"] == ref[-1]["chunks"]


# ----------------------------------------------------------------------------- faults
def _raw(url: str, hello: dict | str):
    ws = connect(url, compression=None, max_size=None).__enter__()
    ws.send(hello if isinstance(hello, str) else json.dumps(hello))
    return ws


def _until_closed(ws) -> list[dict]:
    events = []
    try:
        while True:
            msg = ws.recv(timeout=30)
            events.append(json.loads(msg))
    except ConnectionClosed:
        pass
    return events


def test_faults_do_not_disturb_other_streams(engine, audio, reference):
    """A garbage frame, an oversized frame, a wrong token, a non-JSON hello and a client
    killed mid-stream, while two good streams run: each fault gets its close code, the
    good streams give local listen's events, and no state is left behind."""
    cfg = ServerConfig(port=0, token="s3cret", max_frame_bytes=64 * 1024, max_streams=8)
    with BackgroundServer(engine, cfg) as srv:
        url = srv.url
        good: list = []
        runner = threading.Thread(
            target=lambda: good.extend(run_streams(url, audio, token="s3cret"))
        )
        runner.start()
        hello = {"type": "hello", "mode": "transcribe", "format": "s16le", "token": "s3cret"}

        ws = _raw(url, {**hello, "token": "wrong"})
        ev = _until_closed(ws)
        assert ev[-1]["type"] == "error" and ev[-1]["kind"] == "unauthorized"
        assert ws.close_code == 1008

        ws = _raw(url, "{not json")
        ev = _until_closed(ws)
        assert ev[-1]["kind"] == "invalid_hello" and ws.close_code == 1007

        ws = _raw(url, {**hello, "options": {"caption_budget_ms": -1}})  # RuntimeOptions' range
        ev = _until_closed(ws)
        assert ev[-1]["kind"] == "invalid_hello" and "caption_budget_ms" in ev[-1]["text"]

        ws = _raw(url, hello)
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        ws.send(b"\x01\x02\x03")  # 3 bytes: not whole s16le samples
        ev = _until_closed(ws)
        assert ev[-1]["kind"] == "invalid_pcm" and ws.close_code == 1003

        ws = _raw(url, hello)
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        try:
            ws.send(b"\x00" * (100 * 1024))  # over max_frame_bytes
        except ConnectionClosed:
            pass
        _until_closed(ws)
        assert ws.close_code == 1009

        ws = _raw(url, hello)
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        ws.send(np.zeros(16000 * 2, "<i2").tobytes())
        ws.socket.close()  # killed mid-stream: no close frame
        runner.join(120)
        assert len(good) == 2
        for p, events in zip(audio, good, strict=True):
            assert key(events) == key(reference[p])
        deadline = time.monotonic() + 10
        while (
            srv.server.sessions or any(w.sessions for w in srv.server.workers)
        ) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not srv.server.sessions and not any(w.sessions for w in srv.server.workers)


def test_a_client_that_does_not_read_is_dropped_with_4001(engine, audio, reference):
    """A live client that sends audio but stops reading its events (a tiny receive
    buffer, its WebSocket reader paused after one frame) is dropped with close 4001 once
    `max_pending_events` are queued behind its socket buffers; two streams running at the
    same time still get local listen's events, and no state is left behind."""
    cfg = ServerConfig(port=0, max_pending_events=4, send_buffer_bytes=4096)
    with BackgroundServer(engine, cfg) as srv:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum
        sock.connect(("127.0.0.1", srv.server.port))
        ws = connect(srv.url, sock=sock, compression=None, max_size=None, max_queue=(1, 0))
        ws.__enter__()  # its reader stops after one unread frame
        options = {"stats_every_s": 0.001}  # a stats event per chunk
        hello = {"type": "hello", "format": "s16le", "realtime": True, "options": options}
        ws.send(json.dumps(hello))
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        frame = (np.random.default_rng(5).standard_normal(6400) * 1000).astype("<i2").tobytes()
        deadline = time.monotonic() + 30

        def pump() -> None:  # 0.4 s of audio every 10 ms; the client never calls recv
            try:
                while not srv.server.dropped and time.monotonic() < deadline:
                    ws.send(frame)
                    time.sleep(0.01)
            except ConnectionClosed:
                pass

        sender = threading.Thread(target=pump)
        sender.start()
        good: list = []
        runner = threading.Thread(target=lambda: good.extend(run_streams(srv.url, audio)))
        runner.start()
        while not srv.server.dropped and time.monotonic() < deadline:
            time.sleep(0.05)
        sender.join(10)
        assert srv.server.dropped == 1, "the stalled client was not dropped in 30 s"
        events = _until_closed(ws)  # what the socket held, then the close frame
        assert events and all(e["type"] != "summary" for e in events)
        assert (ws.close_code, ws.close_reason) == (4001, "client does not read its events")
        runner.join(120)
        assert len(good) == 2
        for p, got in zip(audio, good, strict=True):
            assert key(got) == key(reference[p])
            assert got[-1]["type"] == "summary" and got[-1]["error"] is None
        deadline = time.monotonic() + 10
        while (
            srv.server.sessions or any(w.sessions for w in srv.server.workers)
        ) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not srv.server.sessions and not any(w.sessions for w in srv.server.workers)


def test_max_streams_refused_with_a_clear_message(engine):
    with BackgroundServer(engine, ServerConfig(port=0, max_streams=2)) as srv:
        held = [ServerStream(srv.url) for _ in range(2)]
        with pytest.raises(ServerError, match=r"maximum of 2 streams.*1013"):
            ServerStream(srv.url)
        for s in held:
            s.end()
            assert list(s.events())[-1]["type"] == "summary"
            s.close()
        deadline = time.monotonic() + 10
        while srv.server.sessions and time.monotonic() < deadline:
            time.sleep(0.05)
        ServerStream(srv.url).close()  # room again


def test_hello_validation_and_binding():
    h = parse_hello('{"type": "hello", "sample_rate": 48000, "format": "f32le", "channels": 2}')
    assert (h.sample_rate, h.format, h.channels, h.realtime) == (48000, "f32le", 2, True)
    for bad in (
        "[1]",
        '{"sample_rate": "fast"}',
        '{"format": "mp3"}',
        '{"channels": 0}',
        '{"options": {"beam": 4}}',
        '{"options": {"threshold": "x"}}',
        '{"options": {"alerts": "yamnet"}}',
        '{"options": {"alerts": 1}}',
        b"\x00",
    ):
        with pytest.raises(ProtocolError):
            parse_hello(bad)
    assert parse_hello('{"options": {"alerts": "audioset"}}').options == {"alerts": "audioset"}
    with pytest.raises(ValueError, match="without a token"):
        ServerConfig(host="0.0.0.0")
    ServerConfig(host="0.0.0.0", token="t")


# ----------------------------------------------------------------------------- CLI
def test_sigterm_drains_open_streams_with_summaries(audio):
    """`soundflow serve` as a process: SIGTERM decides what an open stream sent, sends
    its summary, closes with 1001 and exits 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "soundflow.cli", "serve", "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on ws://"), proc.stderr.read()
        url = line.split()[-1]
        pcm, rate = sf.read(str(audio[0]), dtype="float32")
        stream = ServerStream(url, "transcribe", sample_rate=rate, format="s16le")
        stream.send(pcm[: rate * 2])  # 2 s: 5 chunks
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        events = list(stream.events())
        summary = events[-1]
        assert (
            summary["type"] == "summary"
            and summary["chunks"] in (5, 6)
            and summary["error"] is None
        )
        with pytest.raises(ConnectionClosed):
            stream.ws.recv(timeout=10)
        assert stream.ws.close_code == 1001
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_listen_server_prints_like_local_listen(engine, audio, reference):
    from click.testing import CliRunner

    from soundflow.cli.main import cli

    with BackgroundServer(engine, ServerConfig(port=0)) as srv:
        args = ["listen", "--input", str(audio[0]), "--fast", "--jsonl", "--mode", "transcribe"]
        res = CliRunner().invoke(cli, [*args, "--server", srv.url])
        assert res.exit_code == 0, res.output
        events = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
        assert key(events) == key(reference[audio[0]])
        assert events[-1]["type"] == "summary"
        res = CliRunner().invoke(cli, [*args[:-2], "--server", "ws://127.0.0.1:9"])
        assert res.exit_code != 0 and "cannot connect" in res.output
        # how the server decodes is the server's: such a flag is refused, not ignored
        for flag in (["--no-speech-gate"], ["--captions", "protocol"]):
            res = CliRunner().invoke(cli, [*args, *flag, "--server", srv.url])
            assert res.exit_code == 2 and flag[0] in res.output, res.output
            assert "set on the server" in res.output
        res = CliRunner().invoke(cli, ["serve", "--caption-budget-ms", "-1"])
        assert res.exit_code == 2 and "--caption-budget-ms" in res.output
        # a reading's bounds are the stream's own (hello options): one decoder call a chunk
        # reads as it does locally, and not as the default four do
        flag = ["--caption-calls", "1"]
        remote = CliRunner().invoke(cli, [*args, *flag, "--server", srv.url])
        local = CliRunner().invoke(cli, [*args, *flag])
        assert remote.exit_code == 0 and local.exit_code == 0, remote.output + local.output

        def events(res) -> list[dict]:
            return [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]

        assert key(events(remote)) == key(events(local)) != key(reference[audio[0]])
