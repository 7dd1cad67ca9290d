"""The perceive-decide-respond loop: two threads with FIFO scheduling, or one (sync).

    source ──► perceive thread: read chunk, encode ──► FIFO ──► respond thread: decide,
                                                                 generate, emit events

Async (the paper's asynchronous inference): encoding never waits for generation; chunks
that queue while a response is generated are decided right after it, in order. Sync
(encode then decode in one thread) is the benchmark baseline.

Latency reference per chunk: the moment its last sample arrived from a live source (the
capture callback, the pacing clock, the push). In `--fast` mode audio has no arrival
time, so the reference is the later of the read and the moment the decoder became free:
the latency the loop would have if the audio had arrived just when the loop could take it.

Faults end in the Summary, never in a silent thread death: any exception from a source, a
graph or a callback sets `Summary.error`. Non-finite PCM is zeroed (counted), and a
stream whose output turns non-finite is reset and reported as a `Notice`.

A driver that owns the clock and the batching (serve's scheduler, runtime/serve/
scheduler.py) runs a Loop without its threads, through the methods `Loop` names.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from soundflow.protocol import parse_tags
from soundflow.runtime.engine import OrtEngine
from soundflow.runtime.events import (
    SUPPRESSED_REASONS,
    Event,
    LatencyStats,
    Notice,
    Response,
    Stats,
    Summary,
    Suppressed,
)
from soundflow.runtime.kinds import open_stream
from soundflow.runtime.kinds.decoder import EncoderStream
from soundflow.runtime.options import RuntimeOptions
from soundflow.runtime.sources import Source, SourceError, Tally, finite

# What a failing ONNX Runtime call raises (IO-binding runs raise plain RuntimeError).
ORT_ERRORS = (
    RuntimeError,
    ort.capi.onnxruntime_pybind11_state.Fail,
    ort.capi.onnxruntime_pybind11_state.RuntimeException,
    ort.capi.onnxruntime_pybind11_state.InvalidArgument,
)


def first_line(e: BaseException) -> str:
    """An exception's first line (or its type's name), at most 300 characters: for messages."""
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:300]


def _scrub(obj: object) -> None:
    """Zero the non-finite values of every float array an object holds (attributes, lists)."""
    if obj is None:
        return
    for v in vars(obj).values() if hasattr(obj, "__dict__") else ():
        for a in v if isinstance(v, list | tuple) else (v,):
            if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size:
                np.copyto(a, 0, where=~np.isfinite(a))


@dataclass
class Chunk:
    """One chunk read and encoded, as the respond step takes it."""

    index: int
    t: float  # stream seconds at the end of the chunk
    ready: float  # monotonic time its audio was complete
    embeds: np.ndarray | None  # None where the stream decides from PCM alone (`needs_embeds`)
    pcm: np.ndarray | None  # the chunk's samples, for fallback bundles and `decoder.wants_pcm`


class Loop:
    """Runs one source through one engine until the source ends or `stop()` is called.

    `run()` drives it with its own threads. A driver that owns the clock and the batching
    instead (no `run()`) calls, per chunk the source gives (index 0, 1, ...):

        pcm, ready, t = loop.accept(samples, index)   # sanitise, advance the stream clock
        embeds = loop.encode(pcm)                     # (or its own batched encoder call)
        loop.respond(loop.make_chunk(index, t, ready, embeds, pcm))   # decide, emit

    then at the end of the source `finish_response()` (what the decoder still holds back)
    and `finish(t0)`, which emits and returns the Summary. `emit(event)` sends an event of
    the driver's own (a failing consumer ends the run with a reason), `fail(message)` ends
    the run with a reason of its own; `t` is the stream time of the last chunk accepted.
    The threads of `run()` call the same methods.
    """

    def __init__(
        self,
        engine: OrtEngine,
        source: Source,
        emit: Callable[[Event], None],
        options: RuntimeOptions | None = None,
    ) -> None:
        self.engine = engine
        self.source = source
        self.on_event = emit  # the consumer; `emit()` guards it
        self.options = options or engine.options
        self.encoder = EncoderStream(engine)
        self.decoder = open_stream(engine, self.options)
        spec = engine.spec
        self.chunk_samples = spec.chunk_samples
        self.chunk_s = spec.chunk_ms / 1000.0
        # A live source has arrival times: latency and stalls count from them.
        self.live = bool(getattr(source, "realtime", False))
        self.fifo: queue.Queue[Chunk | Notice | None] = queue.Queue(
            maxsize=self.options.source.queue_chunks
        )
        self.decision_ms = LatencyStats()
        self.first_token_ms = LatencyStats()
        self.chunks = self.responses = self.suppressed = self.stalls = 0
        self.suppressed_by: dict[str, int] = {}  # withheld responses per reason (Summary)
        self.state_resets = 0
        self.tally = Tally()  # non-finite samples that reached the loop (custom sources)
        self.error: str | None = None
        self.interrupted = False
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._decoder_free = 0.0
        self._decoder_failed = False
        self._next_stats = self.options.source.stats_every_s
        self._stats_chunks = 0  # chunks decided at the last Stats (its recent percentiles)
        self._t = 0.0  # stream seconds at the end of the last chunk read
        self._t_at: float | None = None  # and the monotonic time its audio was complete
        # For a live source `stream_now()` runs on from that time between chunks; a driver
        # whose notices carry the last chunk's time sets this False.
        self.live_clock = True
        self._decided_t = 0.0  # ... and of the last chunk decided
        self._reader: threading.Thread | None = None  # the thread that reads the source
        self._nonfinite_noticed: float | None = None
        self._nonfinite_told = 0  # the count the last nonfinite_audio notice gave
        self.summary: Summary | None = None
        try:
            source.on_notice = self._source_notice
        except AttributeError:  # a source without the attribute (slots) reports nothing
            pass

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Stop capturing; audio already captured is still decided and reported.
        A second call abandons the queued audio too."""
        if self._stopping.is_set():
            self._abort.set()
        self._stopping.set()
        self.interrupted = True
        self._stop_source()

    def _stop_source(self) -> None:
        try:
            self.source.stop()
        except Exception as e:  # noqa: BLE001 - a source that cannot stop still ends the run
            if self.error is None:
                self.error = f"source {self.source.name} failed to stop: {first_line(e)}"
            self._abort.set()

    def fail(self, message: str) -> None:
        """End the run with `message` as its error (the first reason stands): stop reading."""
        if self.error is None:
            self.error = message
        self._stopping.set()
        self._stop_source()

    # ------------------------------------------------------------------ notices
    def _post(self, event: Notice) -> None:
        """Emit a notice in order with the chunks: through the FIFO when it comes from the
        perceive thread, so callbacks keep running on the respond thread."""
        if self.options.engine.asynchronous and threading.current_thread() is self._reader:
            self.fifo.put(event)
        else:
            self.emit(event)

    def emit(self, event: Event) -> None:
        """Send an event to the consumer; a consumer that raises ends the run with a reason."""
        try:
            self.on_event(event)
        except Exception as e:  # noqa: BLE001 - a failing consumer ends the run with a reason
            self.fail(f"event handler raised {type(e).__name__}: {first_line(e)}")

    def notice(self, type_: str, kind: str, text: str) -> None:
        self._post(Notice(t=self.stream_now(), kind=kind, text=text, type=type_))

    @property
    def t(self) -> float:
        """Stream seconds at the end of the last chunk accepted."""
        return self._t

    def stream_now(self) -> float:
        """Stream seconds now: for a live source the clock goes on while it delivers nothing
        (an outage, a silent producer), so a notice is stamped with its own time."""
        if not self.live or self._t_at is None:
            return self._t
        return self._t + max(0.0, time.monotonic() - self._t_at)

    def _source_notice(self, type_: str, kind: str, text: str) -> None:
        self.notice(type_, kind, text)

    # ------------------------------------------------------------------ perceive
    def _read_source(self) -> np.ndarray | None:
        try:
            return self.source.read_chunk(self.chunk_samples)
        except SourceError:
            raise
        except Exception as e:  # noqa: BLE001 - an unplugged device raises OSError & co.
            raise SourceError(
                f"source {self.source.name} failed: {type(e).__name__}: {first_line(e)}"
            ) from None

    def _read(self, index: int) -> Chunk | None:
        chunk = self._read_source()
        if chunk is None:
            return None
        pcm, ready, t = self.accept(chunk, index)
        if self.options.engine.asynchronous or not self.needs_embeds or self.wants_embeds(ready):
            return self.make_chunk(index, t, ready, self.encode(pcm), pcm)
        # One thread (--sync) decides each chunk as it reads it, so it knows when no reading
        # will begin at a chunk (`wants_embeds`): that chunk is not encoded. The perceive
        # thread of the default runs ahead of the decisions and encodes every chunk.
        self.encoder.skip(pcm)
        return self.make_chunk(index, t, ready, None, pcm)

    def accept(self, chunk: np.ndarray, index: int) -> tuple[np.ndarray, float, float]:
        """Chunk `index` as the source gave it -> (pcm, ready, t): the samples sanitised
        (float32, finite, in [-1, 1]), the monotonic time its audio was complete, and its
        stream time, which the stream clock now reads (`t`)."""
        # Latency counts from when the chunk's last sample arrived, not from when this
        # thread got to it: reads queue behind decoding, and that wait counts.
        ready = time.monotonic()
        timing = getattr(self.source, "timing", None)
        arrived, skipped = timing() if timing is not None else (None, 0.0)
        if arrived is not None:
            ready = min(ready, arrived)
        # Stream time includes audio that was dropped or missed before this chunk.
        self._t = (index + 1) * self.chunk_s + skipped
        if self.live_clock:
            self._t_at = ready
        chunk = self._sanitise(np.asarray(chunk, np.float32).reshape(-1), index)
        return chunk, ready, self._t

    def make_chunk(
        self, index: int, t: float, ready: float, embeds: np.ndarray, pcm: np.ndarray
    ) -> Chunk:
        """What `respond` takes; it keeps the PCM only where the decoder reads it (fallback
        control, `wants_pcm`: alerts by the AudioSet branch)."""
        wants = self.decoder.fallback or getattr(self.decoder, "wants_pcm", False)
        return Chunk(index, t, ready, embeds, pcm if wants else None)

    def _sanitise(self, chunk: np.ndarray, index: int) -> np.ndarray:
        if chunk.shape != (self.chunk_samples,):
            raise SourceError(
                f"source {self.source.name} returned {chunk.shape[0]} samples for a "
                f"{self.chunk_samples}-sample chunk; read_chunk must return exact chunks"
            )
        chunk = finite(chunk, self.tally)
        # Sources replace (and count) most of them before they get here: both counts are news.
        total = self.tally.nonfinite + self._source_nonfinite()
        last = self._nonfinite_noticed
        if total > self._nonfinite_told and (last is None or self._t - last >= 10.0):
            self._nonfinite_noticed = self._t  # one notice per 10 s of stream, not per chunk
            self._nonfinite_told = total
            self.notice(
                "warning",
                "nonfinite_audio",
                f"{total} NaN/Inf samples from {self.source.name} so far, "
                "replaced by silence; check the source",
            )
        # The encoder's contract is PCM in [-1, 1]; beyond that its state can overflow.
        if np.abs(chunk).max() > 1.0:
            chunk = np.clip(chunk, -1.0, 1.0)
        return chunk

    def _source_nonfinite(self) -> int:
        try:
            return int(getattr(self.source, "nonfinite_samples", 0) or 0)
        except Exception:  # noqa: BLE001 - a broken counter is no reason to stop listening
            return 0

    @property
    def needs_embeds(self) -> bool:
        """Whether the decoder reads the encoder's output: a stream deciding from the PCM
        alone (alerts by the AudioSet branch) does not, and its encoder never runs."""
        return getattr(self.decoder, "needs_embeds", True)

    def wants_embeds(self, ready: float) -> bool:
        """Whether the chunk whose audio was complete at `ready` needs encoding (a driver that
        decides the chunk at once, as the serve scheduler does, may skip the encoder where
        not: `encoder.skip`). A caption stream behind real time reads over longer hops, and
        the chunks between its readings are read by no one."""
        if not self.needs_embeds:
            return False
        wants = getattr(self.decoder, "wants_embeds", None)
        return True if wants is None else wants(self._reference(ready))

    def encode(self, chunk: np.ndarray) -> np.ndarray | None:
        """A sanitised chunk -> its embeddings, through the Loop's encoder state (None where
        the decoder does not read them); output that turns non-finite resets the state
        (counted, a `state_reset` notice)."""
        if not self.needs_embeds:
            return None
        embeds = self.encoder.encode(chunk)
        if np.isfinite(embeds).all():
            return embeds
        # The carried state is poisoned (finite input cannot give this on a sound state):
        # start the encoder afresh on this chunk rather than go deaf for the rest of it.
        self.encoder.reset()
        self.state_resets += 1
        embeds = self.encoder.encode(chunk)
        again = not np.isfinite(embeds).all()
        if again:
            self.encoder.reset()
            embeds = np.zeros_like(embeds)
        self.notice(
            "warning",
            "state_reset",
            "encoder output turned non-finite: encoder state reset"
            + (" (this chunk is heard as silence)" if again else ""),
        )
        return embeds

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
            self.fail(str(e))
        except ORT_ERRORS as e:
            self.fail(f"encoder failed: {first_line(e)}")
        except Exception as e:  # noqa: BLE001 - reported in the Summary, never lost silently
            self.fail(f"internal error while perceiving: {type(e).__name__}: {first_line(e)}")
        finally:
            self.fifo.put(None)

    # ------------------------------------------------------------------ respond
    def _reference(self, ready: float) -> float:
        """What a chunk's latency counts from: its audio's arrival, live; else when the
        decoder was free for it."""
        return ready if self.live else max(ready, self._decoder_free)

    def _report_suppressed(self, item: Chunk, why: str, p: float, ref: float) -> None:
        tag = getattr(self.decoder, "withheld_tag", None)
        tag = tag.strip("<>") if tag else None
        self.emit(
            Suppressed(
                t=item.t,
                chunk=item.index,
                reason=why,
                tag=tag,
                probability=p,
                text=f"withheld {tag or 'a response'}: {why} "
                f"({SUPPRESSED_REASONS.get(why, 'see the README')})",
                latency_ms=(time.monotonic() - ref) * 1e3,
            )
        )

    def respond(self, item: Chunk) -> None:
        """Decide one chunk; where it responds, generate and emit the Response (and Stats
        when due). Graph errors propagate: the caller fails the stream."""
        ref = self._reference(item.ready)
        decision = self.decoder.decide(item.embeds, item.pcm, ref)
        decided = time.monotonic()
        self.chunks += 1
        self._decided_t = item.t
        self.decision_ms.add((decided - ref) * 1e3)
        if self.live and decided - item.ready > self.chunk_s:
            self.stalls += 1
        if not math.isfinite(decision.p):
            # The decoder's cache is poisoned: every later logit would be NaN too. A reset
            # only marks the slots free, and a masked NaN key still turns attention to NaN,
            # so the non-finite values are scrubbed as well.
            self.decoder.reset()
            for part in ("cache", "memory"):  # the self-attention cache, a cross-attention memory
                _scrub(getattr(self.decoder, part, None))
            self.state_resets += 1
            self.emit(
                Notice(
                    t=item.t,
                    kind="state_reset",
                    text="decoder output turned non-finite: decoder state reset "
                    "(the task prompt is fed again)",
                    type="warning",
                )
            )
        elif decision.respond:
            first = self.decoder.begin_response(item.t)
            if first is None:
                self.suppressed += 1
                why = getattr(self.decoder, "withheld", None) or "refractory"
                self.suppressed_by[why] = self.suppressed_by.get(why, 0) + 1
                if self.options.decision.report_suppressed:
                    self._report_suppressed(item, why, decision.p, ref)
            else:
                first_at = time.monotonic()
                self.first_token_ms.add((first_at - ref) * 1e3)
                raw, tags, plain, count = self._spell(self.decoder.continue_response(first))
                done = time.monotonic()
                fired = getattr(getattr(self.decoder, "alerts", None), "fired", None)
                self.responses += 1
                self.emit(
                    Response(
                        t=item.t,
                        chunk=item.index,
                        text=plain,
                        raw=raw,
                        tags=tags,
                        mode=self.decoder.mode,
                        probability=decision.p,
                        decision_latency_ms=(decided - ref) * 1e3,
                        first_token_latency_ms=(first_at - ref) * 1e3,
                        latency_ms=(done - ref) * 1e3,
                        tokens=count,
                        truncated=count >= self.decoder.max_tokens,
                        heard=self.decoder.heard,
                        classes=fired[2] if fired else None,
                        onset=fired[3] if fired else None,
                    )
                )
        self._decoder_free = time.monotonic()
        if self.options.source.stats_every_s and item.t >= self._next_stats:
            while self._next_stats <= item.t:  # skipped audio may jump several periods
                self._next_stats += self.options.source.stats_every_s
            self.emit(self._stats(item.t))

    def _spell(self, tokens) -> tuple[str, dict, str, int]:
        """Response token ids -> (raw text, tags, plain text, token count)."""
        text = self.engine.detokenizer.stream(skip=self.decoder.stops)
        count = 0
        for token in tokens:
            text.push(token)
            count += 1
        text.finish()
        tags, plain = parse_tags(text.text)
        return text.text.strip(), tags, plain, count

    def finish_response(self) -> None:
        """At the end of the source: what the decoder still holds back (captions waiting for
        a second window to agree, runtime/captions.py) is emitted as one last response."""
        if self._abort.is_set() or self._decoder_failed:
            return
        finish = getattr(self.decoder, "finish", None)
        ids = finish() if finish is not None else []
        if not ids:
            return
        raw, tags, plain, count = self._spell(ids)
        self.responses += 1
        self.emit(
            Response(
                t=self._decided_t,
                chunk=max(self.chunks - 1, 0),
                text=plain,
                raw=raw,
                tags=tags,
                mode=self.decoder.mode,
                probability=1.0,
                decision_latency_ms=0.0,
                first_token_latency_ms=0.0,
                latency_ms=0.0,
                tokens=count,
                truncated=False,
            )
        )

    def _gap_stalls(self) -> int:
        """Chunk lengths in which a live source delivered nothing: the listener was deaf."""
        return int(getattr(self.source, "input_gap_s", 0.0) // self.chunk_s)

    def _stats(self, t: float) -> Stats:
        recent, self._stats_chunks = self.chunks - self._stats_chunks, self.chunks
        lag = self._caption_account()
        return Stats(
            t=t,
            chunks=self.chunks,
            overruns=self.source.overruns,
            stalls=self.stalls + self._gap_stalls(),
            queued=self.fifo.qsize(),
            decision_p50_ms=self.decision_ms.percentile(50),
            decision_p99_ms=self.decision_ms.percentile(99),
            cache_entries=self.decoder.cache.length,
            cache_evictions=self.decoder.cache.evictions,
            decision_p50_recent_ms=self.decision_ms.percentile(50, recent),
            decision_p99_recent_ms=self.decision_ms.percentile(99, recent),
            caption_lag_p50_ms=lag.get("caption_lag_p50_ms"),
            caption_lag_p95_ms=lag.get("caption_lag_p95_ms"),
            captions_late=lag.get("captions_late"),
            captions_skipped=lag.get("captions_skipped"),
            captions_deferred=lag.get("captions_deferred"),
        )

    def _caption_account(self) -> dict:
        """The caption reader's lag and loss (runtime/captions.py), where the stream has one."""
        reader = getattr(self.decoder, "captions", None)
        if reader is None:
            return {}
        return {
            "caption_lag_p50_ms": reader.lag_ms.percentile(50),
            "caption_lag_p95_ms": reader.lag_ms.percentile(95),
            "caption_lag_max_ms": reader.lag_ms.max(),
            "captions_late": reader.late,
            "captions_skipped": reader.unread,
            "captions_deferred": reader.deferred,
        }

    def _respond_loop(self) -> None:
        while True:
            try:
                item = self.fifo.get(timeout=0.25)
            except queue.Empty:
                if self._abort.is_set():  # a read blocked for good must not hold the Summary
                    return
                continue
            if item is None:
                self.finish_response()
                return
            if self._abort.is_set() or self._decoder_failed:
                continue  # drain: the perceive thread must never block on a full FIFO
            if isinstance(item, Notice):
                self.emit(item)
                continue
            try:
                self.respond(item)
            except ORT_ERRORS as e:
                self._decoder_failed = True
                self.fail(f"decoder failed: {first_line(e)}")
            except Exception as e:  # noqa: BLE001 - reported in the Summary
                self._decoder_failed = True
                self.fail(f"internal error while responding: {type(e).__name__}: {first_line(e)}")

    # ------------------------------------------------------------------ run
    def run(self) -> Summary:
        """Run to the end of the source (or `stop()`); emits and returns the Summary.
        Whatever fails, it returns a Summary, with `error` set."""
        t0 = time.monotonic()
        try:
            self.source.start()
        except Exception as e:  # noqa: BLE001 - SourceError or anything a custom source raises
            self.error = (
                str(e)
                if isinstance(e, SourceError)
                else (
                    f"source {self.source.name} failed to start: {type(e).__name__}: {first_line(e)}"
                )
            )
            self._close_source()
            return self.finish(t0)
        try:
            if self.options.engine.asynchronous:
                perceive = threading.Thread(
                    target=self._perceive, name="soundflow-perceive", daemon=True
                )
                self._reader = perceive
                perceive.start()
                self._respond_loop()
                while perceive.is_alive() and not self._abort.is_set():
                    perceive.join(0.25)
                perceive.join(1.0)  # after abort: give a blocked read a moment, no more
            else:
                self._reader = threading.current_thread()
                self._sync(t0)
        except BaseException as e:  # noqa: BLE001 - reported in the Summary, never lost silently
            self.fail(f"internal error: {type(e).__name__}: {first_line(e)}")
            if not isinstance(e, Exception):
                self._close_source()
                self.finish(t0)
                raise
        finally:  # whatever happened, the run ends with a Summary
            self._close_source()
            if self.summary is None:
                self.finish(t0)
        return self.summary

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception as e:  # noqa: BLE001
            if self.error is None:
                self.error = f"source {self.source.name} failed to close: {first_line(e)}"

    def _sync(self, t0: float) -> None:
        index = 0
        try:
            while not self._abort.is_set():
                item = self._read(index)
                if item is None:
                    self.finish_response()
                    break
                self.respond(item)
                index += 1
        except SourceError as e:
            self.fail(str(e))
        except ORT_ERRORS as e:
            self.fail(f"inference failed: {first_line(e)}")
        except Exception as e:  # noqa: BLE001 - reported in the Summary
            self.fail(f"internal error: {type(e).__name__}: {first_line(e)}")

    def finish(self, t0: float) -> Summary:
        """Build the Summary (wall time from `t0`, monotonic), emit it and return it."""
        wall = time.monotonic() - t0
        stream_s = max(self.chunks * self.chunk_s, self._decided_t)
        if self.error is not None:  # a live source given up on: the outage is stream time too
            stream_s = max(stream_s, self.stream_now())
        src = self.source

        def count(name: str, default=0):
            try:
                return getattr(src, name, default)
            except Exception:  # noqa: BLE001 - a broken source still gets its summary
                return default

        self.summary = Summary(
            t=stream_s,
            chunks=self.chunks,
            responses=self.responses,
            suppressed=self.suppressed,
            suppressed_by=dict(self.suppressed_by),
            overruns=count("overruns"),
            overrun_samples=count("overrun_samples"),
            stalls=self.stalls + self._gap_stalls(),
            decision_p50_ms=self.decision_ms.percentile(50),
            decision_p99_ms=self.decision_ms.percentile(99),
            decision_mean_ms=self.decision_ms.mean(),
            first_token_p50_ms=self.first_token_ms.percentile(50),
            wall_s=wall,
            realtime_factor=stream_s / wall if wall > 0 else 0.0,
            cache_evictions=self.decoder.cache.evictions,
            mode=self.decoder.mode,
            scheduling="async" if self.options.engine.asynchronous else "sync",
            interrupted=self.interrupted,
            error=self.error,
            input_overflows=count("input_overflows"),
            input_gaps=count("input_gaps"),
            input_gap_s=float(count("input_gap_s", 0.0)),
            reconnects=count("reconnects"),
            nonfinite_samples=self.tally.nonfinite + count("nonfinite_samples"),
            state_resets=self.state_resets,
            **self._caption_account(),
            extra={
                "source": src.name,
                "realtime": self.live,
                "provider": self.engine.provider,
                "threads": self.options.engine.session_threads(),
            },
        )
        try:
            self.on_event(self.summary)
        except Exception:  # noqa: BLE001 - the Summary is still returned
            pass
        return self.summary
