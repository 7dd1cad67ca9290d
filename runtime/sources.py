"""Audio sources: files, raw PCM on stdin, in-memory arrays and microphones.

Every source hands out exact chunks of 16 kHz mono float32 (`read_chunk`), whatever the
input's rate and channel count. Two ways to deliver them:

- pulled ("fast"): the reader pulls blocks straight from the decoder/resampler, as fast
  as it likes; nothing is ever dropped.
- live ("realtime"): a capture thread (the PortAudio callback for a microphone, a pacing
  thread for a file or stdin) writes into a `RingBuffer` as the audio "happens"; the
  reader takes chunks from the ring and, if it falls behind, the oldest audio is dropped
  and counted as an overrun, exactly as with a real microphone.

`stop()` ends capture; the reader then still gets every sample already captured (the last
partial chunk zero-padded), then `None`.
"""

from __future__ import annotations

import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from soundflow.audio import SAMPLE_RATE
from soundflow.runtime.ring import RingBuffer

MIC_HINT = "pip install soundflow[mic]  (and the PortAudio library: apt install libportaudio2)"
RAW_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
_BLOCK = 4096  # frames per decode/resample step


class SourceError(RuntimeError):
    """An input the runtime cannot read; the message says what to do."""


# ----------------------------------------------------------------------------- blocks
def _to_mono(x: np.ndarray) -> np.ndarray:
    return x if x.ndim == 1 else x.mean(axis=1, dtype=np.float32)


def _resampled(blocks: Iterator[np.ndarray], rate: int) -> Iterator[np.ndarray]:
    """Mono float32 blocks at `rate` -> 16 kHz (soxr's streaming resampler)."""
    if rate == SAMPLE_RATE:
        yield from blocks
        return
    rs = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    for b in blocks:
        out = rs.resample_chunk(b)
        if out.size:
            yield out
    out = rs.resample_chunk(np.zeros(0, np.float32), last=True)
    if out.size:
        yield out


def _wav_data_bytes(path: Path) -> tuple[int, int] | None:
    """(declared data bytes, bytes present) of a RIFF/WAVE file, or None if not a WAV.

    libsndfile quietly shortens a truncated WAV; the header still says what it held.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            hdr = f.read(8)
            if len(hdr) < 8:
                return None
            cid, n = hdr[:4], struct.unpack("<I", hdr[4:])[0]
            if cid == b"data":
                if n in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                    return None
                return n, size - f.tell()
            f.seek(n + (n & 1), 1)


def file_blocks(path: str | Path) -> tuple[Iterator[np.ndarray], float]:
    """Open an audio file (wav, flac, ogg, ... via libsndfile); return 16 kHz mono blocks
    and the duration in seconds. Raises SourceError for a missing, unreadable or
    truncated file (truncation found mid-stream is raised by the iterator, after the
    audio before it)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such file; check the path given to --input")
    try:
        f = sf.SoundFile(str(path))
    except sf.SoundFileError as e:
        raise SourceError(
            f"{path}: not a readable audio file ({e}); convert it to WAV or FLAC, "
            "e.g. `sox IN -r 16000 -c 1 OUT.wav`"
        ) from None
    wav = _wav_data_bytes(path)
    truncated = wav is not None and wav[1] < wav[0]
    rate, duration = f.samplerate, f.frames / f.samplerate

    def raw() -> Iterator[np.ndarray]:
        with f:
            while True:
                try:
                    b = f.read(_BLOCK, dtype="float32", always_2d=True)
                except sf.SoundFileError as e:
                    raise SourceError(
                        f"{path}: truncated or corrupt after {f.tell() / rate:.2f} s ({e}); "
                        "re-copy or re-encode the file"
                    ) from None
                if not len(b):
                    break
                yield _to_mono(b)
        if truncated:
            raise SourceError(
                f"{path}: truncated: its header declares {wav[0]} bytes of audio, only "
                f"{wav[1]} are present (processed {duration:.2f} s); re-copy the file"
            )

    return _resampled(raw(), rate), duration


