"""Alarm sounds written from the standards (ISO 8201 T3/T4, siren modes, national ring
cadences, chimes, horns), wide-ranging, and synthetic hard negatives, for the alert head.

train/data/procedural.py keeps its narrower generators (the tagger trains on them); these add
the variety real devices have. Each generator takes a procedural.Params, so train and eval
(dev) draw disjoint bands of every range, and returns float32 audio at 16 kHz.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import signal

from soundflow.audio import SAMPLE_RATE
from soundflow.train.data.procedural import Params

SR = SAMPLE_RATE


def _t(n: int) -> np.ndarray:
    return np.arange(n) / SR


def _gate(n: int, segs, ramp_ms: float = 3.0) -> np.ndarray:
    env = np.zeros(n)
    for a, b in segs:
        env[int(a * SR) : int(b * SR)] = 1.0
    k = max(1, int(SR * ramp_ms / 1000))
    return np.convolve(env, np.ones(k) / k, mode="same")


def _tone(f: np.ndarray | float, n: int, wave: str, p: Params) -> np.ndarray:
    """A tone of (per-sample) frequency f: sine, piezo (odd harmonics, a square's or a
    softer one), saw-like (all harmonics) or clipped; band-limited below Nyquist."""
    f = np.broadcast_to(np.asarray(f, np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f) / SR
    if wave == "sine":
        return np.sin(phase)
    ks = range(1, 16, 2) if wave in ("square", "piezo") else range(1, 12)
    tilt = {"square": 1.0, "piezo": float(p.rng.uniform(1.3, 2.5)), "saw": 1.0}.get(wave, 1.0)
    out = np.zeros(n)
    for k in ks:
        out += np.sin(k * phase) / k**tilt * (k * f < SR / 2 - 300)
    if wave == "clipped":
        out = np.tanh(float(p.rng.uniform(1.5, 5.0)) * out)
    return out


def _wave(p: Params, choices=("sine", "square", "piezo", "saw", "clipped")) -> str:
    return str(p.rng.choice(choices))


def _norm(x: np.ndarray) -> np.ndarray:
    return (x * 0.8 / (np.abs(x).max() + 1e-9)).astype(np.float32)


def _jitter(p: Params, s: float, tol: float = 0.1) -> float:
    """A duration within the standard's tolerance (ISO 8201: about +-10 %)."""
    return s * float(p.rng.uniform(1 - tol, 1 + tol))


def _piezo_f(p: Params, n: int, f: float) -> np.ndarray:
    """A piezo sounder's pitch: steady, or warbling (a few Hz, tens of Hz deep)."""
    if p.rng.uniform() < 0.4:
        return np.full(n, f)
    return f + p.u(10, 120) * np.sin(2 * np.pi * p.u(3, 16) * _t(n))


# --- alert-worthy ------------------------------------------------------------------------


def smoke_alarm(p: Params) -> np.ndarray:
    """ISO 8201 / NFPA 72 temporal-three: three 0.5 s pulses 0.5 s apart, 1.5 s off; a piezo
    at 2.7-3.6 kHz (or the 520 Hz square wave of low-frequency alarms), steady or warbling."""
    on, off, pause = _jitter(p, 0.5), _jitter(p, 0.5), _jitter(p, 1.5)
    cycles = p.i(1, 4)
    period = 3 * on + 2 * off + pause
    segs = [(c * period + k * (on + off), c * period + k * (on + off) + on)
            for c in range(cycles) for k in range(3)]  # fmt: skip
    n = int(cycles * period * SR)
    low = p.rng.uniform() < 0.15
    f = p.u(480, 560) if low else p.u(2700, 3600)
    wave = "square" if low else _wave(p, ("piezo", "square", "sine", "piezo"))
    return _norm(_tone(_piezo_f(p, n, f), n, wave, p) * _gate(n, segs))


