"""Procedural sounds: alarms, bells, horns, whistles, beds and everyday noises, from numpy.

Every generator draws its parameters through `Params`, which gives the train and eval
splits disjoint bands of each range, so eval sounds are never ones training heard.
`SOUNDS` pairs each generator with its label, category, tags, alert flag and caption, read
from sounds.json beside this file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from soundflow.audio import SAMPLE_RATE

SR = SAMPLE_RATE
EVAL_BANDS = (2, 5)  # of 8 equal bands per parameter range; train draws from the other 6


class Params:
    """Draw generator parameters from the split's bands of each range."""

    def __init__(self, rng: np.random.Generator, split: str) -> None:
        self.rng = rng
        self.bands = (
            EVAL_BANDS if split == "eval" else tuple(b for b in range(8) if b not in EVAL_BANDS)
        )

    def u(self, lo: float, hi: float) -> float:
        band = int(self.rng.choice(self.bands))
        return lo + (hi - lo) * (band + self.rng.uniform()) / 8

    def i(self, lo: int, hi: int) -> int:
        return int(round(self.u(lo, hi)))


def _t(n: int) -> np.ndarray:
    return np.arange(n) / SR


def _bandnoise(
    rng: np.random.Generator, n: int, lo: float, hi: float, order: int = 4
) -> np.ndarray:
    sos = signal.butter(order, [lo, min(hi, SR / 2 - 100)], "bandpass", fs=SR, output="sos")
    return signal.sosfilt(sos, rng.standard_normal(n))


def _lowpass(x: np.ndarray, hz: float, order: int = 4) -> np.ndarray:
    return signal.sosfilt(signal.butter(order, hz, "lowpass", fs=SR, output="sos"), x)


def _harmonic(f0: np.ndarray, n_harm: int, tilt: float = 0.6) -> np.ndarray:
    """Sum of harmonics of an f0 contour (Hz per sample), amplitudes tilt**k, band-limited."""
    phase = 2 * np.pi * np.cumsum(f0) / SR
    out = np.zeros(len(f0))
    for k in range(1, n_harm + 1):
        alias = (k * f0) < SR / 2 - 200
        out += (tilt ** (k - 1)) * np.sin(k * phase) * alias
    return out


def _gate(n: int, on_off: list[tuple[float, float]], ramp_ms: float = 5.0) -> np.ndarray:
    """Envelope from (start_s, end_s) segments with short ramps (real devices click less)."""
    env = np.zeros(n)
    for a, b in on_off:
        env[int(a * SR) : int(b * SR)] = 1.0
    k = max(1, int(SR * ramp_ms / 1000))
    return np.convolve(env, np.ones(k) / k, mode="same")


def _decay(n: int, tau_s: float) -> np.ndarray:
    return np.exp(-_t(n) / tau_s)


def _norm(x: np.ndarray, peak: float = 0.8) -> np.ndarray:
    return (x * peak / (np.max(np.abs(x)) + 1e-9)).astype(np.float32)


# --- alert-worthy -------------------------------------------------------------------------


def smoke_alarm(p: Params) -> np.ndarray:
    """ISO 8201 temporal-three: three 0.5 s beeps, 0.5 s apart, then 1.5 s pause."""
    f, cycles = p.u(2800, 3600), p.i(2, 4)
    segs = [(c * 4.0 + k * 1.0, c * 4.0 + k * 1.0 + 0.5) for c in range(cycles) for k in range(3)]
    n = int((cycles * 4.0) * SR)
    return _norm(_harmonic(np.full(n, f), 3, 0.3) * _gate(n, segs))


def co_alarm(p: Params) -> np.ndarray:
    """Temporal-four: four 0.1 s beeps, 0.1 s apart, then ~5 s pause."""
    f, cycles = p.u(3000, 3600), p.i(1, 2)
    segs = [(c * 5.8 + k * 0.2, c * 5.8 + k * 0.2 + 0.1) for c in range(cycles) for k in range(4)]
    n = int(cycles * 5.8 * SR)
    return _norm(_harmonic(np.full(n, f), 2, 0.3) * _gate(n, segs))


def siren(p: Params) -> np.ndarray:
    lo, hi = p.u(500, 800), p.u(1200, 1700)
    period = p.u(0.25, 4.0)  # short = yelp, long = wail
    n = int(p.u(4, 9) * SR)
    f0 = lo + (hi - lo) * (0.5 - 0.5 * np.cos(2 * np.pi * _t(n) / period))
    approach = np.linspace(p.u(0.2, 1.0), 1.0, n)  # a passing vehicle grows louder
    return _norm(_harmonic(f0, 6, 0.5) * approach)


