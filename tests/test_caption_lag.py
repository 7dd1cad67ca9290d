"""Live captions lose no word to time: a reader that falls behind real time reads over a longer
hop and catches up, its lag is measured, and audio no reading held is counted (#28)."""

from __future__ import annotations

import shutil
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf
import soxr

from soundflow.runtime.kinds import open_engine, open_stream
from soundflow.runtime.listener import Listener
from soundflow.train.evaluate import edit_distance, normalize

pytestmark = pytest.mark.slow

# Two sentences never trained on, in a voice never trained on (flite's rms): 8 s of speech.
TEXT = (
    "the old lighthouse keeper counted every ship that passed in the night. "
    "nobody ever asked him why he wrote their names in a small green book."
)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    if shutil.which("flite") is None:
        pytest.skip("needs apt flite")
    wav = tmp_path_factory.mktemp("lag") / "speech.wav"
    subprocess.run(["flite", "-voice", "rms", "-t", TEXT, "-o", str(wav)], check=True)
    x, sr = sf.read(wav, dtype="float32")
    pcm = soxr.resample(x, sr, 16000).astype(np.float32)
    return np.concatenate([np.zeros(8000, np.float32), pcm, np.zeros(16000, np.float32)])


@pytest.fixture(scope="module")
def engine():
    e = open_engine()
    if e.spec.kind != "whisper-cross":
        pytest.skip("the embedded default is not the Whisper-based model")
    return e


def caption(engine, pcm, realtime: bool, **options):
    """`pcm` captioned by `listen` in transcribe mode: (words, stats events, summary).
    tests/test_caption_hop.py uses it too."""
    events = []
    listener = Listener(
        engine,
        mode="transcribe",
        input=pcm,
        sample_rate=16000,
        realtime=realtime,
        stats_every_s=2.0,
        on_event=events.append,
        **options,
    )
    summary = listener.run()
    assert summary.error is None, summary.error
    words = [w for e in events if e.type == "response" for w in normalize(e.text)]
    return words, [e for e in events if e.type == "stats"], summary


def _slow_decoder(engine, monkeypatch, seconds: float) -> None:
    """Every decoder call of `engine` takes `seconds` longer (a slower board, a busy one)."""
    step = engine.step

    def slow_step(*args):
        time.sleep(seconds)
        return step(*args)

    monkeypatch.setattr(engine, "step", slow_step)


def _wer(words: list[str]) -> float:
    ref = normalize(TEXT)
    return edit_distance(ref, words) / len(ref)


def test_a_slow_decoder_reads_every_word_later_and_says_how_late(engine, speech, monkeypatch):
    """Every decoder call made 150 ms slower (a board a few times slower than this one, or a
    busy machine): at real time the reader falls behind, reads over longer hops and still
    captions the sentences as well as fast mode does; the summary reports the lag and no
    audio left unread. The same slow decoder under the old 60 ms deadline loses words."""
    fast, _, fast_summary = caption(engine, speech, realtime=False)
    assert _wer(fast) <= 0.25, " ".join(fast)
    assert fast_summary.captions_skipped == 0

    _slow_decoder(engine, monkeypatch, 0.15)
    slow, stats, summary = caption(engine, speech, realtime=True)
    assert summary.captions_skipped == 0
    # measured: 0.0-0.15 (the schedule follows the clock: 2 of 13 words under a loaded
    # 2-core run of the whole suite), fast mode 0.0-0.04
    assert _wer(slow) <= _wer(fast) + 0.2, (" ".join(slow), " ".join(fast))
    assert summary.captions_late > 0  # it did fall behind ...
    assert summary.caption_lag_max_ms > 800  # ... by more than a reading's hop
    assert summary.caption_lag_p50_ms <= summary.caption_lag_p95_ms <= summary.caption_lag_max_ms
    assert stats and all(s.caption_lag_p95_ms is not None for s in stats)
    assert all(s.decision_p99_recent_ms > 0 for s in stats)

    dropped, _, deadline = caption(engine, speech, realtime=True, caption_budget_ms=60.0)
    assert len(dropped) < len(slow), (" ".join(dropped), " ".join(slow))


def test_unread_audio_is_counted_in_chunks(engine):
    """A reading begun after the window has moved past audio no earlier reading held counts
    those chunks as never read; a reading whose window overlaps the last counts none."""
    from soundflow.runtime.options import RuntimeOptions

    captions = open_stream(engine, RuntimeOptions.from_flags(mode="transcribe")).captions
    w = captions.window_chunks
    assert w == 11  # 4 s of history plus the chunk, 400 ms each
    captions.chunks = 4
    captions._judged()
    assert (captions.unread, captions._covered) == (0, 4)
    captions.chunks = 4 + w  # the oldest chunk this window holds is 5: nothing missed
    captions._judged()
    assert captions.unread == 0
    captions.chunks = 15 + w + 3  # chunks 16-18 were in no window
    captions._judged()
    assert captions.unread == 3


def test_fast_mode_keeps_its_schedule_whatever_the_clock(engine, speech, monkeypatch):
    """Fast mode (eval, bench peer) never defers a reading: its captions do not depend on
    how long each call took."""
    words, _, _ = caption(engine, speech, realtime=False)
    _slow_decoder(engine, monkeypatch, 0.02)
    again, _, summary = caption(engine, speech, realtime=False)
    assert again == words
