"""Targets and speech: word timings come from espeak-ng, targets follow Contract 1, the eval
split never uses a train voice, and hard negatives stay silent."""

import numpy as np
import pytest

from soundflow.audio import SAMPLE_RATE
from soundflow.protocol import parse_tags
from soundflow.train.data import espeak, procedural, shards, tfjp
from soundflow.train.data.library import Library, procedural_clips
from soundflow.train.data.planner import Plan, PlannedEvent
from soundflow.train.data.recipe import load_recipe
from soundflow.train.data.render import StreamRenderer

HALF_S = tfjp.HALF_CHUNK / SAMPLE_RATE


def test_espeak_word_timings_follow_the_audio():
    text = "set a timer for five minutes"
    audio, words = espeak.synthesize(text, espeak.Voice("en-us", "m3", rate=160))
    assert [w.word for w in words] == text.split()
    assert all(a.end <= b.start + 1e-6 for a, b in zip(words, words[1:], strict=False))
    frame = SAMPLE_RATE // 100
    db = tfjp.frame_db(audio, frame)
    for w in words:  # every word span holds speech
        seg = db[int(w.start * 100) : max(int(w.start * 100) + 1, int(w.end * 100))]
        assert seg.max() > db.max() - 30, w
    # After the last word ends there is (almost) nothing left to say.
    tail = audio[int(words[-1].end * SAMPLE_RATE) + frame :]
    assert len(tail) == 0 or np.sqrt(np.mean(tail**2)) < 0.05 * np.sqrt(np.mean(audio**2))


def test_slower_voice_stretches_word_ends():
    _, fast = espeak.synthesize("what did she just say", espeak.Voice(rate=200))
    _, slow = espeak.synthesize("what did she just say", espeak.Voice(rate=120))
    assert slow[-1].end > 1.3 * fast[-1].end


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    out = tmp_path_factory.mktemp("t")
    recipe = load_recipe("smoke")
    shards.build(out, recipe, 3 / 60, seed=11)
    ev = tmp_path_factory.mktemp("e")
    shards.build(ev, recipe, 1.5 / 60, seed=11, split="eval")
    return list(shards.iter_streams(out, load_audio=False)), list(
        shards.iter_streams(ev, load_audio=False)
    )


def test_targets_follow_the_contract(streams):
    for s in streams[0]:
        words, tg = s["words"], s["targets"]
        assert [t["t"] for t in tg["transcribe"]] == sorted(w["end"] for w in words)
        assert all(0 <= t["t"] <= s["duration"] for ts in tg.values() for t in ts)
        alert_events = [e for e in s["events"] if e["alert"]]
        assert [t["t"] for t in tg["alert"]] == sorted(e["start"] for e in alert_events)
        for t, e in zip(tg["alert"], sorted(alert_events, key=lambda e: e["start"]), strict=True):
            tags, plain = parse_tags(t["text"])
            assert tags == {"alert": e["label"]} and plain
        # Ordinary sounds and hard negatives (incl. speech about alarms) get no alert.
        quiet = {e["start"] for e in s["events"] if not e["alert"]} - {
            e["start"] for e in alert_events
        }
        assert not quiet & {t["t"] for t in tg["alert"]}
        # One answer per addressed instruction, due when its last word ends.
        instr = [e for e in s["events"] if e["label"].startswith("instruction_")]
        assert len(tg["assist"]) == len(instr)
        for t, e in zip(tg["assist"], instr, strict=True):
            assert abs(t["t"] - e["end"]) < 1e-3 and parse_tags(t["text"])[0].get("intent")
        assert all(
            not w["addressed"] or any(e["start"] <= w["start"] < e["end"] + 0.5 for e in instr)
            for w in words
        )
        # TFJP aligned every onset to a half chunk.
        for e in s["events"]:
            k = e["start"] / HALF_S
            assert abs(k - round(k)) < 1e-3, e


def test_hand_written_plan_gets_history_answers():
    # A plan as an LLM planner would write it: doorbell, chatter, then two questions.
    plan = Plan(
        "living_room_tv",
        "room",
        40.0,
        2,
        (
            PlannedEvent("sound", 1.0, "doorbell", snr_db=15),
            PlannedEvent("speech", 1.0, "chatter", 1, "i left the keys on the table", snr_db=15),
            PlannedEvent("instruction", 1.0, "instruction", 0, intent="history_sound", snr_db=15),
            PlannedEvent("instruction", 1.0, "instruction", 0, intent="history_speech", snr_db=15),
            PlannedEvent("sound", 1.0, "kettle_boil", snr_db=15),
        ),
    )
    plan = Plan.from_json(plan.to_json())  # the plan is plain data
    lib = Library(procedural_clips(), "train")
    audio, meta = StreamRenderer(plan, lib, load_recipe("smoke"), np.random.default_rng(0)).render()
    assert len(audio) == 40 * SAMPLE_RATE
    labels = [e["label"] for e in meta["events"]]
    assert labels == [
        "doorbell",
        "chatter",
        "instruction_history_sound",
        "instruction_history_speech",
        "kettle_boil",
    ]
    assist = [t["text"] for t in meta["targets"]["assist"]]
    assert assist[0] == "<intent:history> that was the doorbell"
    pronoun = assist[1].split()[1]
    assert assist[1] == f"<intent:history> {pronoun} said i left the keys on the table"
    # The doorbell alerts once at its onset; the kettle that is not whistling does not.
    assert [t["t"] for t in meta["targets"]["alert"]] == [meta["events"][0]["start"]]
    chatter = [w for w in meta["words"] if not w["addressed"]]
    assert " ".join(w["word"] for w in chatter) == "i left the keys on the table"


def test_eval_split_uses_only_eval_voices(streams):
    train_v, train_var = espeak.voice_pool("train")
    eval_v, eval_var = espeak.voice_pool("eval")
    assert not set(train_v) & set(eval_v) and not set(train_var) & set(eval_var)
    for split, pool in (("train", (train_v, train_var)), ("eval", (eval_v, eval_var))):
        rows = streams[0] if split == "train" else streams[1]
        speakers = {w["speaker"].removeprefix("tv:") for s in rows for w in s["words"]}
        assert speakers
        for sp in speakers:
            name, variant = sp.removeprefix("espeak:").split("+")
            assert name in pool[0] and variant in pool[1], sp


def test_procedural_parameter_bands_are_disjoint():
    rng = np.random.default_rng(0)
    train = procedural.Params(rng, "train")
    ev = procedural.Params(rng, "eval")
    band = lambda v: int((v - 1000) / 1000 * 8)  # noqa: E731
    assert {band(train.u(1000, 2000)) for _ in range(200)}.isdisjoint(
        {band(ev.u(1000, 2000)) for _ in range(200)}
    )
