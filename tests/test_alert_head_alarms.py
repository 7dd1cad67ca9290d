"""train/data/alarms.py, the alert head's alarms written from the standards: the temporal
patterns are the standards' (ISO 8201 T3 and T4 measured on the envelope), train and eval
draws differ, every generator gives finite audio, and YAMNet hears a T3 alarm as one."""

from __future__ import annotations

import numpy as np
import pytest

from soundflow.audio import SAMPLE_RATE
from soundflow.train.data import alarms
from soundflow.train.data.procedural import Params


def _runs(x: np.ndarray) -> list[tuple[float, float | None]]:
    """(on, off) seconds of each pulse of a gated tone, from its 5 ms envelope (off: None
    for the last)."""
    hop = SAMPLE_RATE // 200
    env = np.abs(x[: len(x) // hop * hop]).reshape(-1, hop).max(1) > 0.05
    d = np.diff(np.concatenate([[0], env.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return [
        ((e - s) / 200, (starts[i + 1] - e) / 200 if i + 1 < len(starts) else None)
        for i, (s, e) in enumerate(zip(starts, ends, strict=True))
    ]


@pytest.mark.parametrize("split", ["train", "eval"])
def test_smoke_alarm_is_temporal_three(split):
    rng = np.random.default_rng(3)
    for _ in range(5):
        runs = _runs(alarms.smoke_alarm(Params(rng, split)))
        assert len(runs) % 3 == 0 and runs
        for k, (on, off) in enumerate(runs):
            assert 0.43 <= on <= 0.57  # 0.5 s +- 10 % (and the envelope's 5 ms)
            if off is not None:
                assert (0.43 <= off <= 0.57) if k % 3 < 2 else (1.3 <= off <= 1.7)


def test_co_alarm_is_temporal_four():
    rng = np.random.default_rng(4)
    for _ in range(5):
        runs = _runs(alarms.co_alarm(Params(rng, "train")))
        assert len(runs) % 4 == 0 and runs
        for k, (on, off) in enumerate(runs):
            assert 0.07 <= on <= 0.13
            if off is not None and k % 4 < 3:
                assert 0.07 <= off <= 0.13
            elif off is not None:
                assert off >= 0.9  # the pause before the next four


def test_every_generator_is_finite_and_splits_differ():
    for name, make in {**alarms.ALARMS, **alarms.NEGATIVES}.items():
        for split in ("train", "eval"):
            x = make(Params(np.random.default_rng(7), split))
            assert x.dtype == np.float32 and len(x) >= SAMPLE_RATE // 4, name
            assert np.isfinite(x).all() and 0.5 < np.abs(x).max() <= 0.81, name
        a = make(Params(np.random.default_rng(7), "train"))
        b = make(Params(np.random.default_rng(7), "eval"))
        assert len(a) != len(b) or not np.allclose(a, b), name  # other bands, other sounds


def test_yamnet_hears_the_t3_pattern_as_a_smoke_alarm():
    from soundflow.runtime.audioset import AudiosetEngine
    from soundflow.train.alert_head import yamnet_chunks

    yam = AudiosetEngine.from_bundle(None, threads=1)
    x = 0.5 * alarms.smoke_alarm(Params(np.random.default_rng(0), "eval"))
    x = np.pad(x, (0, -len(x) % 6400))
    scores = yamnet_chunks(yam, x)[:, 1024:].astype(np.float32).mean(0)
    top = [yam.classes[k] for k in np.argsort(scores)[::-1][:3]]
    assert "Smoke detector, smoke alarm" in top or "Alarm" in top, top