def phone_ring(p: Params) -> np.ndarray:
    n_rings = p.i(2, 4)
    if p.rng.uniform() < 0.5:  # electronic: dual tone, 2 s on, 4 s off
        f1, f2 = p.u(400, 480), p.u(440, 520)
        segs = [(k * 6.0, k * 6.0 + 2.0) for k in range(n_rings)]
        n = int((n_rings * 6.0 - 3.5) * SR)
        x = np.sin(2 * np.pi * f1 * _t(n)) + np.sin(2 * np.pi * f2 * _t(n))
    else:  # bell trill: a bright tone chopped at ~20 Hz
        f, trill = p.u(900, 1800), p.u(14, 26)
        segs = [(k * 3.0, k * 3.0 + 1.2) for k in range(n_rings)]
        n = int((n_rings * 3.0 - 1.5) * SR)
        x = _harmonic(np.full(n, f), 5, 0.5) * (
            0.5 + 0.5 * np.sign(np.sin(2 * np.pi * trill * _t(n)))
        )
    return _norm(x * _gate(n, segs))


def _bell(n: int, f: float, tau: float, ratios=(1.0, 2.0, 2.76, 5.4)) -> np.ndarray:
    return sum(
        (0.6**k) * np.sin(2 * np.pi * f * r * _t(n)) * _decay(n, tau / (1 + k))
        for k, r in enumerate(ratios)
    )


def doorbell(p: Params) -> np.ndarray:
    """Ding-dong: two struck-bar tones a third apart."""
    f, tau = p.u(500, 900), p.u(0.3, 0.9)
    n = int(SR * 2.0)
    ding = _bell(n, f, tau)
    dong = np.concatenate([np.zeros(int(0.55 * SR)), _bell(n - int(0.55 * SR), f * 0.8, tau)])
    return _norm(ding + dong)


def car_horn(p: Params) -> np.ndarray:
    f = p.u(350, 500)
    beeps = [(0.0, p.u(0.3, 1.5))]
    if p.rng.uniform() < 0.5:
        beeps.append((beeps[0][1] + 0.2, beeps[0][1] + 0.2 + p.u(0.2, 0.8)))
    n = int((beeps[-1][1] + 0.1) * SR)
    x = _harmonic(np.full(n, f), 12, 0.8) + _harmonic(np.full(n, f * 1.26), 12, 0.8)
    return _norm(x * _gate(n, beeps, 15))


def kettle_whistle(p: Params) -> np.ndarray:
    n = int(p.u(3, 7) * SR)
    f0 = np.linspace(p.u(1200, 1800), p.u(2000, 3000), n) + 30 * np.sin(2 * np.pi * 6 * _t(n))
    rise = np.minimum(1, _t(n) / p.u(0.5, 2.0))
    breath = _bandnoise(p.rng, n, 1500, 4000) * 0.1
    return _norm((_harmonic(f0, 2, 0.2) + breath) * rise)


def glass_break(p: Params) -> np.ndarray:
    n = int(p.u(0.8, 1.6) * SR)
    crash = p.rng.standard_normal(n) * _decay(n, p.u(0.02, 0.08))
    x = _lowpass(crash, 7000) * 2
    for _ in range(p.i(6, 14)):  # shards: short high resonances at random moments
        at, f = int(p.rng.uniform(0, 0.6) * n), p.rng.uniform(2500, 7000)
        m = n - at
        x[at:] += 0.4 * np.sin(2 * np.pi * f * _t(m)) * _decay(m, p.rng.uniform(0.01, 0.06))
    return _norm(x)


def baby_cry(p: Params) -> np.ndarray:
    parts = []
    for _ in range(p.i(2, 4)):
        m = int(p.u(0.6, 1.4) * SR)
        base = p.u(350, 550)
        f0 = base * (1 + 0.25 * np.sin(np.pi * _t(m) / (m / SR))) + 15 * np.sin(
            2 * np.pi * 7 * _t(m)
        )
        voice = _harmonic(f0, 12, 0.75) * np.sin(np.pi * _t(m) / (m / SR)) ** 0.5
        sos = signal.butter(2, [900, 3500], "bandpass", fs=SR, output="sos")  # "waa" formant
        parts += [signal.sosfilt(sos, voice) + 0.2 * voice, np.zeros(int(p.u(0.2, 0.5) * SR))]
    return _norm(np.concatenate(parts))


# --- ordinary sounds and hard negatives ----------------------------------------------------


def dog_bark(p: Params) -> np.ndarray:
    parts = []
    for _ in range(p.i(1, 4)):
        m = int(p.u(0.12, 0.25) * SR)
        f0 = np.linspace(p.u(300, 600), p.u(200, 400), m)
        burst = _harmonic(f0, 10, 0.7) + 0.5 * p.rng.standard_normal(m)
        parts += [
            _lowpass(burst, 3000) * np.sin(np.pi * _t(m) / (m / SR)),
            np.zeros(int(p.u(0.15, 0.4) * SR)),
        ]
    return _norm(np.concatenate(parts))


