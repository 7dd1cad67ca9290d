"""Sources: real files written by soundfile at odd rates and channel counts, truncated and
corrupt files, raw PCM on a byte stream, and real-time pacing."""

from __future__ import annotations

import io
import math
import time

import numpy as np
import pytest
import soundfile as sf

from soundflow.audio import CHUNK_SAMPLES, SAMPLE_RATE
from soundflow.runtime.sources import (
    SourceError,
    array_source,
    file_source,
    stdin_source,
)


def _tone(rate: int, seconds: float, freq: float = 440.0, channels: int = 2) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def _read_all(src) -> list[np.ndarray]:
    src.start()
    chunks = []
    while (c := src.read_chunk(CHUNK_SAMPLES)) is not None:
        chunks.append(c)
    return chunks


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * SAMPLE_RATE / len(x))


@pytest.mark.parametrize(
    "fmt,rate,channels",
    [("wav", 44_100, 2), ("flac", 8_000, 1), ("ogg", 48_000, 3), ("wav", 16_000, 1)],
)
def test_file_any_rate_and_channels_becomes_16k_mono_chunks(tmp_path, fmt, rate, channels):
    path = tmp_path / f"tone.{fmt}"
    sf.write(path, _tone(rate, 2.1, channels=channels), rate)
    chunks = _read_all(file_source(path))
    assert len(chunks) == math.ceil(2.1 * SAMPLE_RATE / CHUNK_SAMPLES)
    assert all(c.shape == (CHUNK_SAMPLES,) and c.dtype == np.float32 for c in chunks)
    audio = np.concatenate(chunks)
    assert abs(_peak_hz(audio[: 2 * SAMPLE_RATE]) - 440) < 2
    tol = 0.05 if fmt == "ogg" else 0.01
    assert abs(np.abs(audio[1000:30000]).max() - 0.5) < tol  # downmix keeps the level
    assert np.abs(audio[int(2.11 * SAMPLE_RATE) :]).max() < 0.05  # zero-padded tail


def test_missing_corrupt_and_truncated_files(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        file_source(tmp_path / "nope.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    with pytest.raises(SourceError, match="not a readable audio file"):
        file_source(junk)

    full = tmp_path / "full.wav"
    sf.write(full, _tone(16_000, 2.0, channels=1), 16_000, subtype="PCM_16")
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    src = file_source(cut)
    chunks = []
    with pytest.raises(SourceError, match="truncated"):
        src.start()
        while (c := src.read_chunk(CHUNK_SAMPLES)) is not None:
            chunks.append(c)
    # Nothing before the cut is lost: one second of audio came out first.
    assert sum(c.size for c in chunks) >= SAMPLE_RATE - CHUNK_SAMPLES

    flac = tmp_path / "full.flac"
    sf.write(flac, np.random.default_rng(0).normal(0, 0.1, 48_000).astype(np.float32), 16_000)
    cutf = tmp_path / "cut.flac"
    cutf.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    with pytest.raises(SourceError, match="truncated|corrupt|readable"):
        _read_all(file_source(cutf))


def test_raw_pcm_stdin_formats_and_truncation():
    x = _tone(22_050, 1.0, channels=2)
    pcm = (x * 32767).astype("<i2").tobytes()
    chunks = _read_all(stdin_source("s16le", 22_050, 2, stream=io.BytesIO(pcm)))
    audio = np.concatenate(chunks)
    assert len(chunks) == math.ceil(SAMPLE_RATE / CHUNK_SAMPLES)
    assert abs(_peak_hz(audio[:SAMPLE_RATE]) - 440) < 2

    f32 = _tone(16_000, 0.8, channels=1).astype("<f4").tobytes()
    chunks = _read_all(stdin_source("f32le", 16_000, 1, stream=io.BytesIO(f32)))
    np.testing.assert_array_equal(np.concatenate(chunks)[:12800], _tone(16_000, 0.8, channels=1))

    with pytest.raises(SourceError, match="stray bytes"):
        _read_all(stdin_source("s16le", 16_000, 1, stream=io.BytesIO(pcm[:-1])))
    with pytest.raises(SourceError, match="--raw-rate"):
        stdin_source("s16le", 16, 1, stream=io.BytesIO(b""))
    with pytest.raises(SourceError, match="not supported"):
        stdin_source("mp3", 16_000, 1, stream=io.BytesIO(b""))


def test_array_source_rejects_transposed_audio():
    with pytest.raises(SourceError, match="frames, channels"):
        array_source(np.zeros((2, 16_000), np.float32), 16_000)


def test_realtime_pacing_delivers_chunks_no_earlier_than_the_audio(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(16_000, 1.2, channels=1), 16_000)
    src = file_source(path, realtime=True)
    t0 = time.monotonic()
    src.start()
    arrivals = []
    while src.read_chunk(CHUNK_SAMPLES) is not None:
        arrivals.append(time.monotonic() - t0)
    assert len(arrivals) == 3 and src.overruns == 0
    for i, t in enumerate(arrivals):  # chunk i ends at (i+1)*0.4 s of stream time
        assert t >= (i + 1) * 0.4 - 0.03


def test_a_live_pipe_backlog_counts_as_latency_and_drains_at_once():
    """A live producer's audio is stamped with when it was made, not with a pacing schedule:
    1.6 s that queued in the pipe (the model was loading) is read at once and counts 1.2 s
    or more of latency at its first chunk, then real-time writes arrive as they are read."""
    import os
    import threading

    from soundflow.runtime.sources import stdin_source

    r, w = os.pipe()
    pcm = (0.1 * np.sin(np.arange(SAMPLE_RATE * 4) / 10)).astype("<f4")
    data = (np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes()
    backlog = int(1.6 * SAMPLE_RATE) * 2
    os.write(w, data[:backlog])

    def produce():  # then 20 ms every 20 ms, as a microphone would
        block = SAMPLE_RATE // 50 * 2
        try:
            for i in range(backlog, len(data), block):
                time.sleep(0.02)
                os.write(w, data[i : i + block])
        except BrokenPipeError:  # the reader is done
            pass
        finally:
            os.close(w)

    src = stdin_source(realtime=True, stream=os.fdopen(r, "rb", buffering=0), live=True)
    src.start()
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    lags = []
    while src.read_chunk(CHUNK_SAMPLES) is not None:
        arrived, _ = src.timing()
        lags.append(time.monotonic() - arrived)
        if len(lags) == 9:
            break
    src.stop()
    assert lags[0] >= 1.0, lags  # 1.6 s of audio was waiting: the first chunk's end 1.2 s
    assert lags[3] < lags[0] - 0.8, lags  # the backlog was read without pacing
    assert max(lags[-3:]) < 0.15, lags  # caught up: audio is read as it arrives


def test_realtime_stop_flushes_what_was_captured(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, _tone(16_000, 30.0, channels=1), 16_000)
    src = file_source(path, realtime=True)
    src.start()
    first = src.read_chunk(CHUNK_SAMPLES)
    time.sleep(0.5)
    src.stop()
    rest = []
    while (c := src.read_chunk(CHUNK_SAMPLES)) is not None:
        rest.append(c)
    captured = src.ring.total_written
    assert first is not None and 1 <= len(rest) <= 3
    # Every captured sample comes out (the last chunk zero-padded), nothing more.
    assert (1 + len(rest)) * CHUNK_SAMPLES - captured in range(0, CHUNK_SAMPLES)