def array_blocks(audio: np.ndarray, sample_rate: int) -> Iterator[np.ndarray]:
    """In-memory audio, shape (frames,) or (frames, channels), any rate."""
    audio = np.asarray(audio)
    if audio.ndim == 2 and audio.shape[0] < audio.shape[1] and audio.shape[0] <= 8:
        raise SourceError(f"audio has shape {audio.shape}: pass (frames, channels), e.g. audio.T")
    if audio.ndim not in (1, 2) or sample_rate <= 0:
        raise SourceError(
            f"audio must be (frames,) or (frames, channels) at a positive rate, "
            f"got shape {audio.shape} at {sample_rate} Hz"
        )
    if audio.dtype.kind == "i":
        audio = audio.astype(np.float32) / np.float32(np.iinfo(audio.dtype).max + 1)
    mono = _to_mono(audio.astype(np.float32, copy=False))
    return _resampled((mono[i : i + _BLOCK] for i in range(0, len(mono), _BLOCK)), sample_rate)


def raw_blocks(
    stream: BinaryIO, fmt: str = "s16le", rate: int = SAMPLE_RATE, channels: int = 1
) -> Iterator[np.ndarray]:
    """Headerless PCM (e.g. `arecord -f S16_LE -r 16000 -c 1 -t raw | soundflow listen -`)."""
    if fmt not in RAW_FORMATS:
        raise SourceError(f"raw format {fmt!r} is not supported; use one of {sorted(RAW_FORMATS)}")
    if not (1 <= channels <= 64) or not (1000 <= rate <= 384_000):
        raise SourceError(
            f"raw PCM at {rate} Hz with {channels} channels is not plausible; "
            "set --raw-rate and --raw-channels to what the producer writes"
        )
    dtype = RAW_FORMATS[fmt]
    frame = dtype.itemsize * channels

    def raw() -> Iterator[np.ndarray]:
        pending = b""
        while True:
            data = stream.read(_BLOCK * frame)
            if not data:
                break
            data = pending + data
            usable = len(data) - len(data) % frame
            pending = data[usable:]
            if not usable:
                continue
            x = np.frombuffer(data[:usable], dtype=dtype).reshape(-1, channels)
            x = x.astype(np.float32) / 32768.0 if fmt == "s16le" else x.astype(np.float32)
            yield _to_mono(x)
        if pending:
            raise SourceError(
                f"stdin ended inside a sample frame ({len(pending)} stray bytes): the "
                f"stream is truncated or not {fmt} with {channels} channel(s); check "
                "--raw-format/--raw-channels"
            )

    return _resampled(raw(), rate)


# ----------------------------------------------------------------------------- sources
class Source:
    """Base: `read_chunk(n)` blocks until the next exact chunk, or returns None at the end
    (after `stop()`, once what was captured is read out)."""

    name = "source"
    realtime = False
    duration: float | None = None  # seconds, when known up front

    def start(self) -> None:
        pass

    def stop(self) -> None:
        """Stop capturing; audio already captured is still read out."""

    def close(self) -> None:
        self.stop()

    @property
    def overruns(self) -> int:
        return 0

    @property
    def overrun_samples(self) -> int:
        return 0

    def read_chunk(self, n: int) -> np.ndarray | None:
        raise NotImplementedError


