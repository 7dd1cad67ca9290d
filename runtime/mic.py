"""Microphones through sounddevice/PortAudio (optional: `pip install 'soundflow[mic]'`).

The PortAudio callback only stamps and copies its buffer into the ring; the reader
resamples to 16 kHz, cuts exact chunks, and notices a stream that died or went silent
(a sound server restarted, a USB device unplugged), then reopens it with backoff.
"""

from __future__ import annotations

import importlib
import threading
import time
from types import ModuleType
from typing import Any

import numpy as np
import soxr

from soundflow.audio import SAMPLE_RATE
from soundflow.runtime.ring import RingBuffer
from soundflow.runtime.sources import (
    PORTAUDIO_HINT,
    SOUNDDEVICE_HINT,
    Chunker,
    Clock,
    Source,
    SourceError,
    Tally,
    finite,
)

# The old name, kept for callers that import it.
MIC_HINT = f"{SOUNDDEVICE_HINT} (and {PORTAUDIO_HINT})"


def import_sounddevice() -> ModuleType:
    """sounddevice, or a SourceError with the install hint (no import at module load)."""
    try:
        return importlib.import_module("sounddevice")
    except ImportError:
        raise SourceError(f"microphone input needs sounddevice: {SOUNDDEVICE_HINT}") from None
    except OSError as e:  # sounddevice is installed but libportaudio is not
        raise SourceError(
            f"sounddevice is installed but PortAudio is not ({e}): {PORTAUDIO_HINT}"
        ) from None


# Streams soundflow holds open; PortAudio re-initialisation would close them.
_open_streams = 0


def rescan_devices() -> bool:
    """Make PortAudio list the devices present now; True if it re-read them.

    PortAudio reads its device list once, when it initialises: a USB microphone plugged in
    later, or a sound server (PulseAudio, PipeWire) started later, stays invisible until
    it re-initialises. Re-initialising closes every PortAudio stream in the process, so
    this is skipped while a MicSource is capturing; an app with streams of its own should
    pass `rescan=False` to `list_input_devices`.
    """
    sd = import_sounddevice()
    if _open_streams:
        return False
    try:  # the maintainer's workaround (python-sounddevice issue #125)
        sd._terminate()
        sd._initialize()
    except (AttributeError, sd.PortAudioError):
        return False
    return True


def list_input_devices(rescan: bool = True) -> list[dict[str, Any]]:
    """Input devices: index, name, host API, channels, native rate, default flag."""
    sd = import_sounddevice()
    if rescan:
        rescan_devices()
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0]
        apis = sd.query_hostapis()
    except sd.PortAudioError as e:
        raise SourceError(f"PortAudio could not list devices ({e}); {PORTAUDIO_HINT}") from None
    return [
        {
            "index": i,
            "name": d["name"],
            "hostapi": apis[d["hostapi"]]["name"],
            "channels": d["max_input_channels"],
            "samplerate": int(d["default_samplerate"]),
            "default": i == default_in,
        }
        for i, d in enumerate(devices)
        if d["max_input_channels"] > 0
    ]


def resolve_device(device: int | str | None) -> tuple[int, dict[str, Any]]:
    """A device index or (part of) a name -> (index, info); SourceError naming the fix."""
    sd = import_sounddevice()
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device)
    for attempt in range(2):
        try:
            info = sd.query_devices(device, "input")
            return int(info["index"]), info
        except (ValueError, sd.PortAudioError) as e:
            reason = str(e)
        # It may have appeared since PortAudio started: re-read the devices once.
        if attempt or not rescan_devices():
            break
    try:
        names = ", ".join(f"{d['index']}: {d['name']}" for d in list_input_devices(False))
    except SourceError:
        names = ""
    which = "default input device" if device is None else f"input device {device!r}"
    raise SourceError(
        f"no usable {which} ({reason}); run `soundflow devices` and pass --device INDEX or "
        f"NAME (in Python: device=INDEX or NAME; inputs: {names or 'none'})"
    )


