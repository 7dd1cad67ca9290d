"""`soundflow serve --ray` (#31): a local Ray cluster, two replicas of the Ray Serve app,
real WebSocket clients through Ray's proxy, real audio (the shipped demo), a replica killed
mid-stream. Skipped where the `ray` extra is not installed (CI installs no Ray)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf

ray = pytest.importorskip("ray")
pytest.importorskip("websockets")

from soundflow.runtime.kinds import open_engine  # noqa: E402
from soundflow.runtime.listener import Listener  # noqa: E402
from soundflow.runtime.options import RuntimeOptions  # noqa: E402
from soundflow.runtime.serve import (  # noqa: E402
    ServerError,
    ServerStream,
    ray_app,
)
from soundflow.runtime.serve.protocol import CLOSE_INVALID  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "soundflow" / "assets" / "demo.flac"
SECONDS = 12  # the demo's first 12 s: a spoken command ("volume down please") and a stats
PACE_S = 0.1  # between 400 ms chunks: each stream lasts ~3 s, long enough to be cut
KILL_AFTER = 8  # chunks every stream has sent when the replica is killed


def key(events):
    return [(e["type"], e["t"], e["text"]) for e in events if e["type"] != "summary"]


def test_build_refuses_what_it_does_not_know():
    with pytest.raises(ValueError, match="unknown argument"):
        ray_app.build({"replicas": "2", "replica": "3"})
    with pytest.raises(ValueError, match="max_replicas"):
        ray_app.RayOptions(replicas=3, max_replicas=2)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The clip as a file, and local `listen`'s events on it (the reference)."""
    pcm, rate = sf.read(DEMO, dtype="float32", frames=16000 * SECONDS)
    assert rate == 16000
    path = tmp_path_factory.mktemp("ray") / "demo12.wav"
    sf.write(path, pcm, rate)
    events: list[dict] = []
    engine = open_engine(None, RuntimeOptions.from_flags(asynchronous=False, threads=1))
    Listener(
        engine,
        mode="transcribe",
        input=str(path),
        realtime=False,
        on_event=lambda e: events.append(e.to_json()),
    ).run()
    assert any(e["type"] == "response" and e["text"] for e in events), events
    return path, events


@pytest.fixture(scope="module")
def url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = ray_app.application(
        options=RuntimeOptions.from_flags(asynchronous=False, threads=1),
        scale=ray_app.RayOptions(replicas=2, cpus_per_replica=1),
    )
    ray_app.start_local(app, "127.0.0.1", port, num_cpus=2)
    yield f"ws://127.0.0.1:{port}"
    ray_app.stop_local()


class Client:
    """One stream of the clip, paced; records its events or how it was cut."""

    def __init__(self, url: str, path: Path) -> None:
        self.stream = ServerStream(url, "transcribe", realtime=False, format="s16le")
        self.replica = self.stream.ready["replica"]
        self.pcm, _ = sf.read(path, dtype="float32")
        self.events: list[dict] = []
        self.sent_chunks = 0
        self.cut: ServerError | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _send(self) -> None:
        n = self.stream.chunk_samples
        try:
            for i in range(0, len(self.pcm), n):
                self.stream.send(self.pcm[i : i + n])
                self.sent_chunks += 1
                time.sleep(PACE_S)
            self.stream.end()
        except Exception:  # noqa: BLE001 - the cut is seen on the receiving side
            pass

    def _run(self) -> None:
        sender = threading.Thread(target=self._send, daemon=True)
        sender.start()
        try:
            for ev in self.stream.events():
                self.events.append(ev)
        except ServerError as e:
            self.cut = e
        sender.join(10)
        self.stream.close()


@pytest.mark.slow  # the cluster fixture: ~20 s
def test_refusals_keep_their_close_codes_through_the_proxy(url):
    """The single-box server's own handler answers: a binary hello gets its error event
    and close 1007 through Ray's proxy, as it does from `soundflow serve`."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(url, open_timeout=30) as ws:
        ws.send(b"\x00\x00")
        event = json.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert event["type"] == "error" and event["kind"] == "invalid_hello"
    assert ws.close_code == CLOSE_INVALID


@pytest.mark.slow
def test_a_killed_replica_cuts_only_its_own_streams(url, clip):
    """Two replicas; streams on both; one replica killed mid-stream: its clients get close
    1012 and reconnect to a live replica, which gives them every event; the other
    replica's clients get every event of local `listen`, not one chunk lost."""
    path, reference = clip
    clients = [Client(url, path) for _ in range(4)]
    while len({c.replica for c in clients}) < 2 and len(clients) < 8:  # Ray routes by load
        clients.append(Client(url, path))
    replicas = {c.replica for c in clients}
    assert len(replicas) == 2, replicas
    victim = clients[0].replica
    for c in clients:
        c.thread.start()
    deadline = time.monotonic() + 30
    while min(c.sent_chunks for c in clients) < KILL_AFTER and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(c.thread.is_alive() and c.stream.summary is None for c in clients)
    ray.kill(ray.get_actor(victim, namespace="serve"))  # Serve's actors live there
    for c in clients:
        c.thread.join(60)

    chunks = next(e for e in reference if e["type"] == "summary")["chunks"]
    for c in clients:
        if c.replica == victim:
            assert c.cut is not None and c.stream.summary is None, c.events
            assert c.stream.ws.close_code == ray_app.CLOSE_REPLICA_LOST, c.cut
        else:
            assert c.cut is None, c.cut
            assert key(c.events) == key(reference)
            summary = c.stream.summary
            assert summary["chunks"] == chunks
            assert summary["bytes_in"] == 2 * len(c.pcm)  # s16le: every sample

    # The cut clients reconnect: Ray's proxy routes them to a live replica.
    again = [Client(url, path) for c in clients if c.replica == victim]
    assert again and all(c.replica != victim for c in again)
    for c in again:
        c.thread.start()
    for c in again:
        c.thread.join(60)
        assert c.cut is None, c.cut
        assert key(c.events) == key(reference)
