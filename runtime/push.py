"""`PushSource`: audio the application already owns (a ROS callback, its own capture),
pushed in from any thread at any rate and heard by a `Listener` like a microphone.

    source = PushSource(sample_rate=48_000, channels=2)
    with soundflow.Listener(mode="alert", input=source, on_event=handle):
        ...  source.push(block)  # from any thread, as often as audio comes

Overrun policy: `push` never blocks and never fails for being early or late. The buffer
holds `buffer_s` seconds; when the listener falls further behind than that, the oldest
audio is dropped and counted (`Summary.overruns`, `overrun_samples`), as with a
microphone. Latency counts from the `push` that brought a chunk's last sample.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import soxr

from soundflow.audio import SAMPLE_RATE
from soundflow.runtime.sources import RingReader, SourceError, as_mono_float, finite


class PushSource(RingReader):
    """A live source fed by `push(samples)`; `end()` (or the Listener stopping) ends it."""

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        channels: int = 1,
        dtype: str = "int16",
        buffer_s: float = 10.0,
        gap_s: float = 1.0,
        name: str = "push",
    ) -> None:
        """`sample_rate`: of pushed audio unless a push says otherwise. `channels` and
        `dtype`: how pushed bytes are laid out (arrays say it themselves: (frames,) or
        (frames, channels)). `buffer_s`: audio held for a listener that falls behind.
        `gap_s`: pushes this far apart are reported as an input gap."""
        if not buffer_s > 0:
            raise ValueError(f"buffer_s {buffer_s} must be positive")
        super().__init__(name, int(buffer_s * SAMPLE_RATE), gap_s)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate {sample_rate} must be positive")
        self.sample_rate = int(sample_rate)
        if channels < 1:
            raise ValueError(f"channels {channels} must be 1 or more")
        self.channels = int(channels)
        self.dtype = np.dtype(dtype)
        self.pushed = 0  # samples accepted, at their own rate
        self._lock = threading.Lock()  # one writer at a time: the ring has a single writer
        self._resampler: soxr.ResampleStream | None = None
        self._rate: int | None = None
        self._ended = False

    def push(self, samples, sample_rate: int | None = None) -> int:
        """Append audio: a numpy array ((frames,) or (frames, channels), float in [-1, 1]
        or integer PCM) or bytes of `dtype`. Returns the frames taken (0 after `end()`).
        Safe from any thread; never blocks on the listener."""
        rate = int(sample_rate or self.sample_rate)
        if isinstance(samples, bytes | bytearray | memoryview):
            x = np.frombuffer(samples, self.dtype)
            if self.channels > 1:
                if x.size % self.channels:
                    raise SourceError(
                        f"pushed {x.size} samples, not whole {self.channels}-channel frames"
                    )
                x = x.reshape(-1, self.channels)
        else:
            x = np.asarray(samples)
        mono = finite(as_mono_float(x, rate), self.tally)
        with self._lock:
            if self._ended:
                return 0
            if rate != self._rate:
                self._switch(rate)
            out = mono if self._resampler is None else self._resampler.resample_chunk(mono)
            self._write(out)
            self.pushed += len(mono)
        return len(mono)

    def _switch(self, rate: int) -> None:
        if self._resampler is not None:  # flush the old rate's tail first
            self._write(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        self._rate = rate
        self._resampler = (
            None
            if rate == SAMPLE_RATE
            else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        )

    def _write(self, out: np.ndarray) -> None:
        if out.size:
            self.clock.mark(self.ring.total_written + out.size, time.monotonic())
            self.ring.write(out)

    def end(self) -> None:
        """No more audio: the listener decides what was pushed, then ends its run."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            if self._resampler is not None:
                self._write(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        self.ring.close()

    def stop(self) -> None:
        self.end()
