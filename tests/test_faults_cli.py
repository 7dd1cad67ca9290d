"""`soundflow listen` under faults, as a supervisor sees it: SIGTERM to a real process,
live stdin that stalls or whose producer dies, containers piped to stdin, and inputs and
options a newcomer gets wrong; each a summary or one line with a non-zero exit."""

from __future__ import annotations

import io
import json
import os
import queue
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from soundflow.cli.main import cli
from soundflow.runtime.demo import procedural_demo

SR = 16_000


def _listen(*args, input=None):
    r = CliRunner().invoke(cli, ["listen", *map(str, args)], input=input)
    assert "Traceback" not in r.output + r.stderr, r.output + r.stderr
    return r


def _jsonl(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _one_error(r) -> str:
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def _encoded(fmt: str, seconds=2.0, rate=44_100, channels=2, **kw) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([x] * channels, 1), rate, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_containers_on_stdin_are_decoded_not_read_as_raw_pcm(fmt):
    data = _encoded(fmt)  # 2 s at 44.1 kHz stereo: 5 chunks, not 12.4 s of "raw PCM"
    r = _listen("--input", "-", "--fast", "--jsonl", "--stats", "0", input=data)
    assert r.exit_code == 0, r.stderr
    assert _jsonl(r.stdout)[-1]["chunks"] == 5


def test_streamed_and_truncated_wav_on_stdin():
    data = bytearray(_encoded("WAV", subtype="PCM_16"))
    streamed = bytes(data[:4]) + b"\xff\xff\xff\xff" + bytes(data[8:40]) + b"\xff\xff\xff\xff"
    streamed += bytes(data[44:])  # sox/arecord to a pipe: lengths left open
    r = _listen("--input", "-", "--fast", "--jsonl", "--stats", "0", input=streamed)
    assert r.exit_code == 0, r.stderr
    assert _jsonl(r.stdout)[-1]["chunks"] == 5
    r = _listen("--input", "-", "--fast", "--jsonl", input=bytes(data[: len(data) // 2]))
    assert r.exit_code == 1 and "declares" in _one_error(r)  # the producer died mid-file
    assert _jsonl(r.stdout)[-1]["type"] == "summary"


def test_mp3_on_stdin_is_refused_with_a_fix():
    r = _listen("--input", "-", "--fast", input=b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(4000))
    assert r.exit_code == 1 and "ffmpeg" in _one_error(r)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--stats", "-1"], "stats_every_s"),
        (["--refractory", "-5"], "refractory_s"),
        (["--max-tokens", "0"], "max_response_tokens"),
        (["--threshold", "nan"], "threshold"),
        (["--cache-budget", "0"], "cache_budget"),
        (["--reconnect-tries", "-1"], "reconnect_tries"),
    ],
)
def test_out_of_range_options_are_usage_errors(args, needle):
    r = _listen("--demo", "--fast", *args)
    assert r.exit_code == 2 and needle in r.stderr, r.stderr


def test_a_directory_given_to_input_is_called_a_directory(tmp_path):
    r = _listen("--input", tmp_path)
    assert r.exit_code == 1 and "is a directory" in _one_error(r)


def test_help_lists_the_modes_signals_and_reconnect():
    r = _listen("--help")
    for word in ("transcribe", "alert", "assist", "SIGTERM", "--reconnect", "--reconnect-tries"):
        assert word in r.stdout, word


def test_human_output_says_suppressed_like_the_json(smoke_bundle):
    """The summary line's word and count are the JSON summary's. On the smoke bundle: the
    wording is the CLI's, whatever the bundle, and the default's decoder answering every
    chunk (threshold 0) took 18 s; test_listen_cli runs the demo through the default."""
    args = ("--demo", "--fast", "--threshold", "0", "--refractory", "100", "--bundle")
    r = _listen(*args, smoke_bundle)
    assert r.exit_code == 0 and "suppressed)" in r.stdout and "withheld" not in r.stdout
    summary = _jsonl(_listen(*args, smoke_bundle, "--jsonl").stdout)[-1]
    assert summary["suppressed"] > 0 and f"({summary['suppressed']} suppressed)" in r.stdout


def test_show_suppressed_gives_each_withheld_response_its_tag_and_reason(smoke_bundle):
    """--show-suppressed: one event per response counted as suppressed, each with the tag it
    would have opened with and a reason the summary counts; the human line says it too."""
    args = ("--demo", "--fast", "--threshold", "0", "--refractory", "100", "--bundle")
    events = _jsonl(_listen(*args, smoke_bundle, "--jsonl", "--show-suppressed").stdout)
    summary, withheld = events[-1], [e for e in events if e["type"] == "suppressed"]
    assert summary["suppressed"] > 0 and len(withheld) == summary["suppressed"]
    by: dict[str, int] = {}
    for e in withheld:
        by[e["reason"]] = by.get(e["reason"], 0) + 1
        assert e["tag"] and e["tag"] in e["text"] and e["reason"] in e["text"]
        # a refractory tag: one that a response before it opened with
        assert any(r["type"] == "response" and r["t"] < e["t"] for r in events)
    assert by == summary["suppressed_by"] == {"refractory": summary["suppressed"]}
    r = _listen(*args, smoke_bundle, "--show-suppressed")
    assert r.stdout.count("withheld ") == summary["suppressed"]


def test_data_build_without_the_train_extra_is_one_line():
    code = (
        "import sys; sys.modules['scipy'] = None\n"  # what a runtime-only install looks like
        "from soundflow.cli.main import cli\n"
        "cli(['data', 'build', '--hours', '0.01', '--out', sys.argv[1]])\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, "/tmp/sf-no-train"], capture_output=True, text=True
    )
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().count("\n") == 0 and "pip install 'soundflow[train]'" in p.stderr


# ----------------------------------------------------------------------------- processes
def _cmd(*args):
    exe = shutil.which("soundflow")
    base = [exe] if exe else [sys.executable, "-m", "soundflow.cli"]
    return [*base, "listen", *map(str, args)]


class Proc:
    """A `soundflow listen` process with its stdout lines read on a thread."""

    def __init__(self, *args, stdin=None, env=None):
        self.p = subprocess.Popen(
            _cmd(*args),
            stdin=stdin,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._pump, args=(self.p.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._errs, daemon=True).start()

    @staticmethod
    def _pump(stream, q):
        for line in stream:
            q.put(line)
        q.put(None)

    def _errs(self):
        for line in self.p.stderr:
            self.err.append(line)

    def wait_for(self, pred, timeout=30.0) -> list[dict]:
        """Events until one satisfies `pred` (returned last)."""
        seen, end = [], time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            ev = json.loads(line)
            seen.append(ev)
            if pred(ev):
                return seen
        raise AssertionError(f"not seen in {timeout} s; got {seen}; stderr {''.join(self.err)}")

    def finish(self, timeout=30.0) -> tuple[int, list[dict]]:
        rc = self.p.wait(timeout=timeout)
        rest = []
        while (line := self.lines.get(timeout=5)) is not None:
            rest.append(json.loads(line))
        return rc, rest

    def started(self, timeout=30.0) -> None:
        """Wait for the banner: the engine is loaded and the source is reading."""
        deadline = time.monotonic() + timeout
        while not any("listening" in line for line in self.err):
            assert time.monotonic() < deadline and self.p.poll() is None, "".join(self.err)
            time.sleep(0.05)

    def feed(self, data: bytes) -> None:
        self.p.stdin.buffer.write(data)
        self.p.stdin.buffer.flush()

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()


def test_sigterm_is_a_graceful_stop(tmp_path):
    wav = tmp_path / "long.wav"
    sf.write(wav, np.tile(procedural_demo(), 4), SR)  # 64 s, paced in real time
    p = Proc("--input", wav, "--jsonl", "--stats", "0.4")
    try:
        first = p.wait_for(lambda e: e["type"] == "stats" and e["chunks"] >= 3)
        p.p.send_signal(signal.SIGTERM)
        t = time.monotonic()
        rc, rest = p.finish()
        assert time.monotonic() - t < 5
    finally:
        p.kill()
    assert rc == 0, "".join(p.err)
    summary = rest[-1]
    assert summary["type"] == "summary" and summary["interrupted"] is True
    assert summary["error"] is None and 3 <= summary["chunks"] <= 20
    assert [e["type"] for e in first + rest].count("summary") == 1  # JSONL complete, once
    assert "SIGTERM" in "".join(p.err) and "Traceback" not in "".join(p.err)


def _s16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def test_live_stdin_gap_then_producer_death():
    pcm = procedural_demo()
    p = Proc("--input", "-", "--jsonl", "--stats", "0", stdin=subprocess.PIPE)
    try:
        p.started()
        p.feed(_s16(pcm[: int(1.2 * SR)]))  # 3 chunks, then 2.5 s of nothing
        time.sleep(1.2 + 2.5)
        p.feed(_s16(pcm[int(1.2 * SR) : int(2.4 * SR)]))
        time.sleep(0.5)  # under the 1 s gap limit: a live pipe's audio counts from its arrival
        p.p.stdin.close()  # the producer dies
        rc, events = p.finish()
    finally:
        p.kill()
    assert rc == 1, "".join(p.err)
    errors = [line for line in p.err if line.startswith("Error:")]
    assert len(errors) == 1 and "stdin closed" in errors[0]
    kinds = [(e["type"], e.get("kind")) for e in events]
    assert ("warning", "input_gap") in kinds and ("info", "input_resumed") in kinds
    summary = events[-1]
    assert summary["type"] == "summary" and summary["chunks"] == 6
    # 2.5 s of audio never came: the gap runs from the last audio to the first after, stamped
    # by when it was made (the burst's backlog in the pipe told), not by a pacing schedule
    assert summary["input_gaps"] == 1 and 1.8 < summary["input_gap_s"] < 3.3
    assert summary["stalls"] >= 5 and summary["realtime"] is True


def test_sigterm_while_a_live_producer_is_silent():
    p = Proc("--input", "-", "--jsonl", "--stats", "0", stdin=subprocess.PIPE)
    try:
        p.feed(_s16(procedural_demo()[:SR]))
        p.started()
        time.sleep(1.5)  # the read of stdin is now blocked: nothing more comes
        p.p.send_signal(signal.SIGTERM)
        t = time.monotonic()
        rc, events = p.finish()
        assert time.monotonic() - t < 5
    finally:
        p.kill()
    assert rc == 0, "".join(p.err)
    assert events[-1]["type"] == "summary" and events[-1]["interrupted"] is True
    assert events[-1]["chunks"] == 3 and events[-1]["error"] is None


def test_fast_stdin_from_a_pipe_ends_cleanly():
    p = Proc("--input", "-", "--fast", "--jsonl", "--stats", "0", stdin=subprocess.PIPE)
    try:
        p.feed(_s16(procedural_demo()[: 2 * SR]))
        p.p.stdin.close()
        rc, events = p.finish()
    finally:
        p.kill()
    assert rc == 0 and events[-1]["chunks"] == 5 and events[-1]["error"] is None


def test_stdin_from_a_regular_file_is_finite(tmp_path):
    raw = tmp_path / "a.raw"
    raw.write_bytes(_s16(procedural_demo()[: 2 * SR]))
    with open(raw, "rb") as f:
        p = subprocess.run(
            _cmd("--input", "-", "--jsonl", "--stats", "0"), stdin=f, capture_output=True, text=True
        )
    assert p.returncode == 0, p.stderr
    summary = _jsonl(p.stdout)[-1]
    assert summary["chunks"] == 5 and summary["realtime"] is False  # read like a file


def test_wav_header_rates_reach_the_source():
    # 8 kHz mono WAV through the raw sniffing path: length in chunks follows its header.
    hdr_rate = 8_000
    pcm = _s16(np.zeros(hdr_rate * 2))
    fmt = struct.pack("<HHIIHH", 1, 1, hdr_rate, hdr_rate * 2, 2, 16)
    wav = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt " + struct.pack("<I", 16)
    wav += fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    r = _listen("--input", "-", "--fast", "--jsonl", "--stats", "0", input=wav)
    assert r.exit_code == 0 and _jsonl(r.stdout)[-1]["chunks"] == 5


def test_push_example_runs():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run(
        [sys.executable, os.path.join(root, "examples", "push.py"), "--seconds", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert "heard 2.0 s in 5 chunks" in p.stdout and "error None" in p.stdout