def co_alarm(p: Params) -> np.ndarray:
    """Temporal-four (ISO 8201, UL 2034): four 0.1 s pulses 0.1 s apart, then about 5 s off
    (a stream hears one or two cycles); piezo 2.7-3.6 kHz."""
    on, off = _jitter(p, 0.1, 0.2), _jitter(p, 0.1, 0.2)
    pause = p.u(1.0, 5.0)  # the stream is cut before the full 5 s sometimes
    cycles = p.i(1, 3)
    period = 4 * on + 3 * off + pause
    segs = [(c * period + k * (on + off), c * period + k * (on + off) + on)
            for c in range(cycles) for k in range(4)]  # fmt: skip
    n = int(cycles * period * SR)
    f = p.u(2700, 3600)
    return _norm(
        _tone(_piezo_f(p, n, f), n, _wave(p, ("piezo", "square", "sine")), p) * _gate(n, segs)
    )


def siren(p: Params) -> np.ndarray:
    """Emergency-vehicle modes across 400-2000 Hz: wail (a slow sweep, 2-8 s), yelp (fast,
    0.15-0.5 s), hi-lo (two tones alternating, ratio 1.15-1.5, 0.3-1.2 s each), phaser
    (very fast, 0.06-0.15 s); an electronic or mechanical timbre."""
    n = int(p.u(3, 9) * SR)
    t = _t(n)
    mode = str(p.rng.choice(["wail", "yelp", "hilo", "hilo", "phaser"]))
    lo = p.u(400, 900)
    hi = min(lo * p.u(1.15, 2.4), 2000.0)
    if mode == "hilo":
        half = p.u(0.3, 1.2)
        f = np.where((t // half) % 2 == 0, lo, hi)
    else:
        period = {"wail": p.u(2, 8), "yelp": p.u(0.15, 0.5), "phaser": p.u(0.06, 0.15)}[mode]
        ph = (t / period + p.rng.uniform()) % 1.0
        if p.rng.uniform() < 0.5:  # rise then fall, or a sawtooth rise (many yelps)
            shape = 0.5 - 0.5 * np.cos(2 * np.pi * ph)
        else:
            shape = ph
        f = lo + (hi - lo) * shape
    if p.rng.uniform() < 0.3:  # passing: Doppler and a swell
        f = f * (1 + 0.03 * np.tanh((t - t[-1] / 2) * -p.u(0.5, 2)))
    x = _tone(f, n, _wave(p, ("square", "saw", "sine", "clipped")), p)
    swell = np.linspace(p.u(0.2, 1.0), 1.0, n) if p.rng.uniform() < 0.5 else 1.0
    return _norm(x * swell)


def car_horn(p: Params) -> np.ndarray:
    """Vehicle horns: one or two diaphragm tones (300-700 Hz, a pair about a third apart),
    rich in harmonics and clipped; a honk, two, or a long press."""
    f1 = p.u(300, 700)
    tones = [f1] if p.rng.uniform() < 0.3 else [f1, f1 * p.u(1.15, 1.35)]
    pattern = str(p.rng.choice(["one", "two", "long", "three"]))
    if pattern == "one":
        segs = [(0.0, p.u(0.2, 0.8))]
    elif pattern == "long":
        segs = [(0.0, p.u(1.0, 3.0))]
    else:
        segs, at = [], 0.0
        for _ in range(2 if pattern == "two" else 3):
            d = p.u(0.1, 0.6)
            segs.append((at, at + d))
            at += d + p.u(0.08, 0.3)
    n = int((segs[-1][1] + 0.15) * SR)
    x = sum(_tone(np.full(n, f), n, _wave(p, ("clipped", "saw", "square")), p) for f in tones)
    return _norm(np.tanh(1.5 * x) * _gate(n, segs, 10))


def _strike(n: int, f: float, tau: float, ratios, amps) -> np.ndarray:
    """A struck bar, tube or bell: inharmonic partials, the higher decaying faster."""
    t = _t(n)
    return sum(a * np.sin(2 * np.pi * f * r * t) * np.exp(-t * r**0.7 / tau)
               for r, a in zip(ratios, amps, strict=False) if f * r < SR / 2 - 300)  # fmt: skip


BAR = (1.0, 2.756, 5.404, 8.933)  # a free-free bar's modes (chime doorbells)
TUBE = (1.0, 2.76, 5.40, 2.0, 3.0)  # tubular chimes: bar modes plus near-harmonics
BELL = (0.5, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0)  # a church bell's hum, prime, tierce, quint, ...


def doorbell(p: Params) -> np.ndarray:
    """Chimes with decaying partials: ding-dong (a falling third, fourth or fifth), a single
    ding, three or four notes (Westminster's), or an electronic two-tone; or a buzzer."""
    kind = str(
        p.rng.choice(["dingdong", "dingdong", "ding", "westminster", "electronic", "buzzer"])
    )
    f = p.u(400, 1400)
    if kind == "buzzer":
        n = int(p.u(0.5, 2.0) * SR)
        x = _tone(np.full(n, p.u(60, 250)), n, "saw", p) + 0.3 * np.random.default_rng(
            int(p.rng.integers(1 << 30))
        ).standard_normal(n)
        return _norm(np.tanh(3 * x) * _gate(n, [(0.0, n / SR - 0.05)], 8))
    if kind == "ding":
        notes = [1.0]
    elif kind == "westminster":
        notes = [2 ** (s / 12) for s in ([4, 2, 0, -5] if p.rng.uniform() < 0.5 else [0, 4, 2, -5])]
    else:
        notes = [1.0, 2 ** (-float(p.rng.choice([3, 4, 5, 7])) / 12)]
    gap, tau = p.u(0.35, 0.9), p.u(0.4, 1.6)
    ratios = BAR if kind != "electronic" else (1.0, 2.0, 3.0)
    if kind != "electronic" and p.rng.uniform() < 0.4:
        ratios = TUBE if p.rng.uniform() < 0.6 else BELL
    amps = [1.0] + [float(p.rng.uniform(0.1, 0.6)) for _ in ratios[1:]]
    n = int((gap * len(notes) + tau * 2.5) * SR)
    x = np.zeros(n)
    for k, r in enumerate(notes):
        i = int(k * gap * SR)
        x[i:] += _strike(n - i, f * r, tau, ratios, amps)
    return _norm(x)


# (tone Hz, second tone Hz or 0, amplitude modulation Hz or 0, cadence (on, off, ...) s)
RING_CADENCES = {
    "north_america": (440, 480, 0, (2.0, 4.0)),
    "uk": (400, 450, 0, (0.4, 0.2, 0.4, 2.0)),
    "europe_cept": (425, 0, 0, (1.0, 4.0)),
    "france": (440, 0, 0, (1.5, 3.5)),
    "germany": (425, 0, 0, (1.0, 4.0)),
    "japan": (400, 0, 16, (1.0, 2.0)),
    "australia": (400, 425, 25, (0.4, 0.2, 0.4, 2.0)),
    "india": (400, 25, 0, (0.4, 0.2, 0.4, 2.0)),
    "italy": (425, 0, 0, (1.0, 4.0)),
}


def phone_ring(p: Params) -> np.ndarray:
    """Telephones: the ringing cadences of several countries (ITU-T E.180 tones; a phone's
    ringer plays them louder and brighter), an electromechanical bell (a hammer at 15-30 Hz
    on two gongs), or an electronic warble (two tones alternating at 8-25 Hz)."""
    kind = str(p.rng.choice(["cadence", "cadence", "bell", "warble"]))
    cycles = p.i(1, 3)
    if kind == "cadence":
        f1, f2, am, cad = RING_CADENCES[str(p.rng.choice(list(RING_CADENCES)))]
        cad = tuple(_jitter(p, c) for c in cad)
        shift = p.u(0.9, 1.1)
        n_off = cad[-1] * p.u(0.3, 1.0)  # the stream ends or the next ring begins
        period = sum(cad[:-1]) + n_off
        segs, at = [], 0.0
        for _ in range(cycles):
            on = True
            for d in cad[:-1]:
                if on:
                    segs.append((at, at + d))
                at, on = at + d, not on
            at += n_off
        n = int(cycles * period * SR)
        x = _tone(np.full(n, f1 * shift), n, _wave(p, ("sine", "piezo", "square")), p)
        if f2:
            x = x + _tone(np.full(n, f2 * shift), n, "sine", p)
        if am:
            x = x * (0.5 + 0.5 * np.sin(2 * np.pi * am * _t(n)))
        return _norm(x * _gate(n, segs))
    on, off = p.u(0.8, 2.0), p.u(1.0, 4.0)
    segs = [(c * (on + off), c * (on + off) + on) for c in range(cycles)]
    n = int((cycles * (on + off) - off * p.u(0.0, 0.8)) * SR)
    t = _t(n)
    if kind == "bell":
        rate, f = p.u(15, 30), p.u(700, 2200)
        x = np.zeros(n)
        tau = p.u(0.05, 0.2)
        ratios, amps = (1.0, 2.76, 5.4, 1.19), (1.0, 0.5, 0.2, 0.7)
        for k, at in enumerate(np.arange(0, n / SR, 1 / rate)):
            i = int(at * SR)
            x[i:] += _strike(n - i, f * (1.0 if k % 2 else p.u(1.05, 1.25)), tau, ratios, amps)[
                : n - i
            ]
    else:
        f1 = p.u(600, 2500)
        f2 = f1 * p.u(1.1, 1.5)
        f = np.where((t * p.u(8, 25)) % 1.0 < 0.5, f1, f2)
        x = _tone(f, n, _wave(p, ("sine", "piezo", "square")), p)
    return _norm(x * _gate(n, segs))


def alarm(p: Params) -> np.ndarray:
    """Alarm clocks and generic alarms: a digital clock's groups of beeps (1-4 short pulses at
    2-4.5 kHz, repeated every 0.5-1.2 s), a bell clock (a hammer at 15-30 Hz between two
    bells), or a continuous buzzer / pulsed klaxon."""
    kind = str(p.rng.choice(["digital", "digital", "bell", "buzzer"]))
    n = int(p.u(3, 7) * SR)
    t = _t(n)
    if kind == "digital":
        k, on, gap = p.i(1, 4), p.u(0.04, 0.15), p.u(0.04, 0.12)
        period = max(k * (on + gap) + 0.1, p.u(0.5, 1.2))
        segs = [(c * period + j * (on + gap), c * period + j * (on + gap) + on)
                for c in range(int(n / SR / period) + 1) for j in range(k)]  # fmt: skip
        x = _tone(np.full(n, p.u(2000, 4500)), n, _wave(p, ("square", "piezo", "sine")), p)
        return _norm(x * _gate(n, segs, 2))
    if kind == "bell":
        rate, f = p.u(15, 30), p.u(1500, 3500)
        x = np.zeros(n)
        for j, at in enumerate(np.arange(0, n / SR, 1 / rate)):
            i = int(at * SR)
            fr = f if j % 2 else f * p.u(1.05, 1.3)
            x[i:] += _strike(n - i, fr, p.u(0.03, 0.1), (1.0, 2.76, 5.4), (1.0, 0.4, 0.2))
        return _norm(x)
    f = p.u(200, 1200)
    rate = p.u(1, 5)
    x = _tone(np.full(n, f), n, _wave(p, ("clipped", "square", "saw")), p)
    return _norm(x * (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * rate * t))))


