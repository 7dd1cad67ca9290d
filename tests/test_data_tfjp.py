"""TFJP property tests on synthetic signals: each function keeps the property it promises."""

import numpy as np
import pytest

from soundflow.audio import SAMPLE_RATE
from soundflow.train.data import tfjp

SR = SAMPLE_RATE


def tone(seconds, freq=440.0, amp=0.5, phase=0.0):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def noise(seconds, db, rng):
    return (rng.standard_normal(int(seconds * SR)) * 10 ** (db / 20)).astype(np.float32)


def longest_quiet_run(x, level_db, frame=160):
    quiet = tfjp.frame_db(x, frame) < level_db
    best = run = 0
    for q in quiet:
        run = run + 1 if q else 0
        best = max(best, run)
    return best * frame / SR


def test_noise_floor_matches_known_level():
    rng = np.random.default_rng(0)
    x = noise(4.0, -50, rng)
    x[SR : 2 * SR] += tone(1.0)  # a quarter of the clip is loud
    assert abs(tfjp.noise_floor_db(x) - (-50)) < 2.0


def test_core_span_finds_burst():
    rng = np.random.default_rng(1)
    x = noise(4.0, -60, rng)
    x[int(1.0 * SR) : int(2.5 * SR)] += tone(1.5)
    start, end = tfjp.core_span(x)
    assert abs(start / SR - 1.0) <= 0.02 and abs(end / SR - 2.5) <= 0.02


@pytest.mark.parametrize("gap_s", [1.0, 3.0, 7.5])
def test_long_silence_is_clipped_to_bound(gap_s):
    rng = np.random.default_rng(2)
    cfg = tfjp.TFJPConfig(max_silence_s=0.4)
    x = np.concatenate([tone(0.5), noise(gap_s, -60, rng), tone(0.5, 660), noise(0.2, -60, rng)])
    y = tfjp.clip_silence(x, cfg)
    assert longest_quiet_run(y, -40) <= cfg.max_silence_s + 0.02
    # The loud content survives intact: same number of loud frames, give or take a join.
    loud = lambda s: int(np.sum(tfjp.frame_db(s, 160) > -20))  # noqa: E731
    assert abs(loud(y) - loud(x)) <= 3
    # Short silences are left alone.
    short = np.concatenate([tone(0.5), noise(0.3, -60, rng), tone(0.5)])
    assert len(tfjp.clip_silence(short, cfg)) == len(short)


def max_step(x):
    return float(np.max(np.abs(np.diff(x))))


def test_join_of_mismatched_sines_has_no_click():
    a = tone(0.5, 440, 0.5)
    b = tone(0.5, 440, 0.5, phase=2.0)  # a hard cut here jumps by ~0.9
    hard = np.concatenate([a, b])
    y = tfjp.smooth_join(a, b)
    ref = max(max_step(a), max_step(b))
    assert max_step(hard) > 3 * ref  # the test signal really has a click to remove
    # Stated level: no sample step at the seam beyond 1.25x the sources' own largest step.
    assert max_step(y) <= 1.25 * ref + 1e-3
    assert len(y) == len(a) + len(b) - SR * 20 // 1000


def test_join_of_dc_step_is_smooth():
    a = np.full(SR // 4, 0.5, np.float32)
    b = np.full(SR // 4, -0.5, np.float32)
    assert max_step(tfjp.smooth_join(a, b)) < 0.02  # hard cut: 1.0


def test_join_keeps_level_when_sides_cancel():
    # Opposite phases: a linear fade dips to silence mid-seam; the spectral fade must not.
    a = tone(0.3, 500, 0.5)
    b = -tone(0.3, 500, 0.5, phase=2 * np.pi * 500 * 0.3 - 0.0)
    cfg = tfjp.TFJPConfig(join_ms=40)
    y = tfjp.smooth_join(a, b, cfg)
    n = len(a) - SR * cfg.join_ms // 1000
    seam = y[n : n + SR * cfg.join_ms // 1000]
    env = tfjp.frame_db(seam, 64)
    ref = 20 * np.log10(0.5 / np.sqrt(2))
    assert env.min() > ref - 4.0 and env.max() < ref + 3.0


def test_boundaries_land_on_half_chunk_multiples():
    rng = np.random.default_rng(3)
    half = tfjp.HALF_CHUNK
    for _ in range(20):
        n = int(rng.integers(100, 5 * half))
        onset = int(rng.integers(0, n))
        x = rng.standard_normal(n).astype(np.float32)
        y, new_onset = tfjp.align_half_chunk(x, onset)
        assert len(y) % half == 0 and new_onset % half == 0
        lead = new_onset - onset
        np.testing.assert_array_equal(y[lead : lead + n], x)  # content untouched


def test_prepare_clip_trims_to_core_and_aligns():
    rng = np.random.default_rng(4)
    x = np.concatenate([noise(1.3, -60, rng), tone(0.7), noise(2.1, -60, rng)])
    y, onset, offset = tfjp.prepare_clip(x)
    assert len(y) % tfjp.HALF_CHUNK == 0 and onset % tfjp.HALF_CHUNK == 0
    assert abs((offset - onset) / SR - 0.7) <= 0.02
    assert len(y) / SR < 0.7 + 2 * tfjp.HALF_CHUNK / SR + 0.05
    assert abs(y[0]) < 1e-3 and abs(y[-1]) < 1e-3  # faded edges: no click on the bed


def test_looped_bed_has_no_seam_clicks():
    from soundflow.train.data import render
    from soundflow.train.data.planner import Plan

    for bed in ("hum", "rain", "room"):
        n = int(3.5 * render.BED_LOOP_S * SR)
        x = render._bed(
            Plan("office", bed, 0.0, 2, ()),
            n,
            np.random.default_rng(5),
            "train",
            -30.0,
            tfjp.TFJPConfig(),
        )
        assert len(x) == n
        loop_len = int(render.BED_LOOP_S * SR)
        seam = SR * 20 // 1000
        first = x[: loop_len - seam]  # the loop itself, before any seam
        assert max_step(x) <= 1.25 * max_step(first) + 1e-4, bed
