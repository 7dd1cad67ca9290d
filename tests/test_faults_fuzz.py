"""50 fuzzed audio files (bit flips, cuts, forged headers, NaN/Inf samples, garbage) through
the real runtime: each ends in a Summary or a one-line error, never a traceback."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from soundflow.cli.main import cli
from soundflow.runtime.kinds import open_engine
from soundflow.runtime.loop import Loop
from soundflow.runtime.options import RuntimeOptions
from soundflow.runtime.sources import SourceError, file_source

N_FILES = 50


def _wav_header(rate=16_000, channels=1, bits=16, tag=1, data_bytes=32_000) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, (rate * block) % 2**32, block, bits)
    return (
        b"RIFF"
        + struct.pack("<I", (36 + data_bytes) % 2**32)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def _fuzzed(dirpath: Path) -> list[Path]:
    """Deterministic hostile files: forged headers first, then random damage."""
    rng = np.random.default_rng(13)
    t = np.arange(16_000) / 16_000
    tone = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    bases = {}
    for name, kw in {
        "pcm16.wav": {"subtype": "PCM_16"},
        "float.wav": {"subtype": "FLOAT"},
        "a.flac": {},
        "a.ogg": {},
    }.items():
        p = dirpath / f"base_{name}"
        sf.write(p, np.stack([tone, tone], 1) if "float" in name else tone, 16_000, **kw)
        bases[name] = p.read_bytes()
    pcm = (tone * 32767).astype("<i2").tobytes()
    forged = {
        "empty.wav": b"",
        "riff_only.wav": b"RIFF",
        "rate0.wav": _wav_header(rate=0) + pcm,
        "rate_huge.wav": _wav_header(rate=4_000_000_000) + pcm,
        "channels0.wav": _wav_header(channels=0) + pcm,
        "channels1000.wav": _wav_header(channels=1000) + pcm,
        "bits7.wav": _wav_header(bits=7) + pcm,
        "mp3_tag.wav": _wav_header(tag=0x55) + pcm,
        "huge_data.wav": _wav_header(data_bytes=0xFFFFFFF0) + pcm,
        "short_data.wav": _wav_header(data_bytes=10) + pcm,
        "text.wav": b"hello, this is not audio\n" * 40,
        "id3.mp3": b"ID3\x03\x00\x00\x00" + bytes(rng.integers(0, 256, 2000, dtype=np.uint8)),
        "one_sample.wav": _wav_header(data_bytes=2) + b"\x01\x00",
    }
    # Float WAVs with non-finite and absurd samples: decodable, must not poison the model.
    bad = np.stack([tone, tone], 1).copy()
    bad[4000:4100] = np.nan
    bad[9000] = np.inf
    bad[12000:12010] = -np.inf
    loud = tone * np.float32(1e30)
    out = []
    for name, data in forged.items():
        p = dirpath / name
        p.write_bytes(data)
        out.append(p)
    for name, x in {"nan_inf.wav": bad, "1e30.wav": loud}.items():
        p = dirpath / name
        sf.write(p, x, 16_000, subtype="FLOAT")
        out.append(p)
    k = 0
    while len(out) < N_FILES:
        name = list(bases)[k % len(bases)]
        data = bytearray(bases[name])
        how = ("flip_header", "flip_body", "cut", "splice")[(k // len(bases)) % 4]
        if how == "flip_header":
            for i in rng.integers(0, min(64, len(data)), 6):
                data[i] ^= 1 << int(rng.integers(0, 8))
        elif how == "flip_body":
            for i in rng.integers(0, len(data), 40):
                data[i] = int(rng.integers(0, 256))
        elif how == "cut":
            data = data[: int(rng.integers(1, len(data)))]
        else:
            i = int(rng.integers(0, len(data)))
            data[i : i + 512] = bytes(rng.integers(0, 256, 512, dtype=np.uint8))
        p = dirpath / f"fuzz{k:02d}_{how}_{name}"
        p.write_bytes(bytes(data))
        out.append(p)
        k += 1
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return _fuzzed(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
def engine():
    options = RuntimeOptions.from_flags(realtime=False, stats_every_s=0, max_response_tokens=2)
    return open_engine(None, options), options


def test_fifty_fuzzed_files_give_zero_tracebacks(files, engine):
    eng, options = engine
    assert len(files) == N_FILES
    outcomes = {"ok": 0, "refused": 0, "error": 0}
    for path in files:
        try:
            source = file_source(path)
        except SourceError as e:  # refused up front
            assert "\n" not in str(e), (path.name, str(e))
            outcomes["refused"] += 1
            continue
        summary = Loop(eng, source, lambda e: None, options).run()  # must not raise
        if summary.error:
            assert "\n" not in summary.error, (path.name, summary.error)
            assert not summary.error.startswith("internal error"), (path.name, summary.error)
            outcomes["error"] += 1
        else:
            outcomes["ok"] += 1
        assert summary.state_resets == 0, path.name  # sanitised input never poisons state
    assert sum(outcomes.values()) == N_FILES
    assert outcomes["refused"] + outcomes["error"] >= 10, outcomes  # the forged ones at least
    print("fuzz outcomes:", outcomes)


def test_nan_inf_file_is_counted_and_heard(files, engine):
    eng, options = engine
    path = next(p for p in files if p.name == "nan_inf.wav")
    summary = Loop(eng, file_source(path), lambda e: None, options).run()
    assert summary.error is None and summary.chunks == 3
    assert summary.nonfinite_samples == 100 + 1 + 10  # per frame after the stereo downmix


@pytest.mark.parametrize("k", [0, 7, 9, 13, 20, 33, 49])
def test_fuzzed_files_through_the_cli(files, k):
    r = CliRunner().invoke(cli, ["listen", "--input", str(files[k]), "--fast", "--jsonl"])
    assert "Traceback" not in r.output + r.stderr, files[k].name
    assert r.exit_code in (0, 1), (files[k].name, r.exit_code, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == (r.exit_code == 1), (files[k].name, r.stderr)
