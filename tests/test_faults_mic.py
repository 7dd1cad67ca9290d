"""A real sound server dying under a real `soundflow listen --device`: PulseAudio with a null
sink, captured through PortAudio's ALSA `pulse` device, killed mid-capture and restarted
(the microphone comes back and says so) or left dead (the run gives up, non-zero); and a
listener frozen on a live microphone counts its stalls from capture time.

Needs: apt install pulseaudio pulseaudio-utils libasound2-plugins libportaudio2; skipped
only when PulseAudio itself is not installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
from test_faults_cli import Proc

pytestmark = pytest.mark.mic


def _pulse_up() -> bool:
    return subprocess.run(["pactl", "info"], capture_output=True, timeout=20).returncode == 0


def _start_pulse(sink: str) -> None:
    """Start the daemon if none answers, and make sure `sink` exists."""
    if not _pulse_up():
        # As root PulseAudio warns that it is meant for users but runs fine per session.
        r = subprocess.run(
            ["pulseaudio", "--start", "--exit-idle-time=-1"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, f"pulseaudio --start failed: {r.stderr}"
        for _ in range(100):
            if _pulse_up():
                break
            time.sleep(0.1)
    sinks = subprocess.run(["pactl", "list", "short", "sinks"], capture_output=True, text=True)
    if sink not in sinks.stdout:
        subprocess.run(
            ["pactl", "load-module", "module-null-sink", f"sink_name={sink}"],
            check=True,
            capture_output=True,
            timeout=20,
        )


def _kill_pulse() -> None:
    subprocess.run(["pulseaudio", "--kill"], capture_output=True, timeout=20)
    for _ in range(100):
        if not _pulse_up():
            return
        time.sleep(0.1)
    raise AssertionError("pulseaudio --kill left the daemon running")


@pytest.fixture(scope="module")
def sink():
    if not shutil.which("pulseaudio") or not shutil.which("pactl"):
        pytest.skip(
            "PulseAudio is not installed (apt install pulseaudio pulseaudio-utils "
            "libasound2-plugins libportaudio2)"
        )
    import sounddevice  # noqa: F401  - PortAudio must be there; a missing one fails here

    name = f"sf_fault_{os.getpid()}"
    _start_pulse(name)
    yield name
    _start_pulse(name)  # leave a running server behind for the tests after these
    subprocess.run(["pactl", "unload-module", "module-null-sink"], capture_output=True)


def _mic(sink: str, *args) -> Proc:
    env = {**os.environ, "PULSE_SOURCE": f"{sink}.monitor"}
    return Proc("--device", "pulse", "--jsonl", "--stats", "0.4", *args, env=env)


def _is(type_, kind):
    return lambda e: e["type"] == type_ and e.get("kind") == kind


def test_sound_server_killed_and_restarted_is_reconnected(sink):
    p = _mic(sink)
    try:
        events = p.wait_for(lambda e: e["type"] == "stats" and e["chunks"] >= 2, timeout=40)
        _kill_pulse()
        killed = time.monotonic()
        events += p.wait_for(_is("error", "source_lost"), timeout=15)
        assert time.monotonic() - killed < 10  # noticed, not a silent hang
        time.sleep(1.0)
        _start_pulse(sink)
        events += p.wait_for(_is("info", "reconnected"), timeout=40)
        events += p.wait_for(lambda e: e["type"] == "stats", timeout=20)  # listening again
        p.p.send_signal(signal.SIGTERM)
        rc, rest = p.finish()
    finally:
        p.kill()
        _start_pulse(sink)
    events += rest
    assert rc == 0, "".join(p.err)
    summary = events[-1]
    assert summary["type"] == "summary" and summary["error"] is None
    assert summary["reconnects"] == 1 and summary["interrupted"] is True
    # Stream time includes the outage: events after it are stamped on the clock.
    assert summary["t"] > summary["chunks"] * 0.4 + 1.0, summary
    lost = next(e for e in events if e.get("kind") == "source_lost")
    back = next(e for e in events if e.get("kind") == "reconnected")
    assert "mic:pulse" in lost["text"] and "back after" in back["text"]


def test_sound_server_that_stays_dead_ends_the_run_non_zero(sink):
    p = _mic(sink, "--reconnect-tries", "2")
    try:
        p.wait_for(lambda e: e["type"] == "stats" and e["chunks"] >= 1, timeout=40)
        _kill_pulse()
        rc, events = p.finish(timeout=60)
    finally:
        p.kill()
        _start_pulse(sink)
    assert rc == 1, "".join(p.err)
    errors = [line for line in p.err if line.startswith("Error:")]
    assert len(errors) == 1 and "2 attempts" in errors[0], p.err
    assert events[-1]["type"] == "summary" and "mic:pulse" in events[-1]["error"]
    assert "Traceback" not in "".join(p.err)


def test_a_frozen_listener_on_a_microphone_counts_stalls(sink, monkeypatch):
    from soundflow.runtime.listener import Listener

    monkeypatch.setenv("PULSE_SOURCE", f"{sink}.monitor")
    froze = threading.Event()

    def on_event(e):
        if e.type == "stats" and not froze.is_set():
            froze.set()
            time.sleep(3.0)  # the app's handler blocks the respond thread for 3 s

    listener = Listener(device="pulse", threshold=1.0, stats_every_s=0.4, on_event=on_event).start()
    deadline = time.monotonic() + 40
    while not froze.is_set():
        assert time.monotonic() < deadline and listener.summary is None, listener.summary
        time.sleep(0.05)
    time.sleep(4.0)  # the freeze, then time to catch up
    summary = listener.close()
    assert summary.error is None and summary.overruns == 0
    assert summary.stalls >= 5, summary  # chunks captured during the freeze were late
    assert summary.decision_p99_ms > 2000
    assert summary.input_overflows >= 0 and "input_overflows" in summary.to_json()