def knock(p: Params) -> np.ndarray:
    gap, f = p.u(0.15, 0.3), p.u(120, 260)
    n = int((p.i(2, 4) * gap + 0.3) * SR)
    x = np.zeros(n)
    for k in range(int((n / SR - 0.3) / gap)):
        at = int(k * gap * SR)
        m = n - at
        x[at:] += (np.sin(2 * np.pi * f * _t(m)) + 0.3 * p.rng.standard_normal(m)) * _decay(m, 0.02)
    return _norm(x)


def footsteps(p: Params) -> np.ndarray:
    gap = p.u(0.4, 0.7)
    n = int(p.u(2, 5) * SR)
    x = np.zeros(n)
    for at in np.arange(0, n / SR - 0.2, gap):
        i, m = int(at * SR), int(0.15 * SR)
        x[i : i + m] += _lowpass(p.rng.standard_normal(m), p.u(600, 1500)) * _decay(m, 0.03)
    return _norm(x, 0.5)


def microwave_beep(p: Params) -> np.ndarray:
    """Three short beeps: a beep that is not an alarm (hard negative for smoke_alarm)."""
    f, k = p.u(900, 2200), p.i(1, 3)
    segs = [(i * 0.5, i * 0.5 + 0.15) for i in range(k)]
    n = int((k * 0.5 + 0.1) * SR)
    return _norm(np.sin(2 * np.pi * f * _t(n)) * _gate(n, segs), 0.5)


def kettle_boil(p: Params) -> np.ndarray:
    """A kettle heating, not whistling: rumble and bubbles (hard negative)."""
    n = int(p.u(3, 6) * SR)
    x = _bandnoise(p.rng, n, 60, 600) * np.linspace(0.3, 1.0, n)
    for at in p.rng.uniform(0, n / SR - 0.05, size=p.i(20, 60)):
        i, m = int(at * SR), int(0.03 * SR)
        x[i : i + m] += 0.5 * np.sin(2 * np.pi * p.rng.uniform(300, 900) * _t(m)) * _decay(m, 0.008)
    return _norm(x, 0.5)


def engine(p: Params) -> np.ndarray:
    n = int(p.u(3, 8) * SR)
    rpm_hz = p.u(12, 45) * (1 + 0.1 * np.sin(2 * np.pi * 0.3 * _t(n)))
    x = _lowpass(_harmonic(rpm_hz, 30, 0.9), 1200) + 0.3 * _bandnoise(p.rng, n, 80, 800)
    return _norm(x * np.minimum(1, _t(n) / 0.5), 0.6)


def typing(p: Params) -> np.ndarray:
    n = int(p.u(2, 6) * SR)
    x = np.zeros(n)
    for at in np.cumsum(p.rng.exponential(p.u(0.08, 0.25), size=200)):
        if at > n / SR - 0.03:
            break
        i, m = int(at * SR), int(0.02 * SR)
        x[i : i + m] += _bandnoise(p.rng, m, 1500, 6000, 2) * _decay(m, 0.004)
    return _norm(x, 0.4)


def clock_tick(p: Params) -> np.ndarray:
    n = int(p.u(3, 6) * SR)
    x = np.zeros(n)
    f = p.u(2000, 4500)
    for k in range(int(n / SR)):
        i, m = k * SR, int(0.01 * SR)
        x[i : i + m] += np.sin(2 * np.pi * f * _t(m)) * _decay(m, 0.002)
    return _norm(x, 0.3)


def vacuum(p: Params) -> np.ndarray:
    n = int(p.u(3, 8) * SR)
    whine = _harmonic(np.full(n, p.u(150, 400)), 8, 0.7)
    x = _bandnoise(p.rng, n, 200, 6000) + 0.3 * whine
    return _norm(x * np.minimum(1, _t(n) / 0.8), 0.6)


def water_tap(p: Params) -> np.ndarray:
    n = int(p.u(2, 6) * SR)
    x = _bandnoise(p.rng, n, p.u(400, 1200), p.u(3000, 7000))
    return _norm(x * (0.7 + 0.3 * np.abs(np.sin(2 * np.pi * p.u(2, 8) * _t(n)))), 0.5)


def dishes(p: Params) -> np.ndarray:
    n = int(p.u(1, 3) * SR)
    x = np.zeros(n)
    for at in p.rng.uniform(0, n / SR - 0.3, size=p.i(3, 10)):
        i = int(at * SR)
        x[i:] += _bell(n - i, p.rng.uniform(1500, 4500), 0.15, (1.0, 2.3, 3.9))
    return _norm(x, 0.6)


