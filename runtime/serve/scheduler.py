"""A worker thread that runs the graphs for its sessions: each round a chunk from every
stream that has one, encoded (and optionally decided) in batched calls, then responses. The
server runs `ServerConfig.workers` of them over one engine (ONNX Runtime sessions take calls
from several threads at once and release the GIL inside them), each session pinned to one."""

from __future__ import annotations

import threading
import time

import numpy as np

from soundflow.runtime.events import LatencyStats, Notice
from soundflow.runtime.loop import ORT_ERRORS, first_line
from soundflow.runtime.serve.batching import BatchDecoder, BatchEncoder, can_batch_decide
from soundflow.runtime.serve.session import Host, Session

# A worker's load, measured over windows of ADAPT_WINDOW_S: the share of the time it spent in
# rounds. Above ADAPT_UP it reads its live caption streams every second chunk; below ADAPT_DOWN
# (hop 2 halves the load, so hop 1 would fit again under ~0.8) it reads every chunk again.
ADAPT_WINDOW_S = 2.0
ADAPT_UP, ADAPT_DOWN = 0.85, 0.4


class Scheduler:
    """One worker thread: each round takes one chunk from every session of its own that has
    one, encodes them in one call (per state shape), decides, responds."""

    def __init__(self, server: Host, index: int = 0) -> None:
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
        self.index = index
        self.failures = 0  # rounds that raised past every per-session guard
        self.skipped = 0  # chunks not encoded: their stream's reader hopped over them
        self.added = 0  # sessions pinned here so far (their reading offsets, `stagger`)
        self.hop = 1  # the hop its adaptable caption streams read at (ServerConfig.adaptive_hop)
        self.hop_changes = 0
        self.busy = 0.0  # the share of the last window spent in rounds
        self._busy_s, self._window_t0 = 0.0, time.monotonic()
        self.thread = threading.Thread(
            target=self._run, name=f"soundflow-serve-{index}", daemon=True
        )

    def add(self, s: Session) -> None:
        stagger = getattr(s.stream, "stagger", None)
        if stagger is not None and s.hello.realtime:  # fast clients: listen's exact schedule
            stagger(self.added)
            if self.hop > 1 and self._adaptable(s):
                s.stream.set_hop(self.hop, self.added)
        self.added += 1
        with self.lock:
            self.sessions.append(s)
        self.wakeup.set()

    def remove(self, s: Session) -> None:
        with self.lock:
            if s in self.sessions:
                self.sessions.remove(s)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._turn()
            except Exception as e:  # noqa: BLE001 - a worker's bug ends its sessions, not it
                self.failures += 1
                with self.lock:
                    mine = [s for s in self.sessions if not (s.gone or s.done)]
                for s in mine:
                    self._fail(s, f"internal error in worker {self.index}: {first_line(e)}")

    def _turn(self) -> None:
        """One round over this worker's sessions (or a wait for audio)."""
        self.wakeup.wait(0.1)
        self.wakeup.clear()
        with self.lock:
            live = [s for s in self.sessions if not (s.gone or s.done)]
        ready = [s for s in live if s.ready(self.chunk)]
        batching = self.config.batch != "off"
        if batching and ready and len(ready) < len(live) and self.config.max_wait_ms > 0:
            # A bounded wait for the others' chunks, to batch them: one quiet stream delays
            # no one by more than max_wait_ms. Unbatched, a stream's chunk waits for no one.
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
        end = time.monotonic()
        self._busy_s += end - now
        if end - self._window_t0 >= ADAPT_WINDOW_S:
            self._adapt(end, live)
        if ready:
            self.wakeup.set()  # more may be buffered: go round again at once

    def _adaptable(self, s: Session) -> bool:
        """A live caption stream whose hello left its hop to the server."""
        return (
            s.hello.realtime
            and s.options.captions.hop is None
            and getattr(s.stream, "captions", None) is not None
            and hasattr(s.stream, "set_hop")
        )

    def _adapt(self, now: float, live: list[Session]) -> None:
        """The last window's load -> this worker's hop (ServerConfig.adaptive_hop); each
        stream whose hop changes is told (an info notice, `caption_hop`)."""
        self.busy = self._busy_s / (now - self._window_t0)
        self._busy_s, self._window_t0 = 0.0, now
        if not self.config.adaptive_hop:
            return
        hop = 2 if self.busy > ADAPT_UP else 1 if self.busy < ADAPT_DOWN else self.hop
        if hop == self.hop:
            return
        self.hop = hop
        self.hop_changes += 1
        why = (
            f"server busy ({self.busy:.0%} of a worker): captions read every {hop} chunks"
            if hop > 1
            else f"server load {self.busy:.0%}: captions read every chunk again"
        )
        for k, s in enumerate(x for x in live if self._adaptable(x)):
            s.stream.set_hop(hop, k)
            s.loop.emit(Notice(t=s.loop.t, kind="caption_hop", text=why, type="info"))

    def _round(self, sessions: list[Session]) -> None:
        chunks, got = [], []
        for s in sessions:
            try:
                item = self._read(s)
            except Exception as e:  # noqa: BLE001 - this stream fails, the others go on
                self._fail(s, f"internal error while reading: {type(e).__name__}: {first_line(e)}")
                continue
            if item is None:
                try:  # what the decoder still holds back (captions awaiting agreement)
                    s.loop.finish_response()
                except Exception as e:  # noqa: BLE001 - this stream fails, the others go on
                    self._fail(s, f"internal error at the end: {type(e).__name__}: {first_line(e)}")
                    continue
                self._finish(s)
            else:
                chunks.append(item)
                got.append(s)
        if not got:
            return
        self.rounds += 1
        self.batch_sizes.add(len(got))
        # streams that decide from the PCM alone (AudioSet alerts) skip the encoder, and so
        # do caption streams behind real time at the chunks their reader hops over
        need = []
        for i, s in enumerate(got):
            if s.loop.wants_embeds(chunks[i][1]):
                need.append(i)
            elif s.loop.needs_embeds:
                s.loop.encoder.skip(chunks[i][0])
                self.skipped += 1
        try:
            if self.config.batch == "off":
                done = [
                    s.loop.encoder.engine.encode(chunks[i][0][None], s.loop.encoder.state)
                    for i, s in ((i, got[i]) for i in need)
                ]
                self.encoder.calls += len(need)
            else:
                done = self.encoder.encode(
                    [chunks[i][0] for i in need], [got[i].loop.encoder.state for i in need]
                ) if need else []  # fmt: skip
        except ORT_ERRORS as e:
            for s in got:
                self._fail(s, f"encoder failed: {first_line(e)}")
            return
        encoded: list = [(None, None)] * len(got)
        for i, result in zip(need, done, strict=True):
            encoded[i] = result
        items = []
        for s, (pcm, ready, t), (embeds, state) in zip(got, chunks, encoded, strict=True):
            loop = s.loop
            if embeds is None:
                pass  # not read (the loop's wants_embeds)
            elif np.isfinite(embeds).all():
                loop.encoder.state = state
            else:  # the Loop's own recovery: reset the state, encode again, notice
                embeds = loop.encode(pcm)
            items.append(loop.make_chunk(loop.index, t, ready, embeds, pcm))
            loop.index += 1
            s.aio.call_soon_threadsafe(s.room_now)
        if self.config.batch == "full":
            rows = [i for i, s in enumerate(got) if can_batch_decide(s.stream)]
            if len(rows) > 1:
                try:
                    decided = self.decoder.decide(
                        [got[i].stream for i in rows], [items[i].embeds for i in rows]
                    )
                except ORT_ERRORS as e:
                    for i in rows:
                        self._fail(got[i], f"decoder failed: {first_line(e)}")
                    return
                for i, d in zip(rows, decided, strict=True):
                    got[i].loop.decoder.decided = d
        for s, item in zip(got, items, strict=True):
            if s.failed or s.gone:
                continue
            try:
                s.loop.respond(item)
            except ORT_ERRORS as e:
                self._fail(s, f"decoder failed: {first_line(e)}")
            except Exception as e:  # noqa: BLE001
                self._fail(
                    s, f"internal error while responding: {type(e).__name__}: {first_line(e)}"
                )
            if s.loop.error and not s.failed:  # a failing event handler & co.
                self._fail(s, s.loop.error)

    def _read(self, s: Session) -> tuple[np.ndarray, float, float] | None:
        """The next chunk of a ready session: (pcm, arrival, stream t), or None at its end."""
        chunk = s.source.read_chunk(self.chunk)
        if chunk is None:
            return None
        return s.loop.accept(chunk, s.loop.index)

    def _fail(self, s: Session, message: str) -> None:
        if s.failed:
            return
        s.failed = message
        s.loop.error = s.loop.error or message
        s.loop.emit(Notice(t=s.loop.t, kind="stream_failed", text=message, type="error"))
        self._finish(s)

    def _finish(self, s: Session) -> None:
        if not s.done:
            s.done = True
            s.loop.finish(s.loop.t0)  # emits the Summary
