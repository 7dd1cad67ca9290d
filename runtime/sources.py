"""Audio sources: files, PCM on stdin, in-memory arrays (microphones: mic.py, pushed audio:
push.py), each handed out as exact chunks of 16 kHz mono float32 (`read_chunk`).

Two ways to deliver them:

- pulled ("fast"): the reader pulls blocks straight from the decoder/resampler, as fast
  as it likes; nothing is ever dropped.
- live ("realtime"): a capture thread (the PortAudio callback for a microphone, a pacing
  thread for a file or stdin, the application's own thread for pushed audio) writes into
  a `RingBuffer` as the audio "happens"; the reader takes chunks from the ring and, if it
  falls behind, the oldest audio is dropped and counted as an overrun, as with a real
  microphone. Every write is stamped with its time, so a chunk's latency counts from when
  its last sample arrived, and a live source that goes quiet is reported (`on_notice`).

Samples that are NaN or Inf become 0 (counted) before they reach a resampler, where one
of them would smear over the filter's length. `stop()` ends capture; the reader then still
gets every sample already captured (the last partial chunk zero-padded), then `None`.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from soundflow.audio import SAMPLE_RATE
from soundflow.runtime.ring import RingBuffer

SOUNDDEVICE_HINT = "pip install 'soundflow[mic]'"
PORTAUDIO_HINT = "install the PortAudio library (apt install libportaudio2)"
RAW_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
_BLOCK = 4096  # frames per decode/resample step
_BUFFERED_MAX = 1 << 30  # bytes of FLAC/Ogg read from stdin before it is decoded
_FIRST_AUDIO_S = 10.0  # a live source may take this long to deliver its first sample


class SourceError(RuntimeError):
    """An input the runtime cannot read; the message says what to do."""


class Tally:
    """Counts what a source had to repair; shared by its block generators."""

    def __init__(self) -> None:
        self.nonfinite = 0


def finite(x: np.ndarray, tally: Tally | None) -> np.ndarray:
    """`x` with NaN/Inf replaced by 0, counted in `tally`; `x` itself when it is clean."""
    ok = np.isfinite(x)
    if ok.all():
        return x
    if tally is not None:
        tally.nonfinite += int(ok.size - np.count_nonzero(ok))
    return np.where(ok, x, np.float32(0)).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- blocks
def _to_mono(x: np.ndarray) -> np.ndarray:
    # float64 sums: absurd (corrupt) float32 samples must not overflow into Inf here
    return x if x.ndim == 1 else x.mean(axis=1, dtype=np.float64).astype(np.float32)


def _resampled(
    blocks: Iterator[np.ndarray], rate: int, tally: Tally | None = None
) -> Iterator[np.ndarray]:
    """Mono float32 blocks at `rate` -> 16 kHz (soxr's streaming resampler)."""
    if rate == SAMPLE_RATE:
        for b in blocks:
            yield finite(b, tally)
        return
    rs = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    for b in blocks:
        out = rs.resample_chunk(finite(b, tally))
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


def _sf_blocks(f: sf.SoundFile, label: str, truncated_note=None) -> Iterator[np.ndarray]:
    rate = f.samplerate
    with f:
        while True:
            try:
                b = f.read(_BLOCK, dtype="float32", always_2d=True)
            except (sf.SoundFileError, RuntimeError) as e:
                raise SourceError(
                    f"{label}: truncated or corrupt after {f.tell() / rate:.2f} s ({e}); "
                    "re-copy or re-encode the file"
                ) from None
            if not len(b):
                break
            yield _to_mono(b)
    if truncated_note is not None:
        raise SourceError(truncated_note)


def file_blocks(path: str | Path, tally: Tally | None = None) -> tuple[Iterator[np.ndarray], float]:
    """Open an audio file (wav, flac, ogg, ... via libsndfile); return 16 kHz mono blocks
    and the duration in seconds. Raises SourceError for a missing, unreadable or
    truncated file (truncation found mid-stream is raised by the iterator, after the
    audio before it)."""
    path = Path(path)
    if path.is_dir():
        raise SourceError(f"{path} is a directory; pass an audio file (wav/flac/ogg) to --input")
    if not path.is_file():
        raise SourceError(f"{path}: no such file; check the path given to --input")
    try:
        f = sf.SoundFile(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as e:
        raise SourceError(
            f"{path}: not a readable audio file ({str(e).strip()[:200]}); convert it to WAV "
            "or FLAC, e.g. `sox IN -r 16000 -c 1 OUT.wav`"
        ) from None
    if f.samplerate <= 0 or f.channels <= 0:
        f.close()
        raise SourceError(
            f"{path}: header says {f.samplerate} Hz, {f.channels} channels; re-encode it"
        )
    try:
        wav = _wav_data_bytes(path)
    except (OSError, struct.error):
        wav = None
    note = None
    if wav is not None and wav[1] < wav[0]:
        note = (
            f"{path}: truncated: its header declares {wav[0]} bytes of audio, only "
            f"{wav[1]} are present (processed {f.frames / f.samplerate:.2f} s); re-copy the file"
        )
    rate, duration = f.samplerate, f.frames / f.samplerate
    return _resampled(_sf_blocks(f, str(path), note), rate, tally), duration


def array_blocks(
    audio: np.ndarray, sample_rate: int, tally: Tally | None = None
) -> Iterator[np.ndarray]:
    """In-memory audio, shape (frames,) or (frames, channels), any rate."""
    mono = as_mono_float(audio, sample_rate)
    blocks = (mono[i : i + _BLOCK] for i in range(0, len(mono), _BLOCK))
    return _resampled(blocks, sample_rate, tally)


def as_mono_float(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(frames,) or (frames, channels), float or integer PCM -> mono float32."""
    audio = np.asarray(audio)
    if audio.ndim == 2 and audio.shape[0] < audio.shape[1] and audio.shape[0] <= 8:
        raise SourceError(f"audio has shape {audio.shape}: pass (frames, channels), e.g. audio.T")
    if audio.ndim not in (1, 2) or not sample_rate or sample_rate <= 0:
        raise SourceError(
            f"audio must be (frames,) or (frames, channels) at a positive rate, "
            f"got shape {audio.shape} at {sample_rate} Hz"
        )
    if audio.dtype.kind in "iu":
        info = np.iinfo(audio.dtype)
        mid = (int(info.max) + int(info.min) + 1) / 2  # unsigned PCM is centred at 2**(b-1)
        audio = (audio.astype(np.float32) - np.float32(mid)) / np.float32(info.max - mid + 1)
    elif audio.dtype.kind != "f":
        raise SourceError(f"audio of dtype {audio.dtype} is not PCM: pass float or integer samples")
    return _to_mono(audio.astype(np.float32, copy=False))


# ----------------------------------------------------------------------------- stdin
def stdin_is_live(stream: object) -> bool:
    """A pipe, socket or terminal is fed by a running producer; a regular file is not."""
    try:
        mode = os.fstat(stream.fileno()).st_mode  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False
    return not stat.S_ISREG(mode)


class _Bytes:
    """A byte stream read as soon as data is there (`read1`), with a look-ahead."""

    def __init__(self, stream: BinaryIO) -> None:
        self._read = getattr(stream, "read1", None) or stream.read
        try:  # the bare descriptor: a BufferedReader's lock, held by a read blocked at
            fd = stream.fileno()  # exit, would abort the interpreter's shutdown
            self._read = lambda n: os.read(fd, n)
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            pass
        self._pending = b""
        self.total = 0  # bytes handed out

    def read(self, n: int) -> bytes:
        if self._pending:
            out, self._pending = self._pending[:n], self._pending[n:]
        else:
            try:
                out = self._read(n)
            except (OSError, ValueError) as e:
                raise SourceError(f"stdin: read failed ({e}); check the producer") from None
        self.total += len(out)
        return out or b""

    def exactly(self, n: int) -> bytes:
        parts, have = [], 0
        while have < n:
            d = self.read(n - have)
            if not d:
                break
            parts.append(d)
            have += len(d)
        return b"".join(parts)

    def unread(self, data: bytes) -> None:
        self._pending = data + self._pending
        self.total -= len(data)


def _decoder(kind: str, bits: int) -> tuple[int, Callable[[bytes], np.ndarray]] | None:
    """(bytes per sample, bytes -> float32) for PCM of `kind` ("int"/"float") and `bits`."""
    if kind == "int" and bits == 8:
        return 1, lambda b: (np.frombuffer(b, np.uint8).astype(np.float32) - 128) / 128
    if kind == "int" and bits == 16:
        return 2, lambda b: np.frombuffer(b, "<i2").astype(np.float32) / 32768
    if kind == "int" and bits == 24:

        def s24(b: bytes) -> np.ndarray:
            x = np.frombuffer(b, np.uint8).reshape(-1, 3).astype(np.int32)
            v = x[:, 0] | (x[:, 1] << 8) | (x[:, 2] << 16)
            return (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / (1 << 23)

        return 3, s24
    if kind == "int" and bits == 32:
        return 4, lambda b: np.frombuffer(b, "<i4").astype(np.float32) / 2**31
    if kind == "float" and bits == 32:
        return 4, lambda b: np.frombuffer(b, "<f4").astype(np.float32)
    if kind == "float" and bits == 64:
        return 8, lambda b: np.frombuffer(b, "<f8").astype(np.float32)
    return None


def _pcm_blocks(
    src: _Bytes,
    decode: Callable[[bytes], np.ndarray],
    width: int,
    channels: int,
    declared: int | None,
    live: bool,
    what: str,
) -> Iterator[np.ndarray]:
    """Interleaved PCM frames -> mono float32 blocks; `declared` bytes, or until EOF."""
    frame = width * channels
    pending, left = b"", declared
    while left is None or left > 0:
        data = src.read(_BLOCK * frame if left is None else min(_BLOCK * frame, left))
        if not data:
            break
        if left is not None:
            left -= len(data)
        data = pending + data
        usable = len(data) - len(data) % frame
        pending = data[usable:]
        if usable:
            yield _to_mono(decode(data[:usable]).reshape(-1, channels))
    if left:  # the header said more was coming
        raise SourceError(
            f"stdin: {what} ended {left} bytes before the length its header declares: the "
            "producer stopped or died mid-stream; check it and restart"
        )
    if pending:
        raise SourceError(
            f"stdin ended inside a sample frame ({len(pending)} stray bytes): the "
            f"stream is truncated or not {what}; check --raw-format/--raw-channels"
        )
    if live and declared is None:
        raise SourceError(
            "stdin closed: the producer ended or died (live input is expected to run "
            "until stopped); restart it, or pass --fast to read a finite stream to its end"
        )


def _wav_stream(src: _Bytes, live: bool) -> tuple[Iterator[np.ndarray], int]:
    """A RIFF/WAVE byte stream, read as it arrives (`arecord -t wav`, `sox ... -t wav -`)."""
    head = src.exactly(12)
    if len(head) < 12 or head[8:12] != b"WAVE":
        raise SourceError("stdin: starts with RIFF but is not a WAVE file; send WAV or raw PCM")
    fmt = None
    while True:
        hdr = src.exactly(8)
        if len(hdr) < 8:
            raise SourceError("stdin: WAV header ends before its audio; the producer died early")
        cid, n = hdr[:4], struct.unpack("<I", hdr[4:])[0]
        if cid == b"fmt ":
            body = src.exactly(n + (n & 1))
            if len(body) < 16:
                raise SourceError("stdin: WAV `fmt ` chunk is truncated; re-encode the stream")
            tag, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: GUID's first two bytes
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            break
        elif n > 1 << 24:
            raise SourceError("stdin: WAV has a 16 MB+ chunk before its audio; not a stream")
        else:
            src.exactly(n + (n & 1))
    if fmt is None:
        raise SourceError("stdin: WAV has no `fmt ` chunk before its audio; re-encode it")
    tag, channels, rate, bits = fmt
    kind = {1: "int", 3: "float"}.get(tag)
    dec = _decoder(kind, bits) if kind else None
    if dec is None or not (1 <= channels <= 64) or not (1000 <= rate <= 384_000):
        raise SourceError(
            f"stdin: WAV of format {tag}, {bits} bits, {channels} channels, {rate} Hz is not "
            "supported; send 8/16/24/32-bit integer or float PCM (e.g. `sox IN -b 16 -t wav -`)"
        )
    # Streaming writers cannot know the length: 0, 0xFFFFFFFF, or arecord's 0x7FFFF000-ish.
    declared = None if n == 0 or n >= 0x7FFF0000 else n
    width, decode = dec
    return _pcm_blocks(src, decode, width, channels, declared, live, "WAV"), rate


def _buffered_container(src: _Bytes, kind: str) -> tuple[Iterator[np.ndarray], int]:
    """FLAC/Ogg need look-back to decode: read stdin to its end, then decode it."""
    parts, have = [], 0
    while d := src.read(1 << 20):
        parts.append(d)
        have += len(d)
        if have > _BUFFERED_MAX:
            raise SourceError(
                f"stdin: {kind} over 1 GiB cannot be buffered; decode it first, e.g. "
                "`sox IN -b 16 -r 16000 -c 1 -t raw - | soundflow listen --input -`"
            )
    try:
        f = sf.SoundFile(io.BytesIO(b"".join(parts)))
    except (sf.SoundFileError, RuntimeError) as e:
        raise SourceError(f"stdin: {kind} stream is not decodable ({e}); re-encode it") from None
    return _sf_blocks(f, f"stdin ({kind})"), f.samplerate


def raw_blocks(
    stream: BinaryIO,
    fmt: str = "s16le",
    rate: int = SAMPLE_RATE,
    channels: int = 1,
    live: bool = False,
    tally: Tally | None = None,
) -> Iterator[np.ndarray]:
    """PCM on a byte stream (e.g. `arecord -f S16_LE -r 16000 -c 1 -t raw | soundflow
    listen -`). A stream that starts as WAV is read by its header; FLAC and Ogg are
    buffered and decoded; MP3 and Matroska are refused. `live`: the stream comes from a
    running producer, so reaching its end (without a declared length) is an error."""
    if fmt not in RAW_FORMATS:
        raise SourceError(f"raw format {fmt!r} is not supported; use one of {sorted(RAW_FORMATS)}")
    if not (1 <= channels <= 64) or not (1000 <= rate <= 384_000):
        raise SourceError(
            f"raw PCM at {rate} Hz with {channels} channels is not plausible; "
            "set --raw-rate and --raw-channels to what the producer writes"
        )

    def sniffed() -> Iterator[np.ndarray]:
        src = _Bytes(stream)
        head = src.exactly(4)
        src.unread(head)
        if head == b"RIFF":
            blocks, r = _wav_stream(src, live)
        elif head in (b"fLaC", b"OggS"):
            blocks, r = _buffered_container(src, "FLAC" if head == b"fLaC" else "Ogg")
        elif head[:3] == b"ID3" or head == b"\x1a\x45\xdf\xa3":
            raise SourceError(
                "stdin looks like MP3 or Matroska, which soundflow does not decode; convert "
                "it, e.g. `ffmpeg -i IN -f s16le -ar 16000 -ac 1 - | soundflow listen --input -`"
            )
        else:
            kind, bits = ("int", 16) if fmt == "s16le" else ("float", 32)
            width, decode = _decoder(kind, bits)  # type: ignore[misc]
            what = f"{fmt} with {channels} channel(s)"
            blocks = _pcm_blocks(src, decode, width, channels, None, live, what)
            r = rate
        yield from _resampled(blocks, r, tally)

    return sniffed()


# ----------------------------------------------------------------------------- sources
class Source:
    """Base: `read_chunk(n)` blocks until the next exact chunk, or returns None at the end
    (after `stop()`, once what was captured is read out).

    Live sources also say, after each chunk, when its last sample arrived (`timing`), and
    report their health through `on_notice(type, kind, text)`, which the loop sets.
    """

    name = "source"
    realtime = False
    duration: float | None = None  # seconds, when known up front
    on_notice: Callable[[str, str, str], None] | None = None

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
        """16 kHz samples dropped because the reader fell behind."""
        return 0

    input_overflows = 0  # the device's own overflow flags
    input_gaps = 0  # times the source delivered nothing for longer than its gap limit
    input_gap_s = 0.0
    reconnects = 0

    @property
    def nonfinite_samples(self) -> int:
        tally = getattr(self, "tally", None)
        return tally.nonfinite if tally is not None else 0

    def timing(self) -> tuple[float | None, float]:
        """For the chunk just read: (monotonic time its last sample arrived, or None when
        the source has no clock; seconds of audio skipped before it: drops, outages)."""
        return None, self.overrun_samples / SAMPLE_RATE

    def read_chunk(self, n: int) -> np.ndarray | None:
        raise NotImplementedError

    def _notice(self, type_: str, kind: str, text: str) -> None:
        if self.on_notice is not None:
            self.on_notice(type_, kind, text)


class Chunker:
    """Cuts arbitrary blocks into exact chunks; the final partial chunk is zero-padded."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._have = 0

    def push(self, b: np.ndarray) -> None:
        if b.size:
            self._parts.append(b)
            self._have += b.size

    @property
    def held(self) -> int:
        """Samples pushed and not yet popped."""
        return self._have

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


class Clock:
    """When each write into a ring arrived: (end position, monotonic time) marks.

    The writer marks before it writes, so every readable sample has a mark; the reader
    asks for the time of the write that brought sample `pos - 1` and forgets older marks.
    A deque's append and popleft are atomic, so neither side takes a lock.
    """

    def __init__(self, keep: int = 8192) -> None:
        self._marks: deque[tuple[int, float]] = deque(maxlen=keep)

    def mark(self, end: int, t: float) -> None:
        self._marks.append((end, t))

    def last(self) -> float | None:
        try:
            return self._marks[-1][1]
        except IndexError:
            return None

    def at(self, pos: int) -> float | None:
        marks = self._marks
        while True:
            try:
                end, t = marks[0]
            except IndexError:
                return None
            if end >= pos or len(marks) == 1:
                return t
            try:
                marks.popleft()
            except IndexError:
                return None


class PulledSource(Source):
    """Reads as fast as the consumer asks ("--fast"); never drops audio."""

    def __init__(
        self,
        blocks: Iterator[np.ndarray],
        name: str,
        duration: float | None = None,
        tally: Tally | None = None,
    ):
        self._blocks = blocks
        self._chunker = Chunker()
        self._done = False
        self._stopped = False
        self._error: SourceError | None = None
        self.name = name
        self.duration = duration
        self.tally = tally

    def stop(self) -> None:
        self._stopped = True

    def read_chunk(self, n: int) -> np.ndarray | None:
        while not self._done and not self._stopped and self._chunker._have < n:
            try:
                b = next(self._blocks, None)
            except SourceError as e:  # hand out the audio before the damage first
                self._error, b = e, None
            except Exception as e:  # noqa: BLE001 - a failing decoder is a source error too
                self._error, b = _wrap(self.name, e), None
            if b is None:
                self._done = True
            else:
                self._chunker.push(b)
        chunk = self._chunker.pop(n, final=self._done or self._stopped)
        if chunk is None and self._error is not None:
            error, self._error = self._error, None
            raise error
        return chunk


def _wrap(name: str, e: BaseException) -> SourceError:
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return SourceError(f"{name}: {type(e).__name__}: {first}; check the input")


class RingReader(Source):
    """Reader side shared by ring-fed live sources: waits for a chunk while watching for
    gaps, reads the tail after `stop()`, stamps each chunk with its arrival time."""

    realtime = True

    def __init__(self, name: str, ring_samples: int, gap_s: float = 1.0) -> None:
        self.name = name
        self.ring = RingBuffer(ring_samples)
        self.clock = Clock()
        self.gap_s = gap_s
        self.error: BaseException | None = None
        self.tally = Tally()
        self.input_gaps = 0
        self.input_gap_s = 0.0
        self._started_at: float | None = None
        self._gap_from: float | None = None  # arrival of the last audio before a gap
        self._gap_pos = 0  # and the ring position it ended at
        self._last_pos = 0

    @property
    def overruns(self) -> int:
        return self.ring.overruns

    @property
    def overrun_samples(self) -> int:
        return self.ring.overrun_samples

    def timing(self) -> tuple[float | None, float]:
        return self.clock.at(self._last_pos), self.ring.overrun_samples / SAMPLE_RATE

    def watch(self) -> None:
        """Called while waiting (by `read_chunk`, or by a driver that reads only ready
        audio): open or close a gap from the newest write's time."""
        now = time.monotonic()
        last = self.clock.last()
        if self._gap_from is not None:
            if last is not None and last > self._gap_from:
                # ends where the first audio after it began (a burst that made up for the
                # gap arrives all at once, but its first sample is what ended the silence)
                first = self.clock.at(self._gap_pos + 1)
                self._close_gap(first if first is not None and first > self._gap_from else last)
            return
        if last is None:  # nothing yet: a producer may take a moment to start
            start = self._started_at if self._started_at is not None else now
            if now - start > max(self.gap_s, _FIRST_AUDIO_S):
                self._gap_from, self._gap_pos = start, 0
                self._notice(
                    "warning",
                    "input_gap",
                    f"{self.name}: no audio yet after {now - start:.1f} s; is the producer running?",
                )
            return
        if now - last > self.gap_s and not self.ring.closed:
            self._gap_from, self._gap_pos = last, self.ring.total_written
            self._notice(
                "warning",
                "input_gap",
                f"{self.name}: no audio for {now - last:.1f} s; is the producer still running?",
            )

    def _close_gap(self, until: float) -> None:
        gap = max(0.0, until - self._gap_from)  # type: ignore[operator]
        self._gap_from = None
        self.input_gaps += 1
        self.input_gap_s += gap
        self._notice("info", "input_resumed", f"{self.name}: audio again after a {gap:.1f} s gap")

    def read_chunk(self, n: int) -> np.ndarray | None:
        if self._started_at is None:
            self._started_at = time.monotonic()
        while True:
            chunk = self.ring.read(n, timeout=0.1)
            if chunk is not None:
                self._last_pos = self.ring.read_position
                if self._gap_from is not None:
                    self.watch()
                return chunk
            if self.ring.closed:
                break
            self.watch()
        if self._gap_from is not None:
            self._close_gap(time.monotonic())
        tail = self.ring.read_tail()
        self._last_pos = self.ring.read_position
        if tail.size:
            padded = np.zeros(n, np.float32)
            padded[: tail.size] = tail
            return padded
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return None


class PacedSource(RingReader):
    """Plays blocks into a ring at real time, like a microphone ("--realtime").

    `follow`: the blocks come from a live producer (a pipe), already at real time, so they
    are not paced but passed on as they come, each stamped with when its audio was made: the
    producer's clock, estimated as the earliest start consistent with every read so far (a
    block cannot have been made after it was read). Audio that queued in the pipe while the
    model loaded therefore counts its wait as latency and drains as fast as the loop can
    take it, and a producer that pauses for longer than JUMP_S restarts the estimate, so a
    gap is reported as long as it was.
    """

    JUMP_S = 0.25  # a read this much later than the producer's clock says: it paused

    def __init__(
        self,
        blocks: Iterator[np.ndarray],
        name: str,
        duration: float | None = None,
        ring_seconds: float = 10.0,
        block_samples: int = SAMPLE_RATE // 50,  # 20 ms, a typical callback period
        follow: bool = False,
        gap_s: float = 1.0,
        tally: Tally | None = None,
        waiting: Callable[[], float] | None = None,
    ):
        super().__init__(name, int(ring_seconds * SAMPLE_RATE), gap_s)
        self._blocks = blocks
        self._block = block_samples
        self._follow = follow
        # follow: seconds of audio still queued in the pipe behind the block just read
        self._waiting = waiting or (lambda: 0.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0: float | None = None  # when pacing started: stream time 0 (monotonic)
        self.duration = duration
        if tally is not None:
            self.tally = tally

    def start(self) -> None:
        self._thread = threading.Thread(target=self._pump, name="soundflow-pace", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        self.t0 = anchor = time.monotonic()
        sent = 0
        try:
            for b in self._blocks:
                if self._follow:  # made no later than now, less what still queues behind it
                    x = time.monotonic() - self._waiting() - (sent + b.size) / SAMPLE_RATE
                    anchor = x if sent == 0 or x - anchor > self.JUMP_S else min(anchor, x)
                for i in range(0, b.size, self._block):
                    piece = b[i : i + self._block]
                    n = piece.size
                    # A block "arrives" when its last sample would have been captured.
                    due = anchor + (sent + n) / SAMPLE_RATE
                    wait = 0.0 if self._follow else due - time.monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        return
                    if self._stop.is_set():
                        return
                    self.clock.mark(self.ring.total_written + n, due)
                    self.ring.write(piece)
                    sent += n
        except SourceError as e:  # surfaced to the reader after the audio before it
            self.error = e
        except Exception as e:  # noqa: BLE001 - a dying producer must not look like an end
            self.error = _wrap(self.name, e)
        finally:
            self.ring.close()

    def stop(self) -> None:
        self._stop.set()
        self.ring.close()


def file_source(path: str | Path, realtime: bool = False, gap_s: float = 1.0) -> Source:
    """A file paced at real time (like a microphone) or read as fast as possible."""
    tally = Tally()
    blocks, duration = file_blocks(path, tally)
    name = str(path)
    if realtime:
        return PacedSource(blocks, name, duration, gap_s=gap_s, tally=tally)
    return PulledSource(blocks, name, duration, tally)


def _queued(stream: BinaryIO, bytes_per_s: int) -> Callable[[], float] | None:
    """Seconds of audio waiting in a pipe or socket (FIONREAD), or None where it cannot
    be asked: audio that queued while the model loaded was made before it was read."""
    try:
        import fcntl
        import termios

        fd = stream.fileno()
        fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except (ImportError, OSError, AttributeError, ValueError):
        return None

    def waiting() -> float:
        try:
            n = int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)
        except OSError:
            return 0.0
        return n / bytes_per_s

    return waiting


def stdin_source(
    fmt: str = "s16le",
    rate: int = SAMPLE_RATE,
    channels: int = 1,
    realtime: bool = False,
    stream: BinaryIO | None = None,
    live: bool | None = None,
    gap_s: float = 1.0,
) -> Source:
    """PCM (or WAV, FLAC, Ogg) on stdin. `live` (default: stdin is a pipe, socket or
    terminal) with `realtime`: audio counts from its arrival, gaps are reported, and the
    producer closing the stream is an error; otherwise it is read like a file."""
    stream = stream if stream is not None else sys.stdin.buffer
    if live is None:
        live = stdin_is_live(stream)
    live = live and realtime
    tally = Tally()
    blocks = raw_blocks(stream, fmt, rate, channels, live=live, tally=tally)
    if realtime:
        per_s = rate * channels * RAW_FORMATS.get(fmt, RAW_FORMATS["s16le"]).itemsize
        waiting = _queued(stream, per_s) if live else None
        return PacedSource(blocks, "stdin", follow=live, gap_s=gap_s, tally=tally, waiting=waiting)
    return PulledSource(blocks, "stdin", tally=tally)


def array_source(audio: np.ndarray, sample_rate: int, realtime: bool = False) -> Source:
    tally = Tally()
    blocks = array_blocks(audio, sample_rate, tally)
    duration = len(audio) / sample_rate
    if realtime:
        return PacedSource(blocks, "array", duration, tally=tally)
    return PulledSource(blocks, "array", duration, tally)
