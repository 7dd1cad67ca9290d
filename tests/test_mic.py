"""A real microphone path: PulseAudio with a null sink, a WAV played into it with `paplay`,
captured from the sink's monitor through PortAudio's ALSA `pulse` device and sounddevice.

Needs: apt install pulseaudio pulseaudio-utils libasound2-plugins libportaudio2. Skipped
only when PulseAudio itself is not installed; anything else that is missing fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.mic

TONE_AT, TONE_S, WAV_S = 0.6, 1.2, 2.4  # the played WAV: silence, 1 kHz tone, silence


def _pactl(*args: str) -> str:
    return subprocess.run(
        ["pactl", *args], capture_output=True, text=True, check=True, timeout=20
    ).stdout.strip()


@pytest.fixture(scope="module")
def pulse_monitor(tmp_path_factory):
    """A running PulseAudio with a fresh null sink; yields (sink, wav path)."""
    if not shutil.which("pulseaudio") or not shutil.which("pactl") or not shutil.which("paplay"):
        pytest.skip(
            "PulseAudio is not installed (apt install pulseaudio pulseaudio-utils "
            "libasound2-plugins libportaudio2)"
        )
    # PortAudio initialises before the sound server exists, as when a USB microphone is
    # plugged in after start-up: the device list must be re-read to find `pulse`.
    import sounddevice  # noqa: F401

    if subprocess.run(["pactl", "info"], capture_output=True, timeout=20).returncode != 0:
        # As root PulseAudio warns that it is meant for users but runs fine per session.
        start = subprocess.run(
            ["pulseaudio", "--start", "--exit-idle-time=-1"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert start.returncode == 0, f"pulseaudio --start failed: {start.stderr}"
        for _ in range(50):
            if subprocess.run(["pactl", "info"], capture_output=True, timeout=20).returncode == 0:
                break
            time.sleep(0.1)
    sink = f"sf_test_{os.getpid()}"
    module = _pactl("load-module", "module-null-sink", f"sink_name={sink}")
    rate = 44_100  # played at a rate unlike the model's: capture must resample
    t = np.arange(int(WAV_S * rate)) / rate
    pcm = np.where((t >= TONE_AT) & (t < TONE_AT + TONE_S), 0.5 * np.sin(2 * np.pi * 1000 * t), 0)
    wav = tmp_path_factory.mktemp("mic") / "tone.wav"
    sf.write(wav, pcm.astype(np.float32), rate)
    old = os.environ.get("PULSE_SOURCE")
    os.environ["PULSE_SOURCE"] = f"{sink}.monitor"  # what ALSA's `pulse` device records
    try:
        yield sink, wav
    finally:
        if old is None:
            os.environ.pop("PULSE_SOURCE", None)
        else:
            os.environ["PULSE_SOURCE"] = old
        _pactl("unload-module", module)


def test_capture_through_portaudio_is_complete_and_on_time(pulse_monitor):
    from soundflow.runtime.mic import MicSource, list_input_devices

    sink, wav = pulse_monitor
    assert any(d["name"] == "pulse" for d in list_input_devices()), (
        "PortAudio has no ALSA 'pulse' device: apt install libasound2-plugins"
    )
    src = MicSource("pulse")
    assert src.native_rate != 16_000  # the device's own rate, resampled by the source
    src.start()
    # A fresh null sink takes a moment to resume; the "microphone" is live from its first
    # sample on, which is stream time 0.
    deadline = time.monotonic() + 10
    while src.ring.total_written == 0:
        assert time.monotonic() < deadline, "the monitor source delivered no audio"
        time.sleep(0.005)
    t0 = time.monotonic()
    time.sleep(0.4)
    played_at = time.monotonic() - t0
    subprocess.run(["paplay", "-d", sink, str(wav)], check=True, timeout=30)
    time.sleep(0.6)
    src.stop()
    wall = time.monotonic() - t0
    chunks = []
    while (c := src.read_chunk(6400)) is not None:
        chunks.append(c)
    audio = np.concatenate(chunks)
    assert src.overruns == 0
    # Every captured sample comes out: the stream is as long as the capture (within the
    # device's start-up and buffering slack), in exact 400 ms chunks.
    assert abs(len(chunks) * 0.4 - wall) < 0.8, (len(chunks), wall)
    loud = np.flatnonzero(np.abs(audio) > 0.1)
    assert loud.size, "no tone captured from the null sink's monitor"
    onset, offset = loud[0] / 16_000, loud[-1] / 16_000
    assert abs(onset - (played_at + TONE_AT)) < 0.5, (onset, played_at)
    assert abs((offset - onset) - TONE_S) < 0.1  # the tone's length survives capture
    seg = audio[loud[0] : loud[-1]]
    peak = np.argmax(np.abs(np.fft.rfft(seg * np.hanning(len(seg))))) * 16_000 / len(seg)
    assert abs(peak - 1000) < 5  # resampled from the device rate correctly


def test_soundflow_listen_device_captures_the_monitor(pulse_monitor, smoke_bundle, tmp_path):
    sink, wav = pulse_monitor
    recorded = tmp_path / "heard.wav"
    exe = shutil.which("soundflow")
    cmd = [exe] if exe else [sys.executable, "-m", "soundflow.cli"]
    cmd += [
        "listen",
        "--device",
        "pulse",
        "--bundle",
        str(smoke_bundle),
        "--jsonl",
        "--mode",
        "alert",
        "--stats",
        "0.4",
        "--record",
        str(recorded),
    ]
    p = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PULSE_SOURCE": f"{sink}.monitor"},
    )
    try:
        while "listening" not in (line := p.stderr.readline()):
            assert line and p.poll() is None, p.stderr.read()
        first = json.loads(p.stdout.readline())  # stats after the first 0.4 s of audio
        assert first["type"] == "stats" and first["chunks"] == 1
        t0 = time.monotonic() - 0.4
        subprocess.run(["paplay", "-d", sink, str(wav)], check=True, timeout=30)
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        wall = time.monotonic() - t0
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0, err
    events = [first] + [json.loads(line) for line in out.splitlines()]
    summary = events[-1]
    assert summary["type"] == "summary" and summary["error"] is None
    assert summary["source"] == "mic:pulse" and summary["interrupted"] is True
    assert summary["overruns"] == 0
    assert abs(summary["chunks"] * 0.4 - wall) < 1.0, (summary["chunks"], wall)
    stats = [e for e in events if e["type"] == "stats"]
    assert [s["chunks"] for s in stats] == sorted(s["chunks"] for s in stats) and stats
    # `--record`: what PortAudio captured, resampled, as the loop read it: one sample per
    # sample of stream time, and the played tone in it whole
    heard, rate = sf.read(recorded, dtype="float32")
    assert rate == 16_000 and len(heard) == summary["chunks"] * 6_400
    loud = np.flatnonzero(np.abs(heard) > 0.25)
    assert loud.size and abs((loud[-1] - loud[0]) / rate - TONE_S) < 0.05, loud[[0, -1]]
    # What the embedded default answers is asserted on files (test_listen_cli), where the
    # audio is deterministic; a null sink starts from digital zeros, which no training
    # stream contains, and the default model can fire on that onset.
