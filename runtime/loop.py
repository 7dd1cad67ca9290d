"""The perceive-decide-respond loop: two threads with FIFO scheduling, or one (sync).

    source ──► perceive thread: read chunk, encode ──► FIFO ──► respond thread: decide,
                                                                 generate, emit events

Async (the paper's asynchronous inference): encoding never waits for generation; chunks
that queue while a response is generated are decided right after it, in order. Sync
(encode then decode in one thread) is the benchmark baseline.

Latency reference per chunk: the moment its audio was complete (read from the source).
In `--fast` mode audio has no arrival time, so the reference is the later of the read
and the moment the decoder became free: the latency the loop would have if the audio had
arrived just when the loop could take it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from soundflow.audio import SAMPLE_RATE
from soundflow.protocol import parse_tags
from soundflow.runtime.engine import OrtEngine
from soundflow.runtime.events import Event, LatencyStats, Response, Stats, Summary
from soundflow.runtime.options import RuntimeOptions
from soundflow.runtime.sources import Source, SourceError
from soundflow.runtime.stream import DecoderStream, EncoderStream

# What a failing ONNX Runtime call raises (IO-binding runs raise plain RuntimeError).
_ORT_ERRORS = (
    RuntimeError,
    ort.capi.onnxruntime_pybind11_state.Fail,
    ort.capi.onnxruntime_pybind11_state.RuntimeException,
    ort.capi.onnxruntime_pybind11_state.InvalidArgument,
)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:300]


@dataclass
class _Chunk:
    index: int
    t: float  # stream seconds at the end of the chunk
    ready: float  # monotonic time its audio was complete
    embeds: np.ndarray
    pcm: np.ndarray | None  # the chunk's samples, kept for fallback-control bundles only


class Loop:
    """Runs one source through one engine until the source ends or `stop()` is called."""

    def __init__(
        self,
        engine: OrtEngine,
        source: Source,
        emit: Callable[[Event], None],
        options: RuntimeOptions | None = None,
    ) -> None:
        self.engine = engine
        self.source = source
        self.emit = emit
        self.options = options or engine.options
        self.encoder = EncoderStream(engine)
        self.decoder = DecoderStream(engine, self.options)
        spec = engine.spec
        self.chunk_samples = spec.chunk_samples
        self.chunk_s = spec.chunk_ms / 1000.0
        self.fifo: queue.Queue[_Chunk | None] = queue.Queue(maxsize=self.options.queue_chunks)
        self.decision_ms = LatencyStats()
        self.first_token_ms = LatencyStats()
        self.chunks = self.responses = self.suppressed = self.stalls = 0
        self.error: str | None = None
        self.interrupted = False
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._decoder_free = 0.0
        self._decoder_failed = False
        self._next_stats = self.options.stats_every_s
        self.summary: Summary | None = None

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Stop capturing; audio already captured is still decided and reported.
        A second call abandons the queued audio too."""
        if self._stopping.is_set():
            self._abort.set()
        self._stopping.set()
        self.interrupted = True
        self.source.stop()

    def _fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
        self._stopping.set()
        self.source.stop()

    # ------------------------------------------------------------------ perceive
    def _read(self, index: int) -> _Chunk | None:
        chunk = self.source.read_chunk(self.chunk_samples)
        if chunk is None:
            return None
        # Latency counts from when the chunk's last sample was captured, not from when this
        # thread got to it: in sync mode reads queue behind decoding, and that wait counts.
        ready = time.monotonic()
        arrival = self._arrival(index)
        if arrival is not None:
            ready = min(ready, arrival)
        pcm = chunk if self.decoder.fallback else None
        return _Chunk(index, (index + 1) * self.chunk_s, ready, self.encoder.encode(chunk), pcm)

    def _arrival(self, index: int) -> float | None:
        """Capture time of chunk `index`'s last sample on a paced source's audio clock
        (samples dropped by overruns came before it); None when the source has no clock."""
        t0 = getattr(self.source, "t0", None)
        if t0 is None:
            return None
        consumed = (index + 1) * self.chunk_samples + getattr(self.source, "overrun_samples", 0)
        return t0 + consumed / SAMPLE_RATE

    def _perceive(self) -> None:
        index = 0
        try:
            while not self._abort.is_set():
                item = self._read(index)
                if item is None:
                    break
                self.fifo.put(item)
                index += 1
        except SourceError as e:
            self._fail(str(e))
        except _ORT_ERRORS as e:
            self._fail(f"encoder failed: {_first_line(e)}")
        finally:
            self.fifo.put(None)

    # ------------------------------------------------------------------ respond
    def _reference(self, item: _Chunk) -> float:
        return item.ready if self.options.realtime else max(item.ready, self._decoder_free)

    def _respond(self, item: _Chunk) -> None:
        ref = self._reference(item)
        decision = self.decoder.decide(item.embeds, item.pcm)
        decided = time.monotonic()
        self.chunks += 1
        self.decision_ms.add((decided - ref) * 1e3)
        if self.options.realtime and decided - item.ready > self.chunk_s:
            self.stalls += 1
        if decision.respond:
            first = self.decoder.begin_response(item.t)
            if first is None:
                self.suppressed += 1
            else:
                first_at = time.monotonic()
                self.first_token_ms.add((first_at - ref) * 1e3)
                text = self.engine.detokenizer.stream(skip=self.decoder.stops)
                count = 0
                for token in self.decoder.continue_response(first):
                    text.push(token)
                    count += 1
                text.finish()
                tags, plain = parse_tags(text.text)
                done = time.monotonic()
                self.responses += 1
                self.emit(
                    Response(
                        t=item.t,
                        chunk=item.index,
                        text=plain,
                        raw=text.text.strip(),
                        tags=tags,
                        mode=self.decoder.mode,
                        probability=decision.p,
                        decision_latency_ms=(decided - ref) * 1e3,
                        first_token_latency_ms=(first_at - ref) * 1e3,
                        latency_ms=(done - ref) * 1e3,
                        tokens=count,
                        truncated=count >= self.decoder.max_tokens,
                    )
                )
        self._decoder_free = time.monotonic()
        if self.options.stats_every_s and item.t >= self._next_stats:
            self._next_stats += self.options.stats_every_s
            self.emit(self._stats(item.t))

    def _stats(self, t: float) -> Stats:
        return Stats(
            t=t,
            chunks=self.chunks,
            overruns=self.source.overruns,
            stalls=self.stalls,
            queued=self.fifo.qsize(),
            decision_p50_ms=self.decision_ms.percentile(50),
            decision_p99_ms=self.decision_ms.percentile(99),
            cache_entries=self.decoder.cache.length,
            cache_evictions=self.decoder.cache.evictions,
        )

    def _respond_loop(self) -> None:
        while (item := self.fifo.get()) is not None:
            if self._abort.is_set() or self._decoder_failed:
                continue  # drain: the perceive thread must never block on a full FIFO
            try:
                self._respond(item)
            except _ORT_ERRORS as e:
                self._decoder_failed = True
                self._fail(f"decoder failed: {_first_line(e)}")

    # ------------------------------------------------------------------ run
    def run(self) -> Summary:
        """Run to the end of the source (or `stop()`); emits and returns the Summary."""
        t0 = time.monotonic()
        try:
            self.source.start()
        except SourceError as e:
            self.error = str(e)
            return self._finish(t0)
        try:
            if self.options.asynchronous:
                perceive = threading.Thread(
                    target=self._perceive, name="soundflow-perceive", daemon=True
                )
                perceive.start()
                self._respond_loop()
                perceive.join()
            else:
                self._sync(t0)
        except Exception as e:  # noqa: BLE001 - reported in the Summary, never lost silently
            self._fail(f"internal error: {type(e).__name__}: {_first_line(e)}")
            raise
        finally:  # whatever happened, the run ends with a Summary
            self.source.close()
            if self.summary is None:
                self._finish(t0)
        return self.summary

    def _sync(self, t0: float) -> None:
        index = 0
        try:
            while not self._abort.is_set():
                item = self._read(index)
                if item is None:
                    break
                self._respond(item)
                index += 1
        except SourceError as e:
            self._fail(str(e))
        except _ORT_ERRORS as e:
            self._fail(f"inference failed: {_first_line(e)}")

    def _finish(self, t0: float) -> Summary:
        wall = time.monotonic() - t0
        stream_s = self.chunks * self.chunk_s
        self.summary = Summary(
            t=stream_s,
            chunks=self.chunks,
            responses=self.responses,
            suppressed=self.suppressed,
            overruns=self.source.overruns,
            overrun_samples=self.source.overrun_samples,
            stalls=self.stalls,
            decision_p50_ms=self.decision_ms.percentile(50),
            decision_p99_ms=self.decision_ms.percentile(99),
            decision_mean_ms=self.decision_ms.mean(),
            first_token_p50_ms=self.first_token_ms.percentile(50),
            wall_s=wall,
            realtime_factor=stream_s / wall if wall > 0 else 0.0,
            cache_evictions=self.decoder.cache.evictions,
            mode=self.decoder.mode,
            scheduling="async" if self.options.asynchronous else "sync",
            interrupted=self.interrupted,
            error=self.error,
            extra={
                "source": self.source.name,
                "realtime": self.options.realtime,
                "provider": self.engine.provider,
                "threads": self.options.session_threads(),
            },
        )
        self.emit(self.summary)
        return self.summary
