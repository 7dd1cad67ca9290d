"""One connection's stream on the server: its PushSource ring, the Loop the scheduler
drives, and the queue of events going back to its client."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from typing import TYPE_CHECKING, Protocol

from soundflow.audio import SAMPLE_RATE
from soundflow.runtime.events import Event
from soundflow.runtime.loop import Loop
from soundflow.runtime.push import PushSource
from soundflow.runtime.serve.config import ServerConfig
from soundflow.runtime.serve.protocol import FORMATS, Hello, event_json, pcm_samples

if TYPE_CHECKING:
    from soundflow.runtime.engine import OrtEngine


class Host(Protocol):
    """What a session and its worker need of the server that runs them (runtime/serve/
    server.py's `Server`): named here so that neither imports the server above them."""

    engine: OrtEngine
    config: ServerConfig

    def wake(self, session: Session | None = None) -> None: ...


class _SessionLoop(Loop):
    """A Loop the scheduler drives: no threads of its own; one chunk at a time."""

    def __init__(self, engine, source, emit, options, live: bool) -> None:
        super().__init__(engine, source, emit, options)
        self.live = live  # a fast session's latency counts as `listen --fast` does
        self.live_clock = False  # its notices carry the last chunk's stream time
        self.index = 0
        self.t0 = time.monotonic()


class _Decided:
    """The stream as `Loop.respond` sees it when its decision step already ran batched:
    `decide` hands back that decision once; everything else is the stream itself."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.decided = None

    def decide(self, embeds, pcm=None, ready=None):
        d, self.decided = self.decided, None
        return d if d is not None else self._stream.decide(embeds, pcm, ready)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class Session:
    """One connection's stream: its PushSource, its Loop, its outgoing events."""

    def __init__(self, sid: str, server: Host, hello: Hello) -> None:
        self.id = sid
        self.server = server
        self.hello = hello
        engine = server.engine
        options = server.engine.options.with_flags(
            mode=hello.mode, realtime=hello.realtime, asynchronous=False, **hello.options
        )
        self.options = options
        self.source = PushSource(
            sample_rate=hello.sample_rate,
            channels=hello.channels,
            dtype=FORMATS[hello.format],
            buffer_s=server.config.buffer_s,
            gap_s=options.source.gap_s,
            name=f"ws:{sid}",
        )
        self.loop = _SessionLoop(engine, self.source, self._emit, options, hello.realtime)
        self.stream = self.loop.decoder
        self.loop.decoder = _Decided(self.stream)
        self.mode = self.stream.mode
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.aio = asyncio.get_running_loop()
        self.room = asyncio.Event()  # set by the scheduler when it has read from the ring
        self.finished = asyncio.Event()  # the summary is queued
        self.summary: dict | None = None
        self.gone = False  # the client went away: drop the state, send nothing
        self.slow = False
        self.failed: str | None = None  # the stream's graph failed
        self.done = False  # the scheduler has finished it (its summary is on the way)
        self.worker = None  # the scheduler (worker thread) the server pinned it to
        self.bytes_in = 0
        self._last_watch = 0.0

    # -------------------------------------------------------------- scheduler side
    def _emit(self, ev: Event) -> None:
        """Called on the scheduler thread by the Loop."""
        if ev.type == "summary":
            ev = dataclasses.replace(
                ev,
                scheduling=f"server ({self.server.config.batch})",
                extra={**ev.extra, "session": self.id, "bytes_in": self.bytes_in},
            )
        text = event_json(ev)
        self.aio.call_soon_threadsafe(self._deliver, text, ev.type == "summary")

    def ready(self, chunk_samples: int) -> bool:
        ring = self.source.ring
        return ring.available >= chunk_samples or ring.closed

    def watch(self, now: float) -> None:
        """Gap detection for a live session that has nothing ready (the Loop's reader
        would do it while waiting)."""
        if self.hello.realtime and now - self._last_watch >= 0.1:
            self._last_watch = now
            self.source.watch()

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

    def room_now(self) -> None:
        """The scheduler has read from the ring: a fast client waiting for room goes on."""
        self.room.set()

    async def push(self, data: bytes) -> None:
        """A binary frame: whole PCM samples of the announced format, or ProtocolError."""
        samples = pcm_samples(data, self.hello)
        if not data:
            return
        self.bytes_in += len(data)
        if not self.hello.realtime:  # a fast client waits for room: never drop its audio
            ring = self.source.ring
            need = math.ceil(len(samples) * SAMPLE_RATE / self.hello.sample_rate) + 64
            while ring.capacity - ring.available < need and not self.gone:
                self.room.clear()
                self.server.wake(self)
                try:
                    await asyncio.wait_for(self.room.wait(), 0.5)
                except TimeoutError:
                    pass
        self.source.push(samples)
        self.server.wake(self)

    def end(self) -> None:
        """No more audio from the client: the rest is decided, then the summary."""
        self.source.end()
        self.server.wake(self)
