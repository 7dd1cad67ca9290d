"""Assist intents confirmed by words (`decision.verify`, runtime/kinds/whisper.py): an intent the
decoder is less sure of than its threshold is answered where Whisper reads one of its words
in the window; the manifest section is checked; `soundflow calibrate --verify` chooses both
thresholds on a dev split."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from soundflow.manifest import BundleError, write_manifest
from soundflow.runtime.engine import OrtEngine
from soundflow.runtime.kinds import open_engine
from soundflow.train.calibrate import GRID, choose, choose_confirmed, write_thresholds
from soundflow.train.evaluate import run_stream

TIMER = "<intent:timer>"


_SPEAK = """
import sys
import numpy as np
from soundflow.train.data import espeak
pcm, _ = espeak.synthesize("set a timer for five minutes", espeak.Voice())
np.save(sys.argv[1], pcm)
"""


@pytest.fixture(scope="module")
def instruction(tmp_path_factory):
    """Synthesized in a fresh process: libespeak-ng carries state from one call to the next
    (test_default_model.py), and p(respond) for this instruction sits near 0.2."""
    out = tmp_path_factory.mktemp("speech") / "timer.npy"
    subprocess.run([sys.executable, "-c", _SPEAK, str(out)], check=True)
    pcm = np.load(out)
    return np.concatenate([np.zeros(16000, np.float32), pcm, np.zeros(24000, np.float32)])


def _bundle(default_path, out, edit) -> OrtEngine:
    shutil.copytree(default_path, out)
    m = json.loads((out / "manifest.json").read_text())
    edit(m["decision"])
    write_manifest(out, {k: v for k, v in m.items() if k != "files"})
    return open_engine(out)


def _timer_only(words: list[str]):
    def edit(d: dict) -> None:
        d["thresholds"]["assist"][TIMER] = 1.0  # never on the decoder's word alone
        d["assist"] = {"method": "decoder"}  # the decoder's answers (not the grammar's)
        d["verify"] = {"assist": {TIMER: {"threshold": 0.0, "words": words}}}

    return edit


@pytest.mark.slow
def test_an_intent_is_answered_where_whisper_reads_its_word(default_path, instruction, tmp_path):
    """The timer intent never passes its own threshold here: it is answered (with the words
    the reading heard) where its word is the one Whisper reads, and not where it is another.
    `--threshold` (a flag over every calibrated threshold) turns confirming off, and
    `read_answers` reports the reading at every answer."""
    engine = _bundle(default_path, tmp_path / "timer", _timer_only(["timer"]))
    said, _ = run_stream(engine, instruction, "assist")
    timers = [r for r in said if r.intent == "timer"]
    assert timers and all("timer" in r.heard.split() for r in timers)
    assert "timer set for five minutes" in timers[0].text

    engine = _bundle(default_path, tmp_path / "zebra", _timer_only(["zebra"]))
    said, _ = run_stream(engine, instruction, "assist")
    assert [r for r in said if r.intent == "timer"] == []

    said, _ = run_stream(engine, instruction, "assist", threshold=0.99)
    assert said == []  # the flag's threshold, no confirming
    said, _ = run_stream(engine, instruction, "assist", threshold=0.01, read_answers=True)
    assert [r for r in said if r.intent] and all(r.heard is not None for r in said if r.intent)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d.update(verify={"assist": []}), "decision.verify.assist"),
        (
            lambda d: d.update(verify={"assist": {TIMER: {"threshold": 1.5, "words": ["t"]}}}),
            "decision.verify.assist.<intent:timer>.threshold",
        ),
        (
            lambda d: d.update(verify={"assist": {TIMER: {"threshold": 0.5, "words": []}}}),
            "decision.verify.assist.<intent:timer>.words",
        ),
        (
            lambda d: (
                d.pop("captions"),
                d.update(verify={"assist": {TIMER: {"threshold": 0.5, "words": ["t"]}}}),
            ),
            "needs decision.captions",
        ),
    ],
)
def test_a_bad_verify_section_is_refused(default_path, tmp_path, edit, field):
    with pytest.raises(BundleError, match=field.replace(".", r"\.")):
        _bundle(default_path, tmp_path / "b", edit)


def test_confirmed_thresholds_keep_the_most_hits_within_the_budget():
    # One hour, budget 1/h. Plain thresholds: 0.5 keeps two hits and the false one at 0.8.
    # Confirmed by words, the hits at 0.4 and 0.5 count, and so does the talk at 0.45 whose
    # reading held the word: that false one spends the budget, so the plain threshold rises
    # over the false one at 0.8 and the confirmed one is 0.4 (the hit at 0.35 was not heard).
    rows = [
        (0.9, "hit", True),
        (0.8, "false", False),
        (0.5, "hit", True),
        (0.45, "false", True),
        (0.4, "hit", True),
        (0.35, "hit", False),
    ]
    plain = choose([(p, o) for p, o, _ in rows], hours=1.0, false_per_hour=1.0)
    pair = choose_confirmed(rows, hours=1.0, false_per_hour=1.0)
    assert (plain["threshold"], plain["hits_kept"]) == (0.5, 2)  # 0.45 would add a false one
    assert pair["hits_kept"] == 3 and pair["false_kept"] == 1
    assert pair["confirmed_threshold"] == 0.4 and pair["threshold"] > 0.8
    # words that never come: nothing gained over the plain choice
    never = [(p, o, False) for p, o, _ in rows]
    assert choose_confirmed(never, 1.0, 1.0)["hits_kept"] == plain["hits_kept"]
    # nothing within budget: the grid's top, as `choose`
    assert choose_confirmed([(0.99, "false", True)], 1.0, 0.0)["threshold"] == GRID[-1]


def test_write_thresholds_keeps_the_words_of_a_calibration(default_path, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(default_path, out)
    report = {
        "mode": "assist",
        "dev": "dev",
        "hours": 1.0,
        "floor": 0.2,
        "false_per_hour_per_label": 1.5,
        "thresholds": {TIMER: 0.9},
        "verify": {TIMER: {"threshold": 0.35, "words": ["timer"]}},
    }
    write_thresholds(out, report)
    d = open_engine(out).spec.decision
    assert d["thresholds"]["assist"] == {TIMER: 0.9}
    assert d["verify"] == {"assist": {TIMER: {"threshold": 0.35, "words": ["timer"]}}}
    write_thresholds(out, {**report, "verify": {}})  # a recalibration without words
    assert "verify" not in open_engine(out).spec.decision


def test_calibrate_verify_flag_needs_intent_and_words(tmp_path):
    from soundflow.cli.main import cli

    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "streams.jsonl").write_text("")
    r = CliRunner().invoke(
        cli, ["calibrate", str(tmp_path), "--data", str(tmp_path / "dev"), "--verify", "timer"]
    )
    assert r.exit_code == 2 and "'timer': use LABEL=WORD[,WORD]" in r.output
