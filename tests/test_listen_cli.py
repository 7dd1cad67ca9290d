"""`soundflow listen` / `soundflow devices`: JSONL and console output, stdin, the demo, and
every error as one line with a fix, a non-zero exit and no traceback, keeping what was
already written (a full disk, a truncated file, Ctrl-C)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from soundflow.cli.main import cli


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    from soundflow.train.smoke import toy_stream

    pcm, _ = toy_stream(11)
    path = tmp_path_factory.mktemp("cli") / "toy.wav"
    sf.write(path, pcm, 16_000)
    return path


def _listen(*args, input=None):
    result = CliRunner().invoke(cli, ["listen", *map(str, args)], input=input)
    assert "Traceback" not in result.output + result.stderr
    return result


def _jsonl(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_fast_jsonl_contract(smoke_bundle, wav):
    r = _listen(
        "--bundle",
        smoke_bundle,
        "--input",
        wav,
        "--fast",
        "--jsonl",
        "--mode",
        "alert",
        "--threshold",
        "0",
        "--refractory",
        "2",
        "--stats",
        "5",
    )
    assert r.exit_code == 0, r.stderr
    events = _jsonl(r.stdout)
    for e in events:
        assert {"type", "t", "text", "latency_ms"} <= set(e)
    summary = events[-1]
    assert summary["type"] == "summary" and summary["chunks"] == 32  # 12.8 s
    for key in ("overruns", "stalls", "decision_p50_ms", "decision_p99_ms"):
        assert key in summary
    responses = [e for e in events if e["type"] == "response"]
    assert responses and all(e["tags"].get("alert") for e in responses)
    assert [e["type"] for e in events].count("stats") == 2
    assert "untrained" in r.stderr  # the smoke bundle says what it is


def test_human_output_stdin_and_demo(smoke_bundle, wav):
    r = _listen(
        "--bundle", smoke_bundle, "--input", wav, "--fast", "--mode", "assist", "--threshold", "0"
    )
    assert r.exit_code == 0 and "done:" in r.stdout and "s]" in r.stdout

    pcm, _ = sf.read(wav, dtype="int16")
    r = _listen("--bundle", smoke_bundle, "--input", "-", "--jsonl", input=pcm.tobytes())
    assert r.exit_code == 0, r.stderr
    assert _jsonl(r.stdout)[-1]["chunks"] == 32 and _jsonl(r.stdout)[-1]["source"] == "stdin"

    r = _listen("--bundle", smoke_bundle, "--demo", "--fast", "--jsonl")
    assert r.exit_code == 0 and _jsonl(r.stdout)[-1]["chunks"] == _demo_chunks()


def _demo_chunks() -> int:
    """Chunks in `--demo`: the packaged demo clip, else the generated 16 s scene."""
    from soundflow.runtime.demo import find_demo_file

    demo = find_demo_file()
    return 40 if demo is None else int(np.ceil(sf.info(demo).duration / 0.4))


@pytest.mark.parametrize(
    "case,args,message",
    [
        ("no bundle", ["--bundle", "{tmp}/none", "--input", "{wav}"], "does not exist"),
        ("bad manifest", ["--bundle", "{tmp}/broken", "--input", "{wav}"], "not valid JSON"),
        (
            "unknown mode",
            ["--bundle", "{bundle}", "--input", "{wav}", "--mode", "karaoke"],
            "--mode",
        ),
        ("no file", ["--bundle", "{bundle}", "--input", "{tmp}/none.wav"], "no such file"),
        ("not audio", ["--bundle", "{bundle}", "--input", "{tmp}/broken/manifest.json"], "sox"),
        ("no device", ["--bundle", "{bundle}", "--device", "no-such-mic-xyz"], "soundflow devices"),
        ("odd stdin", ["--bundle", "{bundle}", "--input", "-", "--raw-rate", "12"], "--raw-rate"),
    ],
)
def test_errors_are_one_line_with_a_fix(smoke_bundle, wav, tmp_path, case, args, message):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    fill = {"tmp": tmp_path, "wav": wav, "bundle": smoke_bundle}
    r = _listen(*[a.format(**fill) for a in args], input=b"")
    assert r.exit_code == 1, (case, r.output)
    err = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(err) == 1 and message in err[0], (case, r.stderr)


def test_usage_errors(smoke_bundle, wav):
    r = _listen("--bundle", smoke_bundle, "--input", wav, "--device", "0")
    assert r.exit_code == 2 and "at most one" in r.stderr


def test_truncated_file_keeps_events_and_fails(smoke_bundle, wav, tmp_path):
    cut = tmp_path / "cut.wav"
    data = wav.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    r = _listen(
        "--bundle",
        smoke_bundle,
        "--input",
        cut,
        "--fast",
        "--jsonl",
        "--threshold",
        "0",
        "--mode",
        "alert",
    )
    assert r.exit_code == 1 and "truncated" in r.stderr
    events = _jsonl(r.stdout)
    assert events[-1]["type"] == "summary" and events[-1]["chunks"] == 16  # 6.4 s survived
    assert any(e["type"] == "response" for e in events)


def _cmd(bundle, *args):
    exe = shutil.which("soundflow")
    base = [exe] if exe else [sys.executable, "-m", "soundflow.cli"]
    return [*base, "listen", "--bundle", str(bundle), *map(str, args)]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_is_one_line_and_nonzero(smoke_bundle, wav):
    with open("/dev/full", "w") as full:
        p = subprocess.run(
            _cmd(smoke_bundle, "--input", wav, "--fast", "--jsonl"),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert p.returncode == 1
    assert "disk full" in p.stderr and "Traceback" not in p.stderr
    assert "Exception ignored" not in p.stderr


def test_ctrl_c_stops_cleanly_and_flushes(smoke_bundle, tmp_path, wav):
    long = tmp_path / "long.wav"
    sf.write(long, np.tile(sf.read(wav, dtype="float32")[0], 5), 16_000)  # 64 s
    p = subprocess.Popen(
        _cmd(
            smoke_bundle,
            "--input",
            long,
            "--realtime",
            "--jsonl",
            "--threshold",
            "0",
            "--mode",
            "alert",
            "--stats",
            "1",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while "listening" not in p.stderr.readline():
            assert p.poll() is None, p.stderr.read()
        time.sleep(2.0)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert "Traceback" not in err
    events = _jsonl(out)
    summary = events[-1]
    assert summary["type"] == "summary" and summary["interrupted"] is True
    assert 3 <= summary["chunks"] <= 12 and summary["error"] is None
    assert [e["t"] for e in events if e["type"] == "stats"][-1] <= summary["t"]


def test_devices_lists_inputs_or_says_how_to_install():
    r = CliRunner().invoke(cli, ["devices", "--json"])
    if r.exit_code == 0:
        for d in json.loads(r.stdout):
            assert {"index", "name", "channels", "samplerate"} <= set(d)
    else:
        assert "pip install 'soundflow[mic]'" in r.stderr or "libportaudio2" in r.stderr


# The shipped model's alert tagger gives this procedural two-tone doorbell p 0.34-0.79 a
# chunk or two after it starts (seeds 1, 2, 3 and 5), below doorbell's threshold (0.83,
# calibrated on the dev split), so no alert comes; the decoder's own step (`--alerts
# protocol`) calls it `phone_ring` in the right chunk (12 of 12 seeds). Training's only
# doorbell is the procedural generator (train band). Strict: the day the model names it,
# the marker must go (README, The default model).
@pytest.mark.xfail(strict=True, reason="the shipped model does not name a procedural doorbell")
def test_embedded_default_names_a_doorbell_in_the_chunk_it_rings(tmp_path):
    """The shipped model, not only the pipeline: a doorbell (eval-band parameters, never
    trained on) after 4 s of a quiet room is announced in the chunk where it starts."""
    from soundflow.train.data import procedural

    rng = np.random.default_rng(5)
    ring = procedural.SOUNDS["doorbell"].make(procedural.Params(rng, "eval"))
    bed = (rng.standard_normal(4 * 16_000) * 0.003).astype(np.float32)
    wav = tmp_path / "doorbell.wav"
    sf.write(wav, np.concatenate([bed, 0.5 * ring, bed]), 16_000)
    r = _listen("--input", str(wav), "--fast", "--jsonl", "--mode", "alert")
    assert r.exit_code == 0, r.stderr
    responses = [e for e in _jsonl(r.stdout) if e["type"] == "response"]
    assert responses and responses[0]["tags"].get("alert") == "doorbell", responses
    assert responses[0]["t"] == pytest.approx(4.4)  # the end of the chunk it starts in


def test_caption_calls_flag_bounds_the_reading_and_still_captions(tmp_path):
    """--caption-calls 1: one decoder call per chunk at most, readings carried over; the
    held-out sentence is still captioned. A negative bound is a usage error."""
    from soundflow.train.data import espeak

    pcm, _ = espeak.synthesize(
        "please close the window in the kitchen",
        espeak.sample_voice(np.random.default_rng(2), "eval"),
    )
    wav = tmp_path / "said.wav"
    sf.write(wav, np.concatenate([pcm, np.zeros(32_000, np.float32)]), 16_000)
    args = ("--input", str(wav), "--fast", "--jsonl", "--mode", "transcribe")
    r = _listen(*args, "--caption-calls", "1")
    assert r.exit_code == 0, r.stderr
    said = " ".join(e["text"] for e in _jsonl(r.stdout) if e["type"] == "response")
    assert "kitchen" in said and "window" in said, said
    r = _listen(*args, "--caption-calls", "-1")
    assert r.exit_code == 2 and "--caption-calls" in r.stderr
    # A time bound instead: 1 ms admits one call per chunk on any machine, as above. Paced
    # at real time (5 s): fast mode has no deadline and drops the time bound.
    paced = tuple(a for a in args if a != "--fast")
    r = _listen(*paced, "--caption-calls", "0", "--caption-budget-ms", "1")
    assert r.exit_code == 0, r.stderr
    said = " ".join(e["text"] for e in _jsonl(r.stdout) if e["type"] == "response")
    assert "kitchen" in said and "window" in said, said
    r = _listen(*args, "--caption-budget-ms", "-5")
    assert r.exit_code == 2 and "--caption-budget-ms" in r.stderr
    # Readings every second chunk: still captioned, in the summary's account; 5 is refused
    r = _listen(*args, "--caption-hop", "2")
    assert r.exit_code == 0, r.stderr
    events = _jsonl(r.stdout)
    said = " ".join(e["text"] for e in events if e["type"] == "response")
    assert "kitchen" in said and "window" in said, said
    assert events[-1]["type"] == "summary" and events[-1]["captions_deferred"] == 0
    r = _listen(*args, "--caption-hop", "5")
    assert r.exit_code == 2 and "--caption-hop" in r.stderr


def test_demo_runs_through_the_embedded_default_bundle():
    """The README's first command: no bundle, no microphone."""
    r = _listen("--demo", "--fast", "--jsonl")
    assert r.exit_code == 0, r.stderr
    assert "default_bundle" in r.stderr and "untrained" not in r.stderr  # the trained default
    summary = _jsonl(r.stdout)[-1]
    assert summary["type"] == "summary" and summary["error"] is None
    assert summary["chunks"] == _demo_chunks()
    assert any(e["type"] == "response" for e in _jsonl(r.stdout))  # it has something to say


