"""Microphones through sounddevice/PortAudio (optional: `pip install soundflow[mic]`).

The PortAudio callback only copies its buffer into the ring (no lock, no allocation);
the reader resamples from the device's native rate to 16 kHz and cuts exact chunks.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np
import soxr

from soundflow.audio import SAMPLE_RATE
from soundflow.runtime.ring import RingBuffer
from soundflow.runtime.sources import MIC_HINT, Source, SourceError, _Chunker


def import_sounddevice() -> ModuleType:
    """sounddevice, or a SourceError with the install hint (no import at module load)."""
    try:
        return importlib.import_module("sounddevice")
    except ImportError:
        raise SourceError(f"microphone input needs sounddevice: {MIC_HINT}") from None
    except OSError as e:  # sounddevice is installed but libportaudio is not
        raise SourceError(f"PortAudio is not available ({e}): {MIC_HINT}") from None


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
        raise SourceError(f"PortAudio could not list devices ({e}); {MIC_HINT}") from None
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
    names = ", ".join(f"{d['index']}: {d['name']}" for d in list_input_devices(False)) or "none"
    raise SourceError(
        f"no usable input device {device!r} ({reason}); run `soundflow devices` "
        f"and pass --device INDEX or NAME (inputs: {names})"
    )


class MicSource(Source):
    """Live capture from an input device at its native rate, resampled to 16 kHz."""

    realtime = True

    def __init__(
        self,
        device: int | str | None = None,
        ring_seconds: float = 10.0,
        blocksize: int = 0,
        samplerate: int | None = None,
    ) -> None:
        self._sd = import_sounddevice()
        self.device_index, info = resolve_device(device)
        self.name = f"mic:{info['name']}"
        self.native_rate = int(samplerate or info["default_samplerate"])
        self.ring = RingBuffer(int(ring_seconds * self.native_rate))
        self.status_flags = 0  # PortAudio's own input overflows, counted by the callback
        self._blocksize = blocksize
        self._stream = None
        self._chunker = _Chunker()
        self._resampler = (
            None
            if self.native_rate == SAMPLE_RATE
            else soxr.ResampleStream(self.native_rate, SAMPLE_RATE, 1, dtype="float32")
        )
        self._native_block = self.native_rate // 10  # read 100 ms at a time from the ring
        self._flushed = False

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # Runs on PortAudio's thread: copy into preallocated memory, nothing else.
        if status:
            self.status_flags += 1
        self.ring.write(indata[:, 0])

    def start(self) -> None:
        global _open_streams
        sd = self._sd
        try:
            stream = sd.InputStream(
                device=self.device_index,
                channels=1,
                samplerate=self.native_rate,
                dtype="float32",
                blocksize=self._blocksize,
                callback=self._callback,
            )
            _open_streams += 1  # counted from opening: rescan_devices must not close it
            self._stream = stream
            stream.start()
        except (sd.PortAudioError, ValueError) as e:
            if self._stream is not None:  # opened but would not start: let it go
                self._stream.close()
                self._stream = None
                _open_streams -= 1
            raise SourceError(
                f"could not open input device {self.name} at {self.native_rate} Hz mono "
                f"({e}); pick another with `soundflow devices` / --device"
            ) from None

    def stop(self) -> None:
        global _open_streams
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            except self._sd.PortAudioError:
                pass  # the device is gone already; what was captured is in the ring
            self._stream = None
            _open_streams -= 1
        self.ring.close()

    @property
    def overruns(self) -> int:
        return self.ring.overruns

    @property
    def overrun_samples(self) -> int:
        return self.ring.overrun_samples

    def _push(self, native: np.ndarray, last: bool = False) -> None:
        if self._resampler is None:
            self._chunker.push(native)
        else:
            self._chunker.push(self._resampler.resample_chunk(native, last=last))

    def read_chunk(self, n: int) -> np.ndarray | None:
        buf = np.empty(self._native_block, np.float32)
        while True:
            chunk = self._chunker.pop(n)
            if chunk is not None:
                return chunk
            if self.ring.read_into(buf):
                self._push(buf.copy())
                continue
            if not self._flushed:  # closed: drain the tail through the resampler
                self._push(self.ring.read_tail(), last=True)
                self._flushed = True
            return self._chunker.pop(n, final=True)