def applause(p: Params) -> np.ndarray:
    n = int(p.u(2, 5) * SR)
    x = np.zeros(n)
    for at in p.rng.uniform(0, n / SR - 0.02, size=int(n / SR * p.u(40, 120))):
        i, m = int(at * SR), int(0.015 * SR)
        x[i : i + m] += _bandnoise(p.rng, m, 500, 5000, 2) * _decay(m, 0.004)
    return _norm(x, 0.6)


def bird_chirp(p: Params) -> np.ndarray:
    parts = []
    for _ in range(p.i(2, 6)):
        m = int(p.u(0.05, 0.2) * SR)
        f0 = np.linspace(p.u(2500, 4000), p.u(3000, 6000), m)
        parts += [_harmonic(f0, 2, 0.2) * np.hanning(m), np.zeros(int(p.u(0.05, 0.3) * SR))]
    return _norm(np.concatenate(parts), 0.5)


def cough(p: Params) -> np.ndarray:
    parts = []
    for _ in range(p.i(1, 3)):
        m = int(p.u(0.2, 0.4) * SR)
        burst = _bandnoise(p.rng, m, p.u(300, 600), 4000) * _decay(m, 0.08)
        parts += [burst, np.zeros(int(0.25 * SR))]
    return _norm(np.concatenate(parts))


def music(p: Params) -> np.ndarray:
    """A short additive-synth tune over a bass line (pentatonic, so it is always in key)."""
    n_notes, beat = p.i(8, 20), p.u(0.18, 0.45)
    root = p.u(180, 330)
    scale = root * 2 ** (np.array([0, 2, 4, 7, 9, 12, 14]) / 12)
    n = int((n_notes * beat + 1.0) * SR)
    x = np.zeros(n)
    for k in range(n_notes):
        i = int(k * beat * SR)
        x[i:] += _bell(n - i, float(p.rng.choice(scale)), p.u(0.2, 0.6), (1.0, 2.0, 3.0))
        if k % 4 == 0:
            x[i:] += 0.6 * np.sin(2 * np.pi * root / 2 * _t(n - i)) * _decay(n - i, 4 * beat)
    return _norm(x, 0.6)


# --- beds (looped under a whole stream) ---------------------------------------------------


def bed_room(p: Params, n: int) -> np.ndarray:
    return _norm(_lowpass(p.rng.standard_normal(n), p.u(800, 3000), 2), 0.3)


def bed_rain(p: Params, n: int) -> np.ndarray:
    x = _bandnoise(p.rng, n, 400, 7000) * 0.5
    drops = p.rng.uniform(size=n) < p.u(0.0005, 0.003)
    x += signal.lfilter([1.0], [1.0, -0.97], drops * p.rng.standard_normal(n)) * 0.3
    return _norm(x, 0.5)


def bed_wind(p: Params, n: int) -> np.ndarray:
    gust = 0.5 + 0.5 * _lowpass(p.rng.standard_normal(n), 0.5, 2) * 40
    return _norm(_lowpass(p.rng.standard_normal(n), p.u(200, 700)) * np.clip(gust, 0.1, 2.0), 0.5)


def bed_traffic(p: Params, n: int) -> np.ndarray:
    rumble = _lowpass(p.rng.standard_normal(n), p.u(300, 900))
    swell = 0.6 + 0.4 * np.sin(2 * np.pi * _t(n) / p.u(5, 15))
    return _norm(rumble * swell, 0.5)


def bed_hum(p: Params, n: int) -> np.ndarray:
    """Fridge / fan / HVAC: mains-ish hum over soft air noise."""
    hum = _harmonic(np.full(n, p.u(50, 120)), 6, 0.6)
    return _norm(0.4 * hum + _lowpass(p.rng.standard_normal(n), 1500, 2), 0.4)


@dataclass(frozen=True)
class Sound:
    label: str  # [a-z0-9_], used in alert tags
    category: str  # Human, Daily, Equipment, Traffic, Nature, Music, Speech
    tags: tuple[str, ...]
    alert: bool  # does its onset deserve a proactive alert
    caption: str  # "a smoke alarm is going off": the response text
    make: Callable[[Params], np.ndarray]


def _load_sounds() -> dict[str, Sound]:
    """sounds.json, in file order; each label is made by the generator of the same name above."""
    rows = json.loads(Path(__file__).with_name("sounds.json").read_text(encoding="utf-8"))
    out = {}
    for row in rows:
        make = globals().get(row["label"])
        if getattr(make, "__module__", None) != __name__:
            raise ValueError(f"sounds.json: no generator named {row['label']!r} in {__name__}")
        out[row["label"]] = Sound(**{**row, "tags": tuple(row["tags"])}, make=make)
    return out


SOUNDS = _load_sounds()

BEDS: dict[str, Callable[[Params, int], np.ndarray]] = {
    "room": bed_room,
    "rain": bed_rain,
    "wind": bed_wind,
    "traffic": bed_traffic,
    "hum": bed_hum,
}
