"""The demo stream for `soundflow listen --demo`.

A bundled recording (`soundflow/assets/demo.*`, or `demo.*` inside the bundle) when one
ships; otherwise a procedural scene with the sounds the smoke recipe knows: low and mid
tones (hard negatives), high beeps (an alert) and a rising chirp (an "instruction").
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from soundflow.audio import SAMPLE_RATE

# (start s, seconds, kind) in a 16 s scene
SCENE = (
    (1.2, 0.6, "low"),
    (3.6, 0.8, "high"),
    (6.8, 0.9, "chirp"),
    (9.6, 0.6, "mid"),
    (12.0, 0.8, "high"),
    (14.0, 0.8, "chirp"),
)
TONES = {"low": 500.0, "mid": 1000.0, "high": 2000.0}  # Hz


def find_demo_file(bundle_dir: Path | None = None) -> Path | None:
    places = [Path(str(resources.files("soundflow") / "assets"))]
    if bundle_dir is not None:
        places.insert(0, Path(bundle_dir))
    for place in places:
        for ext in ("flac", "wav", "ogg"):
            p = place / f"demo.{ext}"
            if p.is_file():
                return p
    return None


def procedural_demo(seconds: float = 16.0, seed: int = 0) -> np.ndarray:
    """16 kHz mono float32: quiet noise with the SCENE's tones and chirps."""
    rng = np.random.default_rng(seed)
    pcm = (rng.normal(0, 0.004, int(seconds * SAMPLE_RATE))).astype(np.float32)
    for start, dur, kind in SCENE:
        t = np.arange(int(dur * SAMPLE_RATE)) / SAMPLE_RATE
        env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
        if kind == "chirp":
            phase = 2 * np.pi * (300.0 * t + 2700.0 * t**2 / (2 * dur))
        else:
            phase = 2 * np.pi * TONES[kind] * t
        i = int(start * SAMPLE_RATE)
        pcm[i : i + len(t)] += (0.35 * env * np.sin(phase)).astype(np.float32)
    return np.clip(pcm, -1, 1)