def kettle_whistle(p: Params) -> np.ndarray:
    """A steam whistle rising as the pressure builds (1-3.5 kHz), breathy, sometimes two
    pipes beating, with the wobble of turbulent flow."""
    n = int(p.u(2.5, 8) * SR)
    t = _t(n)
    f0 = np.linspace(p.u(900, 2000), p.u(1800, 3500), n) * (
        1 + 0.01 * np.sin(2 * np.pi * p.u(3, 9) * t)
    )
    rng = np.random.default_rng(int(p.rng.integers(1 << 30)))
    wob = signal.sosfilt(
        signal.butter(2, 30, "lowpass", fs=SR, output="sos"), rng.standard_normal(n)
    )
    f = f0 * (1 + 0.005 * wob / (np.abs(wob).max() + 1e-9))
    x = np.sin(2 * np.pi * np.cumsum(f) / SR)
    if p.rng.uniform() < 0.4:
        x += 0.7 * np.sin(2 * np.pi * np.cumsum(f * p.u(1.01, 1.08)) / SR)
    breath = signal.sosfilt(signal.butter(2, [800, 6000], "bandpass", fs=SR, output="sos"),
                            rng.standard_normal(n))  # fmt: skip
    x = x + p.u(0.05, 0.5) * breath / (np.abs(breath).max() + 1e-9)
    return _norm(x * np.minimum(1.0, t / p.u(0.3, 2.5)))


