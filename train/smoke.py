"""Toy streams for the smoke recipe: tones and chirps in noise, with Contract-1 targets.

Small enough to generate on the fly, so tests always have a real trained checkpoint.
"""

from __future__ import annotations

import numpy as np

from soundflow import audio, protocol

TONES = {"low": 500.0, "mid": 1000.0, "high": 2000.0}  # Hz
ALERT_TONES = {"high": "a high beep is sounding"}  # "low"/"mid" are the hard negatives
ASSIST_RESPONSE = protocol.intent_tag("time") + " it is noon"


def _tone(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * audio.SAMPLE_RATE)) / audio.SAMPLE_RATE
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # 10 ms ramps: no clicks
    return (rng.uniform(0.2, 0.5) * env * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _chirp(seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * audio.SAMPLE_RATE)) / audio.SAMPLE_RATE
    f0, f1 = 300.0, 3000.0
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
    return (rng.uniform(0.2, 0.5) * env * np.sin(phase)).astype(np.float32)


def toy_stream(seed: int, seconds: float = 12.8) -> tuple[np.ndarray, dict]:
    """One stream: (PCM float32 at 16 kHz, its Contract-1 JSON record)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * audio.SAMPLE_RATE)
    pcm = (rng.normal(0, 1, n) * rng.uniform(0.002, 0.01)).astype(np.float32)
    events, words = [], []
    targets: dict[str, list] = {task: [] for task in protocol.TASKS}
    t = rng.uniform(0.2, 1.5)
    while t < seconds - 1.5:
        kind = rng.choice(["low", "mid", "high", "chirp"], p=[0.3, 0.25, 0.25, 0.2])
        dur = float(rng.uniform(0.3, 1.0))
        clip = _chirp(dur, rng) if kind == "chirp" else _tone(TONES[kind], dur, rng)
        start = int(t * audio.SAMPLE_RATE)
        pcm[start : start + len(clip)] += clip
        end = t + dur
        if kind == "chirp":
            events.append(
                {
                    "start": t,
                    "end": end,
                    "category": "Speech",
                    "label": "instruction",
                    "alert": False,
                    "source": "procedural:chirp",
                }
            )
            targets["assist"].append({"t": end, "text": ASSIST_RESPONSE})
        else:
            alert = kind in ALERT_TONES
            events.append(
                {
                    "start": t,
                    "end": end,
                    "category": "Equipment",
                    "label": f"tone_{kind}",
                    "alert": alert,
                    "source": "procedural:tone",
                }
            )
            words.append(
                {"word": kind, "start": t, "end": end, "speaker": "tone", "addressed": False}
            )
            targets["transcribe"].append({"t": end, "text": kind})
            if alert:
                targets["alert"].append(
                    {"t": t, "text": f"{protocol.alert_tag('tone_' + kind)} {ALERT_TONES[kind]}"}
                )
        t = end + rng.uniform(0.4, 2.5)
    record = {
        "id": f"toy-{seed:06d}",
        "audio": None,
        "sample_rate": audio.SAMPLE_RATE,
        "duration": seconds,
        "split": "toy",
        "scenario": "toy",
        "seed": seed,
        "events": events,
        "words": words,
        "targets": targets,
    }
    return np.clip(pcm, -1, 1), record


def write_toy_split(out, n_streams: int = 6, seed: int = 10_000, seconds: float = 30.0):
    """Toy streams as a Contract-1 shard directory (streams.jsonl + FLAC), for `soundflow
    eval` of the smoke model; seeds from 10_000 up are never used by its training."""
    import json
    from pathlib import Path

    import soundfile as sf

    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    with open(out / "streams.jsonl", "w") as f:
        for i in range(n_streams):
            pcm, record = toy_stream(seed + i, seconds)
            record["audio"] = f"audio/{record['id']}.flac"
            record["split"] = "eval"
            sf.write(out / record["audio"], pcm, audio.SAMPLE_RATE, subtype="PCM_16")
            f.write(json.dumps(record) + "\n")
    return out
