"""Assist answers from the words a window reading hears (runtime/intents.py): the grammar on
text (plain requests, paraphrases, fillers, digits and words, narration that stays quiet), and
the default bundle answering a synthesized request through the runtime (runtime/cross.py)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from soundflow.manifest import BundleError, write_manifest
from soundflow.runtime import intents
from soundflow.runtime.intents import parse


def _said(text: str):
    got = parse(text.split())
    return None if got is None else (got.name, got.answer)


@pytest.mark.parametrize(
    "text, name, answer",
    [
        # the requests a new user tried (issue 28)
        ("please turn off the kitchen lights", "lights", "turning off the kitchen lights"),
        ("lights off please", "lights", "turning off the lights"),
        ("set a timer for five minutes", "timer", "timer set for five minutes"),
        ("turn the volume down please", "volume", "turning the volume down"),
        (
            "Hey flow, could you switch on the bedroom lights?",
            "lights",
            "turning on the bedroom lights",
        ),
        # paraphrases and slots
        ("turn the lights in the living room on", "lights", "turning on the living room lights"),
        ("switch off the light in the hallway", "lights", "turning off the hallway lights"),
        ("dim the lights a bit", "lights", "dimming the lights"),
        ("kitchen lights on", "lights", "turning on the kitchen lights"),
        ("start a twenty five minute timer", "timer", "timer set for twenty five minutes"),
        ("five minute timer please", "timer", "timer set for five minutes"),
        ("remind me in an hour", "timer", "timer set for one hour"),
        ("cancel the timer", "timer", "cancelling the timer"),
        ("turn off the timer", "timer", "cancelling the timer"),  # the noun decides
        ("could you make it a bit louder", "volume", "turning the volume up"),
        ("turn the music down a little", "volume", "turning the volume down"),
        ("mute the tv", "volume", "muting the sound"),
        ("set the volume to seven", "volume", "setting the volume to seven"),
        ("what was that sound?", "history", None),  # the decoder writes what it heard
        ("did I miss anything", "history", None),
        ("what happened", "history", None),
    ],
)
def test_plain_requests_are_parsed_with_their_slots(text, name, answer):
    assert _said(text) == (name, answer)


@pytest.mark.parametrize(
    "text, answer",
    [
        ("set a timer for 5 minutes", "timer set for five minutes"),  # digits as Whisper writes
        ("set a 10-minute timer", "timer set for ten minutes"),
        ("timer for 25 min", "timer set for twenty five minutes"),
        ("set the volume to 3", "setting the volume to three"),
        ("set a time for five minutes", "timer set for five minutes"),  # misreadings
        ("turn off the kitchen lice", "turning off the kitchen lights"),
        ("turn of the kitchen lights", "turning off the kitchen lights"),
        ("um okay so turn the lights on now thanks", "turning on the lights"),  # fillers
    ],
)
def test_digits_misreadings_and_fillers(text, answer):
    assert _said(text)[1] == answer


@pytest.mark.parametrize(
    "text",
    [
        "my sister set the lights on a timer last week",
        "he turned the volume down yesterday",
        "the kitchen lights were off when I got home",
        "I set a timer for five minutes and forgot it",
        "she asked me what that noise was",
        "what was that movie called",
        "turn left at the light and then go straight",
        "don't turn off the lights",
        "I'll turn the lights off later",
        "the timer went off twice",
        "set the table for five people",
        "nobody knows what happened",
    ],
)
def test_narration_stays_quiet(text):
    assert parse(text.split()) is None


def test_the_newest_request_of_a_reading_answers_and_slots_name_the_request():
    got = parse("We left early. Turn the lights on please.".split())
    assert got.slots == {"state": "on"} and got.text == "turn the lights on"
    a, b = parse(["turn", "off", "the", "lights"]), parse(["lights", "off"])
    assert a.identity == b.identity != parse(["lights", "on"]).identity
    assert intents.number_words(42) == "forty two" and a.tag == "<intent:lights>"


# ---------------------------------------------------------------------- the default bundle
@pytest.fixture(scope="module")
def default_path():
    from soundflow.runtime.engine import OrtEngine

    e = OrtEngine()
    if e.spec.kind != "whisper-cross" or "assist" not in e.spec.manifest["tasks"]:
        pytest.skip("the embedded default is not the Whisper-based model with assist mode")
    return e.spec.path


def _espeak(text: str, tmp_path) -> np.ndarray:
    """espeak-ng in its own process (libespeak-ng keeps state between calls), at 16 kHz,
    with silence around it."""
    import soundfile as sf
    import soxr

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup-dev.sh installs it)")
    wav = tmp_path / "say.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
    x, sr = sf.read(wav, dtype="float32")
    pcm = soxr.resample(x, sr, 16000).astype(np.float32)
    return np.concatenate([np.zeros(8000, np.float32), pcm, np.zeros(24000, np.float32)])


def test_the_default_bundle_answers_a_plain_request_and_not_narration(default_path, tmp_path):
    """Issue 28's request, answered once with its intent tag and the grammar's answer through
    the runtime's loop (fast mode); the decoder's own way withheld it (and says why); a
    narration that sounds like a request stays quiet."""
    from soundflow.runtime.engine import OrtEngine
    from soundflow.train.evaluate import run_stream

    engine = OrtEngine(default_path)
    pcm = _espeak("please turn off the kitchen lights", tmp_path)
    said, summary = run_stream(engine, pcm, "assist")
    assert [r.raw for r in said] == ["<intent:lights> turning off the kitchen lights"]
    assert said[0].intent == "lights" and "kitchen" in said[0].heard.split()
    assert summary.suppressed == 0

    said, summary = run_stream(engine, pcm, "assist", assist="decoder")
    assert summary.suppressed == sum(summary.suppressed_by.values())
    assert not [r for r in said if r.text == "turning off the kitchen lights"]

    pcm = _espeak("my sister set the lights on a timer last week", tmp_path)
    said, _ = run_stream(engine, pcm, "assist")
    assert said == []


@pytest.mark.parametrize(
    "assist, field",
    [
        ({"method": "regex"}, "decision.assist.method"),
        ({"method": "grammar", "fallback": "yes"}, "decision.assist.fallback"),
    ],
)
def test_a_bad_assist_section_is_refused(default_path, tmp_path, assist, field):
    from soundflow.runtime.engine import OrtEngine

    out = tmp_path / "b"
    shutil.copytree(default_path, out)
    m = json.loads((out / "manifest.json").read_text())
    m["decision"]["assist"] = assist
    write_manifest(out, {k: v for k, v in m.items() if k != "files"})
    with pytest.raises(BundleError, match=field.replace(".", r"\.")):
        OrtEngine(out)
