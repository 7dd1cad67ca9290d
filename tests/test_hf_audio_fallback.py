"""The utterance-end fallback policy (runtime/fallback.py) for models without control tokens."""

from __future__ import annotations

import numpy as np
import pytest

from soundflow.runtime.fallback import FallbackOptions, UtteranceEndPolicy

SR = 16_000


def _noise(seconds, level, seed):
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(
        np.float32
    )


def _speechlike(seconds, seed):
    """A 4 Hz syllable-rate modulated vowel-ish tone with noise: loud, bursty."""
    t = np.arange(int(seconds * SR)) / SR
    env = 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 4 * t))
    x = env * (0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 660 * t))
    return (x + _noise(seconds, 0.01, seed)).astype(np.float32)


def _decide(pcm, chunk_ms=400, **opts):
    policy = UtteranceEndPolicy(SR, FallbackOptions(**opts))
    n = SR * chunk_ms // 1000
    return [policy.step(pcm[i : i + n]) for i in range(0, len(pcm) - n + 1, n)]


@pytest.mark.parametrize("chunk_ms", [200, 400, 800])
def test_one_response_per_utterance_shortly_after_it_ends(chunk_ms):
    pcm = np.concatenate(
        [
            _noise(2.0, 0.003, 0),
            _speechlike(1.2, 1),
            _noise(2.0, 0.003, 2),
            _speechlike(0.8, 3),
            _noise(1.6, 0.003, 4),
        ]
    )
    decisions = _decide(pcm, chunk_ms)
    times = [(i + 1) * chunk_ms / 1000 for i, d in enumerate(decisions) if d.respond]
    assert len(times) == 2
    # each utterance ends at 3.2 s / 6.0 s; the answer comes after 0.6 s of quiet (+ a chunk)
    assert 3.2 + 0.6 - 1e-9 <= times[0] <= 3.2 + 0.6 + chunk_ms / 1000 + 1e-9
    assert 6.0 + 0.6 - 1e-9 <= times[1] <= 6.0 + 0.6 + chunk_ms / 1000 + 1e-9
    assert all(d.reason == "utterance_end" for d in decisions if d.respond)


def test_steady_background_and_clicks_never_respond():
    fan = _noise(12.0, 0.05, 5)  # loud but steady: becomes the floor
    for i in range(8):  # isolated 40 ms clicks every 1.5 s
        fan[int((i * 1.5 + 0.5) * SR) : int((i * 1.5 + 0.54) * SR)] += 0.8
    assert not any(d.respond for d in _decide(fan))
    assert not any(d.respond for d in _decide(np.zeros(SR * 5, np.float32)))


def test_endless_sound_is_answered_at_max_utterance():
    pcm = np.concatenate([_noise(1.0, 0.003, 6), _speechlike(8.0, 7)])
    decisions = _decide(pcm, max_utterance_s=3.0, floor_rise_db_per_s=0.5)
    first = next(i for i, d in enumerate(decisions) if d.respond)
    assert decisions[first].reason == "max_utterance"
    assert (first + 1) * 0.4 == pytest.approx(1.0 + 3.0, abs=0.41)


def test_p_rises_with_trailing_quiet_and_reset_forgets():
    policy = UtteranceEndPolicy(SR)
    policy.step(_noise(0.4, 0.003, 8))
    policy.step(_speechlike(0.8, 9)[: SR * 4 // 10])
    policy.step(_speechlike(0.8, 9)[SR * 4 // 10 :])
    d = policy.step(_noise(0.4, 0.003, 10))
    assert not d.respond and 0.5 < d.p < 1.0 and d.utterance_s >= 0.3
    policy.reset()
    assert policy.step(_noise(0.4, 0.003, 11)).p == 0.0


def test_options_from_manifest_overrides():
    m = {"control": {"mode": "fallback", "fallback": {"end_silence_s": 1.0, "bogus": 3}}}
    o = FallbackOptions.from_manifest(m, margin_db=6.0)
    assert o.end_silence_s == 1.0 and o.margin_db == 6.0 and o.min_utterance_s == 0.3
