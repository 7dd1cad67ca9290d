"""The `soundflow serve` WebSocket server: connections, limits, the SIGTERM drain;
`run_server` for the CLI, `BackgroundServer` for tests, benchmarks and embedding."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import signal
import socket
import threading
import time
from collections.abc import Callable

from soundflow.runtime.engine import OrtEngine
from soundflow.runtime.loop import first_line
from soundflow.runtime.serve.config import BATCH_MODES, ServerConfig, is_loopback  # noqa: F401
from soundflow.runtime.serve.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_INVALID,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TOO_SLOW,
    CLOSE_TRY_LATER,
    PROTOCOL_VERSION,
    Hello,
    ProtocolError,
    error_event,
    message_type,
    parse_hello,
)
from soundflow.runtime.serve.scheduler import Scheduler
from soundflow.runtime.serve.session import Session


class Server:
    """The WebSocket server. `await serve()` runs until `shutdown()` (SIGTERM)."""

    def __init__(
        self,
        engine: OrtEngine,
        config: ServerConfig | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.config = config or ServerConfig()
        self.log = log or (lambda _msg: None)
        self.workers = [Scheduler(self, i) for i in range(self.config.workers)]
        self.scheduler = self.workers[0]  # the only one with workers=1
        self.sessions: dict[str, Session] = {}
        self._ids = itertools.count(1)
        self._ws_server = None
        self._draining = False
        self._stopped: asyncio.Event | None = None
        self.port: int | None = None
        self.refused = 0
        self.dropped = 0

    def wake(self, session: Session | None = None) -> None:
        """Wake the worker that drives `session` (None: every worker)."""
        worker = getattr(session, "worker", None)
        for w in [worker] if worker is not None else self.workers:
            w.wakeup.set()

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        from websockets.asyncio.server import serve

        self._stopped = asyncio.Event()
        for w in self.workers:
            w.thread.start()
        self._ws_server = await serve(
            self.handle,
            self.config.host,
            self.config.port,
            max_size=self.config.max_frame_bytes,
            max_queue=16,
            write_limit=self.config.send_buffer_bytes or 32 * 1024,
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
        for w in self.workers:
            w.stopping.set()
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
            await ws.send(error_event(kind, text))
            await ws.close(code, text[:120])
        except Exception:  # noqa: BLE001 - the client is gone already
            pass

    async def handle(self, ws) -> None:
        """Serve one connection (a `websockets` one, or what runtime/serve/ray_app.py hands
        in): hello, audio, events, summary."""
        from websockets.exceptions import ConnectionClosed

        if self.config.send_buffer_bytes:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.send_buffer_bytes)
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
                    "invalid_hello", f"hello: {first_line(e)}", CLOSE_INVALID
                ) from None
        except ProtocolError as e:
            await self._refuse(ws, e.kind, str(e), e.code)
            return
        self.sessions[sid] = session
        session.worker = min(self.workers, key=lambda w: len(w.sessions))  # pinned to it
        session.worker.add(session)
        spec = self.engine.spec
        self.log(
            f"{sid} open: {ws.remote_address} mode {session.mode} {hello.format} "
            f"{hello.sample_rate} Hz x{hello.channels} {'live' if hello.realtime else 'fast'}"
        )
        ready = {
            "type": "ready",
            "t": 0.0,
            "text": "",
            "latency_ms": 0.0,
            "session": sid,
            "protocol": PROTOCOL_VERSION,
            "mode": session.mode,
            "bundle": spec.label,
            "trained": spec.trained,
            "chunk_ms": spec.chunk_ms,
            "sample_rate": spec.sample_rate,
            "modes": list(spec.modes),
        }
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
            if session.worker is not None:
                session.worker.remove(session)
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
                    kind = message_type(msg)
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
