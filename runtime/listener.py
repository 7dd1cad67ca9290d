"""`Listener`: the embedding API. A few lines turn a microphone (or a file) into events:

    import soundflow

    with soundflow.Listener(mode="alert") as listener:
        for event in listener.events():
            if event.type == "response":
                print(f"{event.t:7.1f}s  {event.text}  {event.tags}")

No bundle argument means the embedded default bundle; no input means the default
microphone (reopened with backoff if it dies); a `PushSource` takes audio the application
already owns. Events also go to callbacks (`on_event=` or `listener.on(fn)`); the last
event of every run is a `Summary`, with `error` set if anything failed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from soundflow.runtime.engine import OrtEngine
from soundflow.runtime.events import Event, Summary
from soundflow.runtime.kinds import open_engine
from soundflow.runtime.loop import Loop
from soundflow.runtime.options import RuntimeOptions
from soundflow.runtime.record import Recording
from soundflow.runtime.sources import Source, array_source, file_source, stdin_source

InputLike = str | Path | np.ndarray | Source | None


class Listener:
    """An always-on listener: one source, one engine, a background loop, typed events."""

    def __init__(
        self,
        bundle: str | Path | OrtEngine | None = None,
        *,
        mode: str | None = None,
        input: InputLike = None,
        device: int | str | None = None,
        sample_rate: int | None = None,
        options: RuntimeOptions | None = None,
        on_event: Callable[[Event], None] | None = None,
        variant: str = "fp32",
        max_buffered_events: int = 10_000,
        record: str | Path | None = None,
        **overrides: Any,
    ) -> None:
        """`input`: a file path, "-" (PCM or WAV/FLAC/Ogg on stdin), a numpy array (with
        `sample_rate`), a Source such as `PushSource`, or None for the microphone `device`
        (index or name; reopened with backoff when it dies, see `reconnect` options).
        `record`: a WAV file that gets the audio as the loop read it, in stream time
        (runtime/record.py).
        `overrides`: flat option names (RuntimeOptions.from_flags), e.g. threshold=0.7,
        realtime=False."""
        self.options = (options or RuntimeOptions()).with_flags(mode=mode, **overrides)
        if isinstance(bundle, OrtEngine):
            self.engine = bundle
        else:
            self.engine = open_engine(bundle, self.options, variant=variant)
        self.mode, _ = self.engine.spec.prompt(self.options.decision.mode)
        self._input, self._device, self._rate = input, device, sample_rate
        self._record = record
        self._callbacks: list[Callable[[Event], None]] = [on_event] if on_event else []
        self._events: queue.Queue[Event] = queue.Queue(maxsize=max_buffered_events)
        self.dropped_events = 0  # events no one read from events() before the buffer filled
        self._thread: threading.Thread | None = None
        self.loop: Loop | None = None
        self.summary: Summary | None = None
        self.callback_error: BaseException | None = None

    # ------------------------------------------------------------------ wiring
    def on(self, callback: Callable[[Event], None]) -> Callable[[Event], None]:
        """Register a callback (usable as a decorator); it runs on the respond thread."""
        self._callbacks.append(callback)
        return callback

    def _source(self) -> Source:
        x, realtime = self._input, self.options.source.realtime
        if isinstance(x, Source):
            return x
        if isinstance(x, np.ndarray):
            return array_source(x, self._rate or self.engine.spec.sample_rate, realtime)
        o = self.options
        if x is not None and str(x) == "-":
            return stdin_source(realtime=realtime, gap_s=o.source.gap_s)
        if x is not None:
            return file_source(x, realtime, gap_s=o.source.gap_s)
        from soundflow.runtime.mic import MicSource  # optional dependency, imported late

        return MicSource(
            self._device,
            ring_seconds=o.source.ring_seconds,
            reconnect=o.source.reconnect,
            reconnect_tries=o.source.reconnect_tries,
            timeout_s=o.source.timeout_s,
        )

    def _dispatch(self, event: Event) -> None:
        for cb in self._callbacks:
            try:
                cb(event)
            except Exception as e:  # noqa: BLE001 - a user callback must not kill the loop silently
                if self.callback_error is None:
                    self.callback_error = e
                    if self.loop is not None:
                        self.loop.fail(f"event callback raised {type(e).__name__}: {e}")
        while True:
            try:
                self._events.put_nowait(event)
                return
            except queue.Full:  # nobody is reading events(): keep the newest
                try:
                    self._events.get_nowait()
                    self.dropped_events += 1
                except queue.Empty:
                    pass

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Listener:
        """Open the source and start listening in the background."""
        if self._thread is not None:
            return self
        source = self._source()
        if self._record is not None:
            source = Recording(source, self._record)  # type: ignore[assignment]
        self.loop = Loop(self.engine, source, self._dispatch, self.options)
        self._thread = threading.Thread(target=self._run, name="soundflow-listener", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self.loop is not None
        self.summary = self.loop.run()  # returns a Summary whatever fails

    def run(self) -> Summary:
        """Listen until the source ends and return the Summary (sync or async scheduling
        alike). Ctrl-C stops capturing; the Summary still covers what was captured."""
        self.start()
        try:
            self.wait()
        except KeyboardInterrupt:
            self.stop()
            self.wait()
        assert self.summary is not None
        return self.summary

    def stop(self) -> None:
        """Stop capturing; events for audio already captured still arrive."""
        if self.loop is not None:
            self.loop.stop()

    def wait(self, timeout: float | None = None) -> Summary | None:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.summary

    def close(self) -> Summary | None:
        self.stop()
        return self.wait()

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after `timeout` seconds without one. Safe to call again
        after a KeyboardInterrupt (a generator would be closed by it)."""
        if self._thread is None:
            self.start()
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Every event in order, ending with the Summary. `timeout`: give up waiting for the
        next event after that many seconds (None: wait for ever)."""
        while (event := self.next_event(timeout)) is not None:
            yield event
            if event.type == "summary":
                return