class MicSource(Source):
    """Live capture from an input device at its native rate, resampled to 16 kHz.

    A stream that stops (PortAudio error, sound server gone) or delivers nothing for
    `timeout_s` (`first_audio_s` after opening) is lost: with `reconnect` it is reopened
    after 0.5, 1, 2 ... 8 s, `reconnect_tries` failures in a row end the run with a
    SourceError; each step is a notice. The outage counts as skipped audio, so stream
    time keeps following the clock.
    """

    realtime = True

    def __init__(
        self,
        device: int | str | None = None,
        ring_seconds: float = 10.0,
        blocksize: int = 0,
        samplerate: int | None = None,
        *,
        reconnect: bool = True,
        reconnect_tries: int = 10,
        timeout_s: float = 3.0,
        first_audio_s: float = 10.0,
        backoff_s: tuple[float, float] = (0.5, 8.0),
    ) -> None:
        self._sd = import_sounddevice()
        self._query = device
        self.device_index, info = resolve_device(device)
        self._device_name = str(info["name"])
        self.name = f"mic:{info['name']}"
        self.native_rate = int(samplerate or info["default_samplerate"])
        self.ring = RingBuffer(int(ring_seconds * self.native_rate))
        self.clock = Clock()
        self.tally = Tally()
        self.status_flags = 0  # PortAudio's status flags of any kind, counted by the callback
        self.input_overflows = 0  # of which input overflows (audio PortAudio itself lost)
        self.reconnects = 0
        self.reconnect, self.reconnect_tries = reconnect, reconnect_tries
        self.timeout_s, self.first_audio_s, self.backoff_s = timeout_s, first_audio_s, backoff_s
        self._blocksize = blocksize
        self._stream = None
        self._lock = threading.Lock()  # opening vs stop() from another thread
        self._stopping = False
        self._dead = False  # PortAudio ended the stream on its own
        self._fresh = False  # audio arrived since the stream was opened
        self._opened_at = 0.0
        self._lost_at: float | None = None  # last audio before an outage
        self._lost_pos = 0
        self._failures = 0  # failed reopen attempts in a row
        self._next_try = 0.0
        self._outages: list[tuple[int, float]] = []  # (native position, seconds missed)
        self._outage_s = 0.0  # seconds missed before the last chunk's end
        self._chunker = Chunker()
        self._resampler = (
            None
            if self.native_rate == SAMPLE_RATE
            else soxr.ResampleStream(self.native_rate, SAMPLE_RATE, 1, dtype="float32")
        )
        self._native_block = self.native_rate // 10  # read 100 ms at a time from the ring
        self._flushed = False
        self._last_native = 0  # native position of the last chunk's end

    # ------------------------------------------------------------------ capture thread
    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # Runs on PortAudio's thread: stamp, copy into preallocated memory, nothing else.
        if status:
            self.status_flags += 1
            if getattr(status, "input_overflow", True):
                self.input_overflows += 1
        self.clock.mark(self.ring.total_written + frames, time.monotonic())
        self.ring.write(indata[:, 0])
        self._fresh = True

    def _finished(self) -> None:
        if not self._stopping:
            self._dead = True

    # ------------------------------------------------------------------ stream
    def _open(self) -> None:
        global _open_streams
        sd = self._sd
        with self._lock:
            if self._stopping:
                return
            self._dead = self._fresh = False
            try:
                stream = sd.InputStream(
                    device=self.device_index,
                    channels=1,
                    samplerate=self.native_rate,
                    dtype="float32",
                    blocksize=self._blocksize,
                    callback=self._callback,
                    finished_callback=self._finished,
                )
                _open_streams += 1  # counted from opening: rescan_devices must not close it
                self._stream = stream
                stream.start()
            except (sd.PortAudioError, ValueError) as e:
                self._close_locked()
                raise SourceError(
                    f"could not open input device {self.name} at {self.native_rate} Hz mono "
                    f"({e}); pick another with `soundflow devices` / --device"
                ) from None
            self._opened_at = time.monotonic()

    def _close_locked(self) -> None:
        global _open_streams
        if self._stream is not None:
            stream, self._stream = self._stream, None
            _open_streams -= 1
            try:
                stream.stop()
            except Exception:  # noqa: BLE001 - the device is gone already
                pass
            try:
                stream.close()
            except Exception:  # noqa: BLE001
                pass

    def start(self) -> None:
        self._open()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._close_locked()
        self.ring.close()

    @property
    def overruns(self) -> int:
        return self.ring.overruns

    @property
    def overrun_samples(self) -> int:
        return round(self.ring.overrun_samples * SAMPLE_RATE / self.native_rate)

    # ------------------------------------------------------------------ health
    def _backoff(self) -> float:
        low, high = self.backoff_s
        return min(high, low * 2 ** max(0, self._failures - 1))

    def _supervise(self) -> None:
        """No audio for a moment: decide whether the stream is lost and reopen it."""
        now = time.monotonic()
        if self._stream is not None:
            last = self.clock.last()
            try:
                active = self._stream.active
            except Exception:  # noqa: BLE001 - a stream PortAudio no longer knows is dead
                active = False
            if self._dead or not active:
                reason = "the stream stopped (a PortAudio error, or the sound server went away)"
            elif self._fresh and last is not None and now - last > self.timeout_s:
                reason = f"no audio for {now - last:.1f} s"
            elif not self._fresh and now - self._opened_at > self.first_audio_s:
                reason = f"no audio within {self.first_audio_s:.0f} s of opening it"
            else:
                return
            with self._lock:
                self._close_locked()
            if self._lost_at is None:
                self._lost_at = last if last is not None else self._opened_at
                self._lost_pos = self.ring.total_written
                self._failures = 0
                if not self.reconnect or self.reconnect_tries <= 0:
                    raise SourceError(
                        f"{self.name} lost: {reason}; check the device and sound server "
                        "(--reconnect retries it)"
                    )
                self._notice("error", "source_lost", f"{self.name} lost: {reason}; reconnecting")
            else:  # reopened, but no audio came
                self._failed(reason)
            self._next_try = now + self._backoff()
            return
        if now < self._next_try:
            time.sleep(min(0.1, self._next_try - now))
            return
        try:
            if self._failures:  # the server may be back under a new device list
                rescan_devices()
                try:
                    self.device_index, _ = resolve_device(self._device_name)
                except SourceError:
                    self.device_index, _ = resolve_device(self._query)
            self._open()
        except SourceError as e:
            self._failed(str(e))
            self._next_try = time.monotonic() + self._backoff()

    def _failed(self, reason: str) -> None:
        self._failures += 1
        lost_for = time.monotonic() - (self._lost_at or time.monotonic())
        if self._failures >= self.reconnect_tries:
            raise SourceError(
                f"{self.name} lost and not back after {self._failures} attempts over "
                f"{lost_for:.0f} s (last: {reason}); check the device and sound server, "
                "then restart"
            )
        self._notice(
            "warning",
            "reconnect_failed",
            f"{self.name}: reconnect attempt {self._failures}/{self.reconnect_tries} failed "
            f"({reason}); next in {self._backoff():.1f} s",
        )

    def _back(self) -> None:
        """Audio from a reopened stream: the outage is over."""
        first = self.clock.at(self._lost_pos + 1)
        back_at = first if first is not None else time.monotonic()
        missed = max(0.0, back_at - self._lost_at)  # type: ignore[operator]
        self._outages.append((self._lost_pos, missed))
        self._lost_at = None
        self._failures = 0
        self.reconnects += 1
        self.input_gaps += 1  # an outage is a gap in the input, as long as it lasted
        self.input_gap_s += missed
        self._notice(
            "info", "reconnected", f"{self.name} is back after {missed:.1f} s without audio"
        )

    # ------------------------------------------------------------------ reader
    def timing(self) -> tuple[float | None, float]:
        pos = self._last_native
        while self._outages and self._outages[0][0] < pos:
            self._outage_s += self._outages.pop(0)[1]
        return self.clock.at(pos), self.overrun_samples / SAMPLE_RATE + self._outage_s

    def _push(self, native: np.ndarray, last: bool = False) -> None:
        native = finite(native, self.tally)
        if self._resampler is None:
            self._chunker.push(native)
        else:
            self._chunker.push(self._resampler.resample_chunk(native, last=last))

    def _chunk_done(self, chunk: np.ndarray) -> np.ndarray:
        # Native position of the chunk's last sample: what was read, minus what the
        # chunker still holds (resampler delay is a few samples, not counted).
        behind = round(self._chunker.held * self.native_rate / SAMPLE_RATE)
        self._last_native = max(0, self.ring.read_position - behind)
        return chunk

    def read_chunk(self, n: int) -> np.ndarray | None:
        buf = np.empty(self._native_block, np.float32)
        while True:
            if self._lost_at is not None and self._fresh and self._stream is not None:
                self._back()
            chunk = self._chunker.pop(n)
            if chunk is not None:
                return self._chunk_done(chunk)
            if self.ring.read_into(buf, timeout=0.05):
                self._push(buf.copy())
                continue
            if self.ring.closed:
                break
            self._supervise()
        if not self._flushed:  # closed: drain the tail through the resampler
            self._push(self.ring.read_tail(), last=True)
            self._flushed = True
        chunk = self._chunker.pop(n, final=True)
        return None if chunk is None else self._chunk_done(chunk)