@pytest.mark.parametrize(
    "failure",
    [ImportError("No module named 'sounddevice'"), OSError("PortAudio library not found")],
)
def test_missing_sounddevice_or_portaudio_names_the_fix(smoke_bundle, monkeypatch, failure):
    import importlib

    real = importlib.import_module

    def fail(name, *args):
        if name == "sounddevice":
            raise failure
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fail)
    for args in (["listen", "--bundle", str(smoke_bundle), "--device", "0"], ["devices"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 1 and "Traceback" not in r.output + r.stderr
        if isinstance(failure, ImportError):  # the quoted extra, which every shell accepts
            assert "pip install 'soundflow[mic]'" in r.stderr
        else:  # sounddevice is there: only the library is missing
            assert "libportaudio2" in r.stderr and "soundflow[mic]" not in r.stderr


# ------------------------------------------------ stop requests and a closed stdout (#28, #29)
DEMO = Path(__file__).resolve().parents[1] / "soundflow" / "assets" / "demo.flac"


def _default_listen(*args) -> subprocess.Popen:
    """`soundflow listen` on the embedded default bundle, as a supervisor starts it."""
    exe = shutil.which("soundflow")
    base = [exe] if exe else [sys.executable, "-m", "soundflow.cli"]
    return subprocess.Popen(
        [*base, "listen", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ends_with_a_summary(p: subprocess.Popen, out: str, err: str) -> dict:
    assert p.returncode == 0, err
    for bad in ("Traceback", "Aborted!", "terminate called", "Error"):
        assert bad not in err, err
    summary = _jsonl(out)[-1]
    assert summary["type"] == "summary" and summary["interrupted"] is True, out[-2000:]
    assert summary["error"] is None
    return summary


@pytest.mark.parametrize("count", [1, 3])
def test_sigint_during_model_load_ends_with_a_summary(count):
    p = _default_listen("--input", DEMO, "--jsonl")
    try:
        time.sleep(0.3)  # the model is loading (the banner comes once it is loaded)
        for _ in range(count):
            p.send_signal(signal.SIGINT)
            time.sleep(0.05)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    summary = _ends_with_a_summary(p, out, err)
    assert "listening" not in err and summary["chunks"] == 0
    assert "during model load" in summary["text"]
    assert "while the model loads" in err if count == 1 else "three times" in err


@pytest.mark.parametrize("gap_s", [0.0, 0.05])
def test_two_sigints_after_the_first_event_end_with_a_summary(gap_s):
    p = _default_listen("--input", DEMO, "--jsonl")
    try:
        first = p.stdout.readline()
        assert json.loads(first)["type"] in ("response", "stats", "info", "warning"), first
        p.send_signal(signal.SIGINT)
        time.sleep(gap_s)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    summary = _ends_with_a_summary(p, first + out, err)
    assert summary["chunks"] > 0 and "SIGINT: stopping" in err


def test_a_closed_stdout_pipe_is_a_quiet_normal_end():
    # `soundflow listen ... | head -1`: the reader goes after one line.
    p = _default_listen("--input", DEMO, "--fast", "--jsonl")
    try:
        assert json.loads(p.stdout.readline())["type"]
        p.stdout.close()
        err = p.stderr.read()
        p.wait(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0, err
    for bad in ("Error", "free space", "Broken pipe", "Exception ignored", "Traceback"):
        assert bad not in err, err


def test_a_burst_of_stop_signals_on_a_blocked_read_ends_with_a_summary():
    # A live stdin producer that never writes; a supervisor that keeps signalling. Signals
    # after the summary come while the process exits: still exit 0, not death by signal.
    producer = subprocess.Popen(["sleep", "60"], stdout=subprocess.PIPE)
    exe = shutil.which("soundflow")
    base = [exe] if exe else [sys.executable, "-m", "soundflow.cli"]
    p = subprocess.Popen(
        [*base, "listen", "--input", "-", "--jsonl"],
        stdin=producer.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while "listening" not in (line := p.stderr.readline()):
            assert line and p.poll() is None, p.stderr.read()
        for sig in [signal.SIGTERM, signal.SIGINT] * 4:
            p.send_signal(sig)
            time.sleep(0.05)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
        producer.kill()
    _ends_with_a_summary(p, out, err)


def test_record_writes_what_the_model_read_in_stream_time(smoke_bundle, wav, tmp_path):
    """`--record`: the file is the audio as the loop read it, chunk for chunk (the input
    zero-padded to whole chunks, as 16-bit PCM), so a time in it is an event's stream time."""
    out = tmp_path / "heard.wav"
    r = _listen("--bundle", smoke_bundle, "--input", wav, "--fast", "--jsonl", "--record", out)
    assert r.exit_code == 0, r.stderr
    summary = _jsonl(r.stdout)[-1]
    heard, rate = sf.read(out, dtype="float32")
    source, _ = sf.read(wav, dtype="float32")
    assert rate == 16_000 and len(heard) == summary["chunks"] * 6_400
    assert np.abs(heard[: len(source)] - source).max() < 1e-4  # 16-bit quantization
    assert not heard[len(source) :].any()
    # a place it cannot be written is refused before any audio is read
    r = _listen("--bundle", smoke_bundle, "--input", wav, "--record", tmp_path / "no" / "x.wav")
    assert r.exit_code == 1 and "cannot record to" in r.stderr, r.stderr


def test_record_that_fills_the_disk_stops_recording_and_loses_no_audio(smoke_bundle, wav, tmp_path):
    """A write that fails mid-stream (here the file-size limit a full disk acts like) ends
    the recording with a `record_failed` warning; every chunk is still decided."""
    code = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000)); "
        "from soundflow.cli.main import cli; sys.exit(cli())"
    )
    args = ["listen", "--bundle", smoke_bundle, "--input", wav, "--fast", "--jsonl"]
    p = subprocess.run(
        [sys.executable, "-c", code, *map(str, args), "--record", str(tmp_path / "r.wav")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    events = _jsonl(p.stdout)
    failed = [e for e in events if e.get("kind") == "record_failed"]
    assert len(failed) == 1 and "the stream goes on" in failed[0]["text"], events[-3:]
    assert events[-1]["chunks"] == int(np.ceil(sf.info(wav).frames / 6_400))
    assert events[-1]["error"] is None