class _Chunker:
    """Cuts arbitrary blocks into exact chunks; the final partial chunk is zero-padded."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._have = 0

    def push(self, b: np.ndarray) -> None:
        if b.size:
            self._parts.append(b)
            self._have += b.size

    def pop(self, n: int, final: bool = False) -> np.ndarray | None:
        if self._have >= n or (final and self._have):
            buf = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
            chunk = np.zeros(n, np.float32)
            k = min(n, buf.size)
            chunk[:k] = buf[:k]
            rest = buf[k:]
            self._parts, self._have = ([rest] if rest.size else []), rest.size
            return chunk
        return None


class PulledSource(Source):
    """Reads as fast as the consumer asks ("--fast"); never drops audio."""

    def __init__(self, blocks: Iterator[np.ndarray], name: str, duration: float | None = None):
        self._blocks = blocks
        self._chunker = _Chunker()
        self._done = False
        self._stopped = False
        self._error: SourceError | None = None
        self.name = name
        self.duration = duration

    def stop(self) -> None:
        self._stopped = True

    def read_chunk(self, n: int) -> np.ndarray | None:
        while not self._done and not self._stopped and self._chunker._have < n:
            try:
                b = next(self._blocks, None)
            except SourceError as e:  # hand out the audio before the damage first
                self._error, b = e, None
            if b is None:
                self._done = True
            else:
                self._chunker.push(b)
        chunk = self._chunker.pop(n, final=self._done or self._stopped)
        if chunk is None and self._error is not None:
            error, self._error = self._error, None
            raise error
        return chunk


class PacedSource(Source):
    """Plays blocks into a ring at real time, like a microphone ("--realtime")."""

    realtime = True

    def __init__(
        self,
        blocks: Iterator[np.ndarray],
        name: str,
        duration: float | None = None,
        ring_seconds: float = 10.0,
        block_samples: int = SAMPLE_RATE // 50,  # 20 ms, a typical callback period
    ):
        self._blocks = blocks
        self.ring = RingBuffer(int(ring_seconds * SAMPLE_RATE))
        self._block = block_samples
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0: float | None = (
            None  # when pacing started (monotonic); chunk i ends at t0 + (i+1)*chunk
        )
        self.error: BaseException | None = None
        self.name = name
        self.duration = duration

    def start(self) -> None:
        self._thread = threading.Thread(target=self._pump, name="soundflow-pace", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        self.t0 = t0 = time.monotonic()  # stream time 0 on the monotonic clock
        sent = 0
        try:
            for b in self._blocks:
                for i in range(0, b.size, self._block):
                    piece = b[i : i + self._block]
                    # A block "arrives" when its last sample would have been captured.
                    wait = t0 + (sent + piece.size) / SAMPLE_RATE - time.monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        return
                    self.ring.write(piece)
                    sent += piece.size
        except SourceError as e:  # surfaced to the reader after the audio before it
            self.error = e
        finally:
            self.ring.close()

    def stop(self) -> None:
        self._stop.set()
        self.ring.close()

    @property
    def overruns(self) -> int:
        return self.ring.overruns

    @property
    def overrun_samples(self) -> int:
        return self.ring.overrun_samples

    def read_chunk(self, n: int) -> np.ndarray | None:
        chunk = self.ring.read(n)
        if chunk is not None or not self.ring.closed:
            return chunk
        tail = self.ring.read_tail()
        if tail.size:
            padded = np.zeros(n, np.float32)
            padded[: tail.size] = tail
            return padded
        if self.error is not None:
            raise self.error
        return None


def file_source(path: str | Path, realtime: bool = False) -> Source:
    """A file paced at real time (like a microphone) or read as fast as possible."""
    blocks, duration = file_blocks(path)
    name = str(path)
    return PacedSource(blocks, name, duration) if realtime else PulledSource(blocks, name, duration)


def stdin_source(
    fmt: str = "s16le",
    rate: int = SAMPLE_RATE,
    channels: int = 1,
    realtime: bool = False,
    stream: BinaryIO | None = None,
) -> Source:
    blocks = raw_blocks(stream if stream is not None else sys.stdin.buffer, fmt, rate, channels)
    return PacedSource(blocks, "stdin") if realtime else PulledSource(blocks, "stdin")


def array_source(audio: np.ndarray, sample_rate: int, realtime: bool = False) -> Source:
    blocks = array_blocks(audio, sample_rate)
    duration = len(audio) / sample_rate
    if realtime:
        return PacedSource(blocks, "array", duration)
    return PulledSource(blocks, "array", duration)
