"""Augmentation for voices, rooms and microphones training never heard (numpy/scipy only).

Per clip: speed/pitch perturbation and a simulated room; per stream: a microphone chain
(band limits, gain, self-noise, soft clipping). Every draw comes from the caller's rng.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr
from scipy import signal

from soundflow.audio import SAMPLE_RATE


@dataclass(frozen=True)
class AugmentConfig:
    speed: tuple[float, float] = (0.9, 1.1)  # resampling factor: changes speed and pitch
    pitch_prob: float = 0.3  # share of sound clips pitch-shifted at constant speed
    pitch_semitones: tuple[float, float] = (-3.0, 3.0)
    room_prob: float = 0.6  # share of clips played through a simulated room
    rt60_s: tuple[float, float] = (0.15, 0.9)  # reverberation time of that room
    drr_db: tuple[float, float] = (-3.0, 12.0)  # direct-to-reverberant ratio
    band_prob: float = 0.7  # share of streams through a band-limited microphone
    low_cut_hz: tuple[float, float] = (60.0, 350.0)
    high_cut_hz: tuple[float, float] = (3400.0, 7600.0)
    mic_noise_db: tuple[float, float] = (-80.0, -55.0)  # dBFS self-noise of the microphone
    clip_prob: float = 0.05  # share of streams driven into soft clipping


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Play x `factor` times faster (pitch moves with it, as on a tape). (n,) -> (n/factor,)."""
    if abs(factor - 1.0) < 1e-3:
        return x
    # Resampling from rate*factor to rate shortens the clip by `factor`.
    return soxr.resample(x, SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32)


def time_stretch(x: np.ndarray, rate: float, n_fft: int = 1024) -> np.ndarray:
    """Phase-vocoder time stretch: `rate` > 1 plays faster, pitch unchanged. (n,) -> (n/rate,)."""
    hop = n_fft // 4
    padded = np.concatenate([x, np.zeros(2 * n_fft, x.dtype)])  # frames cover the very end
    _, _, spec = signal.stft(padded, nperseg=n_fft, noverlap=n_fft - hop)  # (bins, frames)
    steps = np.arange(0, spec.shape[1] - 1, rate)
    expected = 2 * np.pi * hop * np.arange(spec.shape[0]) / n_fft  # phase advance per hop
    phase = np.angle(spec[:, 0])
    out = np.empty((spec.shape[0], len(steps)), np.complex128)
    for k, t in enumerate(steps):
        i, frac = int(t), t - int(t)
        mag = (1 - frac) * np.abs(spec[:, i]) + frac * np.abs(spec[:, i + 1])
        out[:, k] = mag * np.exp(1j * phase)
        dphi = np.angle(spec[:, i + 1]) - np.angle(spec[:, i]) - expected
        phase += expected + (dphi + np.pi) % (2 * np.pi) - np.pi
    _, y = signal.istft(out, nperseg=n_fft, noverlap=n_fft - hop)
    return y[: int(len(x) / rate)].astype(np.float32)


def pitch_shift(x: np.ndarray, semitones: float) -> np.ndarray:
    """Shift pitch at constant duration: resample (pitch and speed), then stretch back."""
    factor = 2 ** (semitones / 12)
    y = time_stretch(x, 1 / factor)  # longer by factor ...
    y = speed_perturb(y, factor)[: len(x)]  # ... then faster and higher by factor
    return np.pad(y, (0, len(x) - len(y)))


def room_impulse(rng: np.random.Generator, rt60: float, drr_db: float) -> np.ndarray:
    """A synthetic RIR: a unit direct path then exponentially decaying noise (60 dB in rt60)."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / rt60)
    # Absorption grows with frequency: darken the tail a little.
    tail = signal.lfilter([0.6], [1.0, -0.4], tail)
    tail[: int(0.002 * SAMPLE_RATE)] = 0.0  # the first reflection arrives after the direct sound
    tail *= 10 ** (-drr_db / 20) / (np.sqrt(np.sum(tail**2)) + 1e-9)
    tail[0] += 1.0
    return tail.astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve, keep the input's length plus the tail, and keep the direct level."""
    return signal.fftconvolve(x, rir)[: len(x) + len(rir) - 1].astype(np.float32)


def band_limit(x: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    sos = signal.butter(
        4, [low_hz, min(high_hz, SAMPLE_RATE / 2 - 200)], "bandpass", fs=SAMPLE_RATE, output="sos"
    )
    return signal.sosfilt(sos, x).astype(np.float32)


def augment_clip(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    x = speed_perturb(x, float(rng.uniform(*cfg.speed)))
    if rng.uniform() < cfg.pitch_prob and len(x) > 4096:
        x = pitch_shift(x, float(rng.uniform(*cfg.pitch_semitones)))
    if rng.uniform() < cfg.room_prob:
        x = reverberate(
            x, room_impulse(rng, float(rng.uniform(*cfg.rt60_s)), float(rng.uniform(*cfg.drr_db)))
        )
    return x


def microphone(
    x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig
) -> tuple[np.ndarray, dict]:
    """The stream as a random microphone hears it; returns audio and the settings drawn."""
    info: dict = {}
    if rng.uniform() < cfg.band_prob:
        lo, hi = float(rng.uniform(*cfg.low_cut_hz)), float(rng.uniform(*cfg.high_cut_hz))
        x = band_limit(x, lo, hi)
        info["band_hz"] = [round(lo), round(hi)]
    noise_db = float(rng.uniform(*cfg.mic_noise_db))
    x = x + (rng.standard_normal(len(x)) * 10 ** (noise_db / 20)).astype(np.float32)
    info["mic_noise_db"] = round(noise_db, 1)
    if rng.uniform() < cfg.clip_prob:
        drive = float(rng.uniform(1.5, 4.0))
        x = np.tanh(drive * x) / drive
        info["soft_clip"] = round(drive, 2)
    return x.astype(np.float32), info
