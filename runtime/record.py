"""`Recording`: a source that also writes what it gives the loop to a WAV file
(`listen --record FILE`), sample for sample in stream time: what the model heard.

Audio the source skipped (a reader that fell behind, a device outage) is written as
silence, so a time in the file is the stream time the events carry. A write that fails (a
full disk, a file removed) stops the recording with a warning and loses no audio: the
stream goes on unrecorded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from soundflow.audio import SAMPLE_RATE
from soundflow.runtime.sources import Source, SourceError


class Recording:
    """Wraps `inner`: every attribute is the inner source's; `read_chunk` also writes."""

    def __init__(self, inner: Source, path: str | Path) -> None:
        self._inner, self._path = inner, Path(path)
        try:
            # PCM_16 as a microphone gives it; the file is valid (its header rewritten) at
            # close, and soundfile flushes as it goes, so an abrupt end keeps what was read.
            self._file: sf.SoundFile | None = sf.SoundFile(
                self._path, "w", samplerate=SAMPLE_RATE, channels=1, subtype="PCM_16"
            )
        except (OSError, RuntimeError, sf.LibsndfileError) as e:
            raise SourceError(f"cannot record to {self._path}: {e}") from None
        self._skipped = 0.0  # seconds of skipped audio already written as silence

    def __getattr__(self, name: str):  # only for what this class does not define
        return getattr(self._inner, name)

    @property
    def on_notice(self):
        return self._inner.on_notice

    @on_notice.setter
    def on_notice(self, fn) -> None:
        self._inner.on_notice = fn

    def read_chunk(self, n: int) -> np.ndarray | None:
        chunk = self._inner.read_chunk(n)
        if chunk is not None and self._file is not None:
            _, skipped = self._inner.timing()
            gap = round((skipped - self._skipped) * SAMPLE_RATE)
            self._skipped = skipped
            x = np.nan_to_num(np.asarray(chunk, np.float32).reshape(-1), nan=0.0)
            try:
                if gap > 0:
                    self._file.write(np.zeros(gap, np.float32))
                self._file.write(np.clip(x, -1.0, 1.0))  # libsndfile wraps, not clips
            except (OSError, RuntimeError, sf.LibsndfileError) as e:
                self._stop_recording(f"recording to {self._path} stopped: {e}")
        return chunk

    def _stop_recording(self, why: str) -> None:
        file, self._file = self._file, None
        try:
            file.close()
        except Exception:  # noqa: BLE001 - the disk that failed the write may fail this too
            pass
        if self._inner.on_notice is not None:
            self._inner.on_notice("warning", "record_failed", f"{why}; the stream goes on")

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            if self._file is not None:
                file, self._file = self._file, None
                file.close()