ALARMS: dict[str, Callable[[Params], np.ndarray]] = {
    "smoke_alarm": smoke_alarm,
    "co_alarm": co_alarm,
    "siren": siren,
    "car_horn": car_horn,
    "doorbell": doorbell,
    "phone_ring": phone_ring,
    "alarm": alarm,
    "kettle_whistle": kettle_whistle,
}


# --- hard negatives: what music, games and workshops sound like to an alarm detector ----


def chords(p: Params) -> np.ndarray:
    """Sustained chords (organ, accordion, strings, synth pads): harmonic tones, a few at a
    time, changing every 0.5-2 s, with vibrato (car horns and sirens are not this)."""
    n = int(p.u(3, 8) * SR)
    t = _t(n)
    x = np.zeros(n)
    at, root = 0.0, p.u(110, 440)
    while at < n / SR:
        d = p.u(0.5, 2.0)
        i, j = int(at * SR), min(n, int((at + d) * SR))
        for s in p.rng.choice([0, 3, 4, 7, 10, 12, 16], size=p.i(2, 4), replace=False):
            f = root * 2 ** (s / 12) * (1 + 0.004 * np.sin(2 * np.pi * 5.5 * t[i:j]))
            x[i:j] += _tone(f, j - i, _wave(p, ("saw", "square", "piezo", "sine")), p)
        at += d
        root *= 2 ** (float(p.rng.choice([-5, -2, 0, 2, 5, 7])) / 12)
        root = float(np.clip(root, 100, 600))
    env = _gate(n, [(0, n / SR)], 30)
    return _norm(x * env)


