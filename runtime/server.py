"""`soundflow serve`: many live streams over WebSocket from one engine, batched.

    client ──hello (JSON)──► server ──ready──► client
    client ──binary PCM frames (any size)──► session: PushSource ring
                                             └─► scheduler thread: every stream with a
                                                 chunk ready -> one batched encoder call
                                                 -> decisions (one call per stream, or one
                                                 batched call) -> responses, per stream
    client ◄──events (the JSON of `listen --jsonl`)── session
    client ──{"type": "end"}──► ... the rest is decided ──summary──► close 1000

One engine (the weights) serves every connection; each connection owns its state (an
encoder state, a `DecoderStream`, a ring of PCM) inside a `runtime.loop.Loop` that is
driven by the scheduler instead of its own threads, so decisions, responses, notices and
the summary are the very code of local `listen`.

Limits: at most `max_streams` sessions (more are refused, close 1013); frames over
`max_frame_bytes` are refused by the WebSocket layer (close 1009); a frame that is not
whole PCM samples gets an error event and close 1003, a text message that is not JSON
1007; a client that does not read its events (more than `max_pending_events` queued) is
dropped with close 4001; a client that vanishes frees its state at once. A live session
("realtime": true) buffers at most `buffer_s` seconds: if the server falls behind, the
oldest audio is dropped and counted as overruns, as for a microphone. A fast session
("realtime": false) is never dropped from: the server stops reading its socket while its
buffer is full (TCP backpressure). The scheduler never waits on a connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import ipaddress
import itertools
import json
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from soundflow.runtime.batching import BatchDecoder, BatchEncoder, can_batch_decide
from soundflow.runtime.engine import OrtEngine
from soundflow.runtime.events import Event, LatencyStats, Notice
from soundflow.runtime.loop import _ORT_ERRORS, Loop, _Chunk, _first_line
from soundflow.runtime.push import PushSource

PROTOCOL_VERSION = 1
FORMATS = {"s16le": "<i2", "f32le": "<f4", "s32le": "<i4"}
BATCH_MODES = ("off", "encoder", "full")

# Close codes (RFC 6455 where one fits, 4000-4999 for the application).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # the server is shutting down (after the summary)
CLOSE_UNSUPPORTED = 1003  # a frame that is not PCM of the announced format, an unknown message
CLOSE_INVALID = 1007  # a hello or message that is not valid JSON / not a valid hello
CLOSE_POLICY = 1008  # a missing or wrong token
CLOSE_TOO_BIG = 1009  # a frame over max_frame_bytes (sent by the WebSocket layer)
CLOSE_INTERNAL = 1011  # the stream's graph failed
CLOSE_TRY_LATER = 1013  # max_streams reached
CLOSE_TOO_SLOW = 4001  # the client does not read its events

HELLO_OPTIONS = {
    "threshold": float,
    "refractory_s": float,
    "max_response_tokens": int,
    "stats_every_s": float,
}


class ProtocolError(ValueError):
    """A client message the server refuses: `kind` and `code` go to the client."""

    def __init__(self, kind: str, text: str, code: int) -> None:
        super().__init__(text)
        self.kind, self.code = kind, code


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    max_streams: int = 64
    token: str | None = None
    batch: str = (
        "off"  # "off" (one call per stream, measured fastest on 2 CPU cores) | "encoder" | "full"
    )
    max_wait_ms: float = 20.0  # wait at most this for other streams' chunks before a batch
    max_batch: int = 64  # streams per batched call
    max_frame_bytes: int = 1 << 18  # 256 KiB: 8 s of 16 kHz s16le mono
    buffer_s: float = 10.0  # PCM a session holds before the oldest is dropped (live)
    max_pending_events: int = 256  # events queued for a client that does not read them
    hello_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.batch not in BATCH_MODES:
            raise ValueError(f"batch {self.batch!r}: use one of {BATCH_MODES}")
        if self.max_streams < 1:
            raise ValueError(f"max_streams {self.max_streams} must be 1 or more")
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"refusing to serve on {self.host} without a token: anyone who can reach it "
                "could use the server; pass --token T (clients send it in their hello), or "
                "bind to 127.0.0.1"
            )


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ----------------------------------------------------------------------------- hello
@dataclass(frozen=True)
class Hello:
    mode: str | None
    sample_rate: int
    format: str
    channels: int
    realtime: bool
    token: str | None
    options: dict[str, Any]


def parse_hello(text: str | bytes) -> Hello:
    """The first message of a connection -> Hello, or ProtocolError saying what is wrong."""
    if isinstance(text, bytes):
        raise ProtocolError(
            "invalid_hello",
            'the first message must be a JSON hello (text), e.g. {"type": "hello", '
            '"sample_rate": 16000, "format": "s16le"}; got a binary frame',
            CLOSE_INVALID,
        )
    try:
        d = json.loads(text)
    except ValueError as e:
        raise ProtocolError(
            "invalid_hello", f"the hello is not valid JSON ({e})", CLOSE_INVALID
        ) from None
    if not isinstance(d, dict) or d.get("type", "hello") != "hello":
        raise ProtocolError(
            "invalid_hello", 'the hello must be a JSON object with "type": "hello"', CLOSE_INVALID
        )

    def bad(field: str, what: str) -> ProtocolError:
        return ProtocolError(
            "invalid_hello", f"hello: {field} {d.get(field)!r}: {what}", CLOSE_INVALID
        )

    rate = d.get("sample_rate", 16000)
    if not isinstance(rate, int) or isinstance(rate, bool) or not 1000 <= rate <= 384_000:
        raise bad("sample_rate", "use an integer rate in Hz, 1000-384000")
    fmt = d.get("format", "s16le")
    if fmt not in FORMATS:
        raise bad("format", f"use one of {sorted(FORMATS)}")
    channels = d.get("channels", 1)
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= 32:
        raise bad("channels", "use 1-32")
    realtime = d.get("realtime", True)
    if not isinstance(realtime, bool):
        raise bad("realtime", "use true (a live stream) or false (a file, as fast as possible)")
    mode = d.get("mode")
    if mode is not None and not isinstance(mode, str):
        raise bad("mode", "use a task name the bundle lists, or leave it out")
    token = d.get("token")
    if token is not None and not isinstance(token, str):
        raise bad("token", "use a string")
    opts = d.get("options") or {}
    if not isinstance(opts, dict):
        raise bad("options", "use an object")
    clean: dict[str, Any] = {}
    for k, v in opts.items():
        kind = HELLO_OPTIONS.get(k)
        if kind is None:
            raise ProtocolError(
                "invalid_hello",
                f"hello: unknown option {k!r} (known: {sorted(HELLO_OPTIONS)})",
                CLOSE_INVALID,
            )
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ProtocolError(
                "invalid_hello", f"hello: option {k} {v!r} must be a number", CLOSE_INVALID
            )
        if kind is int and v != int(v):
            raise ProtocolError(
                "invalid_hello", f"hello: option {k} {v!r} must be an integer", CLOSE_INVALID
            )
        clean[k] = kind(v)
    return Hello(mode, rate, fmt, channels, realtime, token, clean)


def _event_json(ev: Event | dict) -> str:
    return json.dumps(ev if isinstance(ev, dict) else ev.to_json(), ensure_ascii=False)


def _error(kind: str, text: str, t: float = 0.0) -> str:
    return _event_json(Notice(t=t, kind=kind, text=text, type="error"))


# ----------------------------------------------------------------------------- session
class _SessionLoop(Loop):
    """A Loop the scheduler drives: no threads of its own; one chunk at a time."""

    def __init__(self, engine, source, emit, options, live: bool) -> None:
        super().__init__(engine, source, emit, options)
        self.live = live  # a fast session's latency counts as `listen --fast` does
        self.index = 0
        self.t0 = time.monotonic()


class _Decided:
    """The stream as `Loop._respond` sees it when its decision step already ran batched:
    `decide` hands back that decision once; everything else is the stream itself."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.decided = None

    def decide(self, embeds, pcm=None):
        d, self.decided = self.decided, None
        return d if d is not None else self._stream.decide(embeds, pcm)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class Session:
    """One connection's stream: its PushSource, its Loop, its outgoing events."""

    def __init__(self, sid: str, server: Server, hello: Hello) -> None:
        self.id = sid
        self.server = server
        self.hello = hello
        engine = server.engine
        options = server.engine.options.with_(
            mode=hello.mode, realtime=hello.realtime, asynchronous=False, **hello.options
        )
        self.options = options
        self.source = PushSource(
            sample_rate=hello.sample_rate,
            channels=hello.channels,
            dtype=FORMATS[hello.format],
            buffer_s=server.config.buffer_s,
            gap_s=options.gap_s,
            name=f"ws:{sid}",
        )
        self.loop = _SessionLoop(engine, self.source, self._emit, options, hello.realtime)
        self.stream = self.loop.decoder
        self.loop.decoder = _Decided(self.stream)
        self.mode = self.stream.mode
        self.frame_bytes = np.dtype(FORMATS[hello.format]).itemsize * hello.channels
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.aio = asyncio.get_running_loop()
        self.room = asyncio.Event()  # set by the scheduler when it has read from the ring
        self.finished = asyncio.Event()  # the summary is queued
        self.summary: dict | None = None
        self.gone = False  # the client went away: drop the state, send nothing
        self.slow = False
        self.failed: str | None = None  # the stream's graph failed
        self.done = False  # the scheduler has finished it (its summary is on the way)
        self.bytes_in = 0
        self._last_watch = 0.0

    # -------------------------------------------------------------- scheduler side
    def _emit(self, ev: Event) -> None:
        """Called on the scheduler thread by the Loop."""
        if ev.type == "summary":
            ev = dataclasses.replace(
                ev, scheduling=f"server ({self.server.config.batch})",
                extra={**ev.extra, "session": self.id, "bytes_in": self.bytes_in},
            )  # fmt: skip
        text = _event_json(ev)
        self.aio.call_soon_threadsafe(self._deliver, text, ev.type == "summary")

    def ready(self, chunk_samples: int) -> bool:
        ring = self.source.ring
        return ring.available >= chunk_samples or ring.closed

    def watch(self, now: float) -> None:
        """Gap detection for a live session that has nothing ready (the Loop's reader
        would do it while waiting)."""
        if self.hello.realtime and now - self._last_watch >= 0.1:
            self._last_watch = now
            self.source._watch()

    # -------------------------------------------------------------- event-loop side
    def _deliver(self, text: str, final: bool) -> None:
        if self.gone:
            return
        self.queue.put_nowait(text)
        if final:
            self.summary = json.loads(text)
            self.finished.set()
            self.queue.put_nowait(None)
        elif self.queue.qsize() > self.server.config.max_pending_events and not self.slow:
            self.slow = True  # the handler drops the client
            self.finished.set()

    def _room_now(self) -> None:
        self.room.set()

    async def push(self, data: bytes) -> None:
        """A binary frame: whole PCM samples of the announced format, or ProtocolError."""
        if len(data) % self.frame_bytes:
            raise ProtocolError(
                "invalid_pcm",
                f"a frame of {len(data)} bytes is not whole {self.hello.format} samples of "
                f"{self.hello.channels} channel(s) ({self.frame_bytes} bytes each)",
                CLOSE_UNSUPPORTED,
            )
        if not data:
            return
        self.bytes_in += len(data)
        if not self.hello.realtime:  # a fast client waits for room: never drop its audio
            ring = self.source.ring
            need = math.ceil(len(data) // self.frame_bytes * 16000 / self.hello.sample_rate) + 64
            while ring.capacity - ring.available < need and not self.gone:
                self.room.clear()
                self.server.wake()
                try:
                    await asyncio.wait_for(self.room.wait(), 0.5)
                except TimeoutError:
                    pass
        self.source.push(self._samples(data))
        self.server.wake()

    def _samples(self, data: bytes) -> np.ndarray:
        """Bytes of the announced format -> mono float32 (frames of any count)."""
        x = np.frombuffer(data, FORMATS[self.hello.format])
        if x.dtype.kind == "i":
            x = x.astype(np.float32) / np.float32(-float(np.iinfo(x.dtype).min))
        if self.hello.channels > 1:
            x = x.reshape(-1, self.hello.channels).mean(axis=1, dtype=np.float64)
        return x.astype(np.float32, copy=False)

    def end(self) -> None:
        """No more audio from the client: the rest is decided, then the summary."""
        self.source.end()
        self.server.wake()


# ----------------------------------------------------------------------------- scheduler
class Scheduler:
    """The one thread that runs the graphs: each round takes one chunk from every session
    that has one, encodes them in one call (per state shape), decides, responds."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.engine = server.engine
        self.config = server.config
        self.encoder = BatchEncoder(self.engine)
        self.decoder = BatchDecoder(self.engine)
        self.chunk = self.engine.spec.chunk_samples
        self.sessions: list[Session] = []
        self.lock = threading.Lock()
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.rounds = 0
        self.batch_sizes = LatencyStats()
        self.thread = threading.Thread(target=self._run, name="soundflow-serve", daemon=True)

    def add(self, s: Session) -> None:
        with self.lock:
            self.sessions.append(s)
        self.wakeup.set()

    def remove(self, s: Session) -> None:
        with self.lock:
            if s in self.sessions:
                self.sessions.remove(s)

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.wakeup.wait(0.1)
            self.wakeup.clear()
            with self.lock:
                live = [s for s in self.sessions if not (s.gone or s.done)]
            ready = [s for s in live if s.ready(self.chunk)]
            if ready and len(ready) < len(live) and self.config.max_wait_ms > 0:
                # A bounded wait for the others' chunks: one quiet stream delays no one
                # by more than max_wait_ms.
                deadline = time.monotonic() + self.config.max_wait_ms / 1e3
                while len(ready) < len(live) and time.monotonic() < deadline:
                    self.wakeup.wait(max(0.0, deadline - time.monotonic()))
                    self.wakeup.clear()
                    ready = [s for s in live if s.ready(self.chunk)]
            now = time.monotonic()
            for s in live:
                if s not in ready:
                    s.watch(now)
            for i in range(0, len(ready), self.config.max_batch):
                self._round(ready[i : i + self.config.max_batch])
            if ready:
                self.wakeup.set()  # more may be buffered: go round again at once

    def _round(self, sessions: list[Session]) -> None:
        chunks, got = [], []
        for s in sessions:
            try:
                item = self._read(s)
            except Exception as e:  # noqa: BLE001 - this stream fails, the others go on
                self._fail(s, f"internal error while reading: {type(e).__name__}: {_first_line(e)}")
                continue
            if item is None:
                self._finish(s)
            else:
                chunks.append(item)
                got.append(s)
        if not got:
            return
        self.rounds += 1
        self.batch_sizes.add(len(got))
        try:
            if self.config.batch == "off":
                encoded = [s.loop.encoder.engine.encode(c[None], s.loop.encoder.state)
                           for s, (c, _, _) in zip(got, chunks, strict=True)]  # fmt: skip
                self.encoder.calls += len(got)
            else:
                encoded = self.encoder.encode(
                    [c for c, _, _ in chunks], [s.loop.encoder.state for s in got]
                )
        except _ORT_ERRORS as e:
            for s in got:
                self._fail(s, f"encoder failed: {_first_line(e)}")
            return
        items = []
        for s, (pcm, ready, t), (embeds, state) in zip(got, chunks, encoded, strict=True):
            loop = s.loop
            if np.isfinite(embeds).all():
                loop.encoder.state = state
            else:  # the Loop's own recovery: reset the state, encode again, notice
                embeds = loop._encode(pcm)
            keep = pcm if loop.decoder.fallback else None
            items.append(_Chunk(loop.index, t, ready, embeds, keep))
            loop.index += 1
            s.aio.call_soon_threadsafe(s._room_now)
        if self.config.batch == "full":
            rows = [i for i, s in enumerate(got) if can_batch_decide(s.stream)]
            if len(rows) > 1:
                try:
                    decided = self.decoder.decide(
                        [got[i].stream for i in rows], [items[i].embeds for i in rows]
                    )
                except _ORT_ERRORS as e:
                    for i in rows:
                        self._fail(got[i], f"decoder failed: {_first_line(e)}")
                    return
                for i, d in zip(rows, decided, strict=True):
                    got[i].loop.decoder.decided = d
        for s, item in zip(got, items, strict=True):
            if s.failed or s.gone:
                continue
            try:
                s.loop._respond(item)
            except _ORT_ERRORS as e:
                self._fail(s, f"decoder failed: {_first_line(e)}")
            except Exception as e:  # noqa: BLE001
                self._fail(
                    s, f"internal error while responding: {type(e).__name__}: {_first_line(e)}"
                )
            if s.loop.error and not s.failed:  # a failing event handler & co.
                self._fail(s, s.loop.error)

    def _read(self, s: Session) -> tuple[np.ndarray, float, float] | None:
        """The next chunk of a ready session: (pcm, arrival, stream t), or None at its end."""
        loop = s.loop
        chunk = s.source.read_chunk(self.chunk)
        if chunk is None:
            return None
        ready = time.monotonic()
        arrived, skipped = s.source.timing()
        if arrived is not None:
            ready = min(ready, arrived)
        loop._t = (loop.index + 1) * loop.chunk_s + skipped
        pcm = loop._sanitise(np.asarray(chunk, np.float32).reshape(-1), loop.index)
        return pcm, ready, loop._t

    def _fail(self, s: Session, message: str) -> None:
        if s.failed:
            return
        s.failed = message
        s.loop.error = s.loop.error or message
        s.loop._emit(Notice(t=s.loop._t, kind="stream_failed", text=message, type="error"))
        self._finish(s)

    def _finish(self, s: Session) -> None:
        if not s.done:
            s.done = True
            s.loop._finish(s.loop.t0)  # emits the Summary


# ----------------------------------------------------------------------------- server
class Server:
    """The WebSocket server. `await serve()` runs until `shutdown()` (SIGTERM)."""

    def __init__(self, engine: OrtEngine, config: ServerConfig | None = None,
                 log: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.engine = engine
        self.config = config or ServerConfig()
        self.log = log or (lambda _msg: None)
        self.scheduler = Scheduler(self)
        self.sessions: dict[str, Session] = {}
        self._ids = itertools.count(1)
        self._ws_server = None
        self._draining = False
        self._stopped: asyncio.Event | None = None
        self.port: int | None = None
        self.refused = 0
        self.dropped = 0

    def wake(self) -> None:
        self.scheduler.wakeup.set()

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        from websockets.asyncio.server import serve

        self._stopped = asyncio.Event()
        self.scheduler.thread.start()
        self._ws_server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            max_size=self.config.max_frame_bytes,
            max_queue=16,
            compression=None,  # PCM does not deflate; per-message deflate costs CPU
            server_header=None,
        )
        self.port = self._ws_server.sockets[0].getsockname()[1]

    async def serve_forever(self, install_signals: bool = True) -> None:
        if self._ws_server is None:
            await self.start()
        aio = asyncio.get_running_loop()
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                aio.add_signal_handler(sig, lambda: asyncio.ensure_future(self.shutdown()))
        assert self._stopped is not None
        await self._stopped.wait()

    async def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop accepting, drain every open stream (its buffered audio decided, its summary
        sent, close 1001), then stop. A second call while draining stops at once."""
        if self._draining:
            self._close_all()
            return
        self._draining = True
        self.log(f"shutting down: draining {len(self.sessions)} open stream(s)")
        if self._ws_server is not None:
            self._ws_server.close(close_connections=False)
        for s in list(self.sessions.values()):
            s.end()
        # The scheduler decides what each stream buffered; the handlers send the summaries
        # and close.
        deadline = time.monotonic() + timeout_s
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.sessions:
            self.log(f"drain timed out; closing {len(self.sessions)} stream(s)")
        self._close_all()
        if self._ws_server is not None:
            await self._ws_server.wait_closed()
        self.scheduler.stopping.set()
        self.wake()
        assert self._stopped is not None
        self._stopped.set()

    def _close_all(self) -> None:
        if self._ws_server is not None:
            self._ws_server.close(close_connections=True)

    # -------------------------------------------------------------- one connection
    async def _refuse(self, ws, kind: str, text: str, code: int) -> None:
        self.refused += 1
        try:
            await ws.send(_error(kind, text))
            await ws.close(code, text[:120])
        except Exception:  # noqa: BLE001 - the client is gone already
            pass

    async def _handle(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            first = await asyncio.wait_for(ws.recv(), self.config.hello_timeout_s)
        except TimeoutError:
            await self._refuse(
                ws,
                "invalid_hello",
                f"no hello within {self.config.hello_timeout_s:g} s",
                CLOSE_POLICY,
            )
            return
        except ConnectionClosed:
            return
        try:
            hello = parse_hello(first)
            self._authorize(ws, hello)
            if self._draining:
                raise ProtocolError(
                    "shutting_down", "the server is shutting down", CLOSE_GOING_AWAY
                )
            if len(self.sessions) >= self.config.max_streams:
                raise ProtocolError(
                    "server_full",
                    f"the server holds its maximum of {self.config.max_streams} streams "
                    "(--max-streams); try again later or another server",
                    CLOSE_TRY_LATER,
                )
            sid = f"s{next(self._ids)}"
            try:
                session = Session(sid, self, hello)
            except Exception as e:  # BundleError: unknown mode, a cache option out of range
                raise ProtocolError(
                    "invalid_hello", f"hello: {_first_line(e)}", CLOSE_INVALID
                ) from None
        except ProtocolError as e:
            await self._refuse(ws, e.kind, str(e), e.code)
            return
        self.sessions[sid] = session
        self.scheduler.add(session)
        spec = self.engine.spec
        self.log(f"{sid} open: {ws.remote_address} mode {session.mode} {hello.format} "
                 f"{hello.sample_rate} Hz x{hello.channels} {'live' if hello.realtime else 'fast'}")  # fmt: skip
        ready = {
            "type": "ready", "t": 0.0, "text": "", "latency_ms": 0.0,
            "session": sid, "protocol": PROTOCOL_VERSION, "mode": session.mode,
            "bundle": spec.label, "trained": spec.trained, "chunk_ms": spec.chunk_ms,
            "sample_rate": spec.sample_rate, "modes": list(spec.modes),
        }  # fmt: skip
        sender = asyncio.ensure_future(self._send_events(ws, session))
        reason = "closed"
        try:
            await ws.send(json.dumps(ready))
            reason = await self._receive(ws, session)
            if reason == "end":
                await session.finished.wait()
                if session.slow:
                    reason = "slow"
        except ConnectionClosed as e:
            codes = {f.code for f in (e.rcvd, e.sent) if f is not None}
            reason = "too big" if CLOSE_TOO_BIG in codes else "gone"
        except ProtocolError as e:
            reason = e.kind
            session.gone = True
            await self._refuse(ws, e.kind, str(e), e.code)
        finally:
            if reason in ("end",) and not session.gone:
                await sender  # every event, the summary last
                code = CLOSE_GOING_AWAY if self._draining else CLOSE_NORMAL
                if session.failed:
                    code = CLOSE_INTERNAL
                try:
                    await ws.close(
                        code, "summary sent" if code != CLOSE_INTERNAL else "stream failed"
                    )
                except Exception:  # noqa: BLE001
                    pass
            else:
                session.gone = True
                sender.cancel()
                if reason == "slow":
                    self.dropped += 1
                    try:
                        await ws.close(CLOSE_TOO_SLOW, "client does not read its events")
                    except Exception:  # noqa: BLE001
                        pass
                elif reason != "gone":
                    try:
                        await ws.close(
                            CLOSE_NORMAL if reason == "closed" else ws.close_code or 1000
                        )
                    except Exception:  # noqa: BLE001
                        pass
                session.source.end()
            self.scheduler.remove(session)
            self.sessions.pop(sid, None)
            self.log(f"{sid} closed ({reason})")

    def _authorize(self, ws, hello: Hello) -> None:
        want = self.config.token
        if not want:
            return
        given = hello.token
        auth = ws.request.headers.get("Authorization", "") if ws.request is not None else ""
        if given is None and auth.startswith("Bearer "):
            given = auth[len("Bearer ") :]
        if given is None or not hmac.compare_digest(given.encode(), want.encode()):
            raise ProtocolError(
                "unauthorized",
                'missing or wrong token: send it in the hello ({"token": ...}) or as '
                "'Authorization: Bearer TOKEN'",
                CLOSE_POLICY,
            )

    async def _receive(self, ws, session: Session) -> str:
        """Read frames until the client ends the stream ("end"), or a slow client is
        noticed ("slow"); raises ConnectionClosed / ProtocolError."""
        recv = asyncio.ensure_future(ws.recv())
        slow = asyncio.ensure_future(session.finished.wait())
        try:
            while True:
                done, _ = await asyncio.wait({recv, slow}, return_when=asyncio.FIRST_COMPLETED)
                if slow in done:
                    return (
                        "slow" if session.slow else "end"
                    )  # a stream failed: its summary is queued
                msg = recv.result()
                if isinstance(msg, bytes):
                    await session.push(msg)
                else:
                    kind = _message_type(msg)
                    if kind == "end":
                        session.end()
                        return "end"
                recv = asyncio.ensure_future(ws.recv())
        finally:
            for f in (recv, slow):
                if not f.done():
                    f.cancel()

    async def _send_events(self, ws, session: Session) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                text = await session.queue.get()
                if text is None:
                    return
                await ws.send(text)
        except ConnectionClosed:
            session.gone = True


def _message_type(text: str) -> str:
    try:
        d = json.loads(text)
    except ValueError as e:
        raise ProtocolError(
            "invalid_message", f"a text message that is not valid JSON ({e})", CLOSE_INVALID
        ) from None
    kind = d.get("type") if isinstance(d, dict) else None
    if kind != "end":
        raise ProtocolError(
            "invalid_message",
            f"unknown message type {kind!r}: after the hello send binary PCM frames and "
            '{"type": "end"} when the stream is over',
            CLOSE_UNSUPPORTED,
        )
    return kind


def run_server(engine: OrtEngine, config: ServerConfig, log=print, on_ready=None) -> Server:
    """Serve until SIGTERM/SIGINT (then drain). `on_ready(server)` once it listens."""
    server = Server(engine, config, log)

    async def main() -> None:
        await server.start()
        if on_ready is not None:
            on_ready(server)
        await server.serve_forever()

    asyncio.run(main())
    return server


class BackgroundServer:
    """A server on its own event-loop thread (tests, benchmarks, embedding):

    with BackgroundServer(engine, ServerConfig(port=0)) as srv:
        url = srv.url
    """

    def __init__(self, engine: OrtEngine, config: ServerConfig | None = None, log=None) -> None:
        self.server = Server(engine, config or ServerConfig(port=0), log)
        self._aio: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name="soundflow-serve-io", daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _main(self) -> None:
        async def main() -> None:
            self._aio = asyncio.get_running_loop()
            try:
                await self.server.start()
            except BaseException as e:  # noqa: BLE001
                self._error = e
                self._started.set()
                return
            self._started.set()
            await self.server.serve_forever(install_signals=False)

        asyncio.run(main())

    @property
    def url(self) -> str:
        return f"ws://{self.server.config.host}:{self.server.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._aio is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.server.shutdown(), self._aio)
        self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
