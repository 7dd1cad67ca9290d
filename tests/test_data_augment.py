"""Augmentation keeps what it promises: pitch moves at constant length, speed moves both,
rooms add a decaying tail, microphones band-limit."""

import numpy as np

from soundflow.audio import SAMPLE_RATE
from soundflow.train.data import augment

SR = SAMPLE_RATE


def peak_hz(x):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / SR)[spec.argmax()]


def sine(freq, seconds=1.0):
    return np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR).astype(np.float32)


def test_pitch_shift_moves_pitch_not_length():
    x = sine(440.0)
    y = augment.pitch_shift(x, 3.0)
    assert abs(len(y) - len(x)) <= 1
    assert abs(peak_hz(y[2000:-2000]) / 440.0 - 2 ** (3 / 12)) < 0.02


def test_speed_perturb_moves_both():
    x = sine(500.0)
    y = augment.speed_perturb(x, 1.1)
    assert abs(len(y) - len(x) / 1.1) <= 2
    assert abs(peak_hz(y) / 500.0 - 1.1) < 0.01


def test_room_adds_a_decaying_tail():
    rng = np.random.default_rng(0)
    rir = augment.room_impulse(rng, rt60=0.5, drr_db=3.0)
    assert rir[0] >= 1.0 and len(rir) == SR // 2
    early, late = np.abs(rir[800:1600]).mean(), np.abs(rir[-800:]).mean()
    assert late < early * 10 ** (-40 / 20)  # ~60 dB down over rt60
    y = augment.reverberate(sine(300, 0.2), rir)
    assert len(y) > 0.2 * SR and np.abs(y[int(0.25 * SR) :]).max() > 1e-3


def test_microphone_band_limits():
    cfg = augment.AugmentConfig(
        band_prob=1.0,
        low_cut_hz=(300.0, 300.0),
        high_cut_hz=(3400.0, 3400.0),
        mic_noise_db=(-120.0, -120.0),
        clip_prob=0.0,
    )
    x = sine(100.0) + sine(1000.0) + sine(7000.0)
    y, info = augment.microphone(x, np.random.default_rng(0), cfg)
    spec = np.abs(np.fft.rfft(y[SR // 4 :]))
    at = lambda f: spec[int(f * len(y[SR // 4 :]) / SR)]  # noqa: E731
    assert info["band_hz"] == [300, 3400]
    assert at(1000) > 30 * at(100) and at(1000) > 30 * at(7000)