def chiptune(p: Params) -> np.ndarray:
    """A game melody of square or pulse notes (UI jingles and 8-bit music: beeps that move)."""
    beat = p.u(0.07, 0.3)
    notes = p.i(8, 30)
    n = int(notes * beat * SR)
    root = p.u(200, 1200)
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16])
    x = np.zeros(n)
    for k in range(notes):
        i, j = int(k * beat * SR), int((k + p.u(0.5, 1.0)) * beat * SR)
        j = min(j, n)
        f = root * 2 ** (float(p.rng.choice(scale)) / 12)
        x[i:j] += _tone(np.full(j - i, f), j - i, _wave(p, ("square", "piezo", "saw")), p)
    return _norm(x * _gate(n, [(0, n / SR)], 5))


def clinks(p: Params) -> np.ndarray:
    """Hammer on metal, cutlery and glasses: irregular strikes of inharmonic partials, short
    decays (a smithy is neither a doorbell nor breaking glass)."""
    n = int(p.u(2, 6) * SR)
    x = np.zeros(n)
    f = p.u(800, 5000)
    at = 0.0
    while at < n / SR - 0.1:
        i = int(at * SR)
        fr = f * p.u(0.9, 1.1)
        x[i:] += p.u(0.3, 1.0) * _strike(n - i, fr, p.u(0.03, 0.3), (1.0, 2.4, 3.9, 5.4, 6.8),
                                          (1.0, 0.6, 0.5, 0.3, 0.2))  # fmt: skip
        at += p.u(0.15, 1.2)
    return _norm(x)


def crackle(p: Params) -> np.ndarray:
    """A fire or a furnace: a roar of low noise and random crackles (not an explosion)."""
    n = int(p.u(3, 8) * SR)
    rng = np.random.default_rng(int(p.rng.integers(1 << 30)))
    roar = signal.sosfilt(signal.butter(2, p.u(150, 800), "lowpass", fs=SR, output="sos"),
                          rng.standard_normal(n))  # fmt: skip
    pops = (rng.uniform(size=n) < p.u(0.0005, 0.004)) * rng.standard_normal(n)
    pops = signal.lfilter([1.0], [1.0, -0.9], pops)
    return _norm(roar / (np.abs(roar).max() + 1e-9) * p.u(0.3, 1.0) + pops)


NEGATIVES: dict[str, Callable[[Params], np.ndarray]] = {
    "chords": chords,
    "chiptune": chiptune,
    "clinks": clinks,
    "crackle": crackle,
}
