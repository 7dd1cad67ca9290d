"""Assist on held-out speech: plain requests, paraphrased as a new user would say them (none
of them a training template, train/data/text.py), and talk that only sounds like one, each
spoken by flite voices training never hears (rms, awb; train/heldout.py). A request is
answered right where every answer has its intent and the first carries its slots (the
answer's words: "off", "kitchen", "three minutes"); a look-alike is quiet with no answer.

    python -m soundflow.benchmarks.assist_heldout [--json benchmarks/results/assist_heldout.json]

Six sets of 24 requests and 12 look-alikes each, written one after another: `dev` (the
grammar's misreading rules were tuned on it), `test`, `final` and `blind` (each scored, then
its misses mended the grammar or the reading rule too), `fresh` (written after those
changes, scored once) and `sixth` (written after the grammar was made to generalise on all
five sets' misses: words by sound, runtime/soundalike.py; scored once: the number to quote).

Measured (results/assist_heldout.json; rms/awb): the grammar way gets 89.9 % of the 288
requests right and keeps all 144 look-alikes quiet; the decoder way 6.6 % and 99.3 %. Each
set's first score, before its misses mended anything, was 79.2, 68.8, 75.0, 75.0, 79.2 and
81.2 % (`sixth`, 39 of 48, 24 of 24 look-alikes quiet): on phrasings it has not seen,
expect about 80 %. The five sets it was mended on now score 91.7, 93.8, 89.6, 93.8 and
89.6 % (before the sound-alike change 87.5, 91.7, 81.2, 87.5, 79.2). Of `sixth`'s 9
misses 7 are phrasings the grammar lacks ("did anyone ring the doorbell", "while I was in the
shower", "it's too loud, turn it down": two requests in one clause) and 2 Whisper misreading
the voice past what a sound-alike may trust. On slt/kal (`--also-trained-speakers`) the
grammar gets 82.6 % of the 288 (`sixth` 81.2 %), all look-alikes quiet.

Ways, on the default bundle in fast mode: `decoder` (the fine-tuned decoder's <respond>
step and tag: the bundle before `decision.assist`), `grammar` (the words a window reading
hears, parsed by runtime/intents.py: the shipped default) and `grammar+fallback` (the
decoder answers what the grammar does not parse). flite's slt and kal are scored apart
(`--also-trained-speakers`): they are the speakers of festival voices training uses.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from soundflow.audio import SAMPLE_RATE

HELD_OUT_VOICES = ("rms", "awb")
TRAINED_SPEAKERS = ("slt", "kal")  # festival's kal_diphone and cmu_us_slt_arctic_hts
# (text, intent, the words the first answer must hold); written for this benchmark
REQUESTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("could you switch off the lights in the bedroom", "lights", ("off", "bedroom")),
    ("please turn on the bathroom lights", "lights", ("on", "bathroom")),
    ("hey flow, dim the living room lights", "lights", ("dim", "living room")),
    ("kitchen lights on please", "lights", ("on", "kitchen")),
    ("can you turn the hallway light off", "lights", ("off", "hallway")),
    ("switch the office lights on for me", "lights", ("on", "office")),
    ("turn off all the lights", "lights", ("off",)),
    ("lights off in the kitchen please", "lights", ("off", "kitchen")),
    ("start a timer for three minutes", "timer", ("three minutes",)),
    ("set a fifteen minute timer please", "timer", ("fifteen minutes",)),
    ("can you set a timer for twenty minutes", "timer", ("twenty minutes",)),
    ("remind me in ten minutes", "timer", ("ten minutes",)),
    ("set a timer for one hour", "timer", ("one hour",)),
    ("cancel my timer please", "timer", ("cancel",)),
    ("could you make it a bit louder", "volume", ("up",)),
    ("turn the music down a little", "volume", ("down",)),
    ("please mute the tv", "volume", ("mut",)),
    ("turn up the volume", "volume", ("up",)),
    ("set the volume to seven", "volume", ("seven",)),
    ("could you lower the volume", "volume", ("down",)),
    ("hey flow, what was that loud bang", "history", ()),
    ("did anything happen while I was out", "history", ()),
    ("what was that beeping", "history", ()),
    ("what happened just now", "history", ()),
]
LOOKALIKES: list[str] = [
    "my sister set the lights on a timer last week",
    "he turned the volume down yesterday",
    "the kitchen lights were off when I got home",
    "we should buy a new lamp for the bedroom",
    "I left the bathroom lights on again",
    "the music was too loud at the party",
    "she always sets a timer when she bakes bread",
    "nobody knows what happened to the old radio",
    "turn left after the traffic lights",
    "do you remember what that song was called",
    "the timer on the oven is broken",
    "they turned off the lights and went to sleep",
]
# A second set, written after the grammar was tuned on the first (its misreadings: "said" for
# "set", readings just under the captions' confidence floor) and run only to score it.
TEST_REQUESTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("turn the bedroom lights off please", "lights", ("off", "bedroom")),
    ("could you turn on the lights in the dining room", "lights", ("on", "dining room")),
    ("switch on the porch light", "lights", ("on", "porch")),
    ("please dim the kitchen lights", "lights", ("dim", "kitchen")),
    ("hey flow, lights on", "lights", ("on",)),
    ("turn on the garden lights for me please", "lights", ("on", "garden")),
    ("can you switch the basement lights off", "lights", ("off", "basement")),
    ("I need a timer for twelve minutes", "timer", ("twelve minutes",)),
    ("start a forty five second timer", "timer", ("forty five seconds",)),
    ("timer for two hours please", "timer", ("two hours",)),
    ("could you set a thirty second timer", "timer", ("thirty seconds",)),
    ("stop the timer", "timer", ("cancel",)),
    ("put a timer on for six minutes", "timer", ("six minutes",)),
    ("turn the sound down please", "volume", ("down",)),
    ("can you make the music quieter", "volume", ("down",)),
    ("crank up the volume", "volume", ("up",)),
    ("please unmute the speaker", "volume", ("unmut",)),
    ("volume to four please", "volume", ("four",)),
    ("a little louder please", "volume", ("up",)),
    ("lower the music a bit", "volume", ("down",)),
    ("what was that noise outside", "history", ()),
    ("hey flow, did I miss anything while I was away", "history", ()),
    ("what was that crash", "history", ()),
    ("did something happen just now", "history", ()),
]
TEST_LOOKALIKES: list[str] = [
    "the porch light has been flickering all week",
    "we turned the music up and danced all night",
    "can you believe the volume of homework they give",
    "my timer went off in the middle of the meeting",
    "she dimmed the lights before the movie started",
    "I always forget to turn off the bathroom fan",
    "the lights in the office were too bright",
    "he asked what that noise was",
    "turn right at the second set of lights",
    "five minutes later the power came back",
    "the radio was playing old songs",
    "our neighbours left their garden lights on again",
]
# A third set, written after the grammar was mended on the second's misses too ("good you"
# for "could you", "i need a", "the little louder", "volume to for"); scored, and its misses
# then changed the reading rule (below).
FINAL_REQUESTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("hey flow, switch off the kitchen light", "lights", ("off", "kitchen")),
    ("could you please turn the lights off in the office", "lights", ("off", "office")),
    ("turn on the hall lights", "lights", ("on", "hall")),
    ("bedroom lights off", "lights", ("off", "bedroom")),
    ("can you dim the lights in here", "lights", ("dim",)),
    ("please switch the bathroom light on", "lights", ("on", "bathroom")),
    ("turn the garage lights on please", "lights", ("on", "garage")),
    ("start a timer for eleven minutes", "timer", ("eleven minutes",)),
    ("set a two minute timer", "timer", ("two minutes",)),
    ("hey flow, timer for ninety seconds", "timer", ("ninety seconds",)),
    ("cancel the timer please", "timer", ("cancel",)),
    ("give me a timer for half an hour", "timer", ("thirty minutes",)),
    ("turn the tv down", "volume", ("down",)),
    ("make it quieter please", "volume", ("down",)),
    ("turn up the music please", "volume", ("up",)),
    ("mute the music", "volume", ("mut",)),
    ("put the volume at six", "volume", ("six",)),
    ("can you lower the sound", "volume", ("down",)),
    ("louder please", "volume", ("up",)),
    ("hey flow, what's that noise", "history", ()),
    ("did I miss anything while I was gone", "history", ()),
    ("what did they just say", "history", ()),
    ("what happened while I was out", "history", ()),
    ("switch the living room lights off", "lights", ("off", "living room")),
]
FINAL_LOOKALIKES: list[str] = [
    "I turned the lights off before I left",
    "the timer says five minutes left",
    "my brother always plays his music too loud",
    "she switched the kitchen light on and made tea",
    "the volume knob on the radio is stuck",
    "we waited ten minutes for the bus",
    "the lights went out during the storm",
    "did you hear what happened at school",
    "he set the alarm for six in the morning",
    "they were talking about the noise next door",
    "lights, camera, action",
    "grandma keeps the bedroom lights on all night",
]
# A fourth, written after the third's misses changed how a quiet run is read (the first
# quiet chunk's reading held, the second's answering, a third's where neither read one) and
# "while i was gone"; scored, and its misses that were the grammar's then mended it.
BLIND_REQUESTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("turn the dining room lights on", "lights", ("on", "dining room")),
    ("hey flow, kill the lights", "lights", ("off",)),
    ("switch off the bedroom lamp", "lights", ("off", "bedroom")),
    ("lights on in the hallway please", "lights", ("on", "hallway")),
    ("could you turn the lights down a bit", "lights", ("dim",)),
    ("please turn off the office lights", "lights", ("off", "office")),
    ("turn the lights on in the nursery", "lights", ("on", "nursery")),
    ("set a timer for nine minutes", "timer", ("nine minutes",)),
    ("can you start a six minute timer", "timer", ("six minutes",)),
    ("timer for forty minutes", "timer", ("forty minutes",)),
    ("set a timer for an hour please", "timer", ("one hour",)),
    ("please cancel the timer", "timer", ("cancel",)),
    ("count down three minutes", "timer", ("three minutes",)),
    ("turn the radio up", "volume", ("up",)),
    ("make the music louder", "volume", ("up",)),
    ("could you turn it down", "volume", ("down",)),
    ("mute the sound please", "volume", ("mut",)),
    ("set the volume to two", "volume", ("two",)),
    ("a bit louder", "volume", ("up",)),
    ("what was that banging", "history", ()),
    ("hey flow, did anything happen", "history", ()),
    ("what did he say just now", "history", ()),
    ("what was that", "history", ()),
    ("was there an alarm while I was asleep", "history", ()),
]
BLIND_LOOKALIKES: list[str] = [
    "I forgot to turn the oven off this morning",
    "the kids left every light in the house on",
    "my alarm clock goes off at seven",
    "he said the timer was broken",
    "we need a quieter dishwasher",
    "the volume of traffic on this road is crazy",
    "she asked me to set the table",
    "the office lights turn on automatically",
    "that song was louder than I expected",
    "last night the power went off for an hour",
    "what happened to your phone",
    "the bedroom light is broken",
]
# A fifth, written after the fourth's misses that were the grammar's, not the reading's
# ("kill the lights", "what was that banging", "was there an alarm while I was asleep"):
# scored once, after every change.
FRESH_REQUESTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("shut off the lights in the garage", "lights", ("off", "garage")),
    ("turn all the lights off", "lights", ("off",)),
    ("switch the kitchen lights on please", "lights", ("on", "kitchen")),
    ("bathroom lights on", "lights", ("on", "bathroom")),
    ("could you dim the bedroom lights", "lights", ("dim", "bedroom")),
    ("turn off the lamp in the study", "lights", ("off", "study")),
    ("hey flow, hallway lights off", "lights", ("off", "hallway")),
    ("set a timer for seventeen minutes", "timer", ("seventeen minutes",)),
    ("start a three minute timer please", "timer", ("three minutes",)),
    ("can you set a timer for 90 seconds", "timer", ("ninety seconds",)),
    ("put on a timer for fifteen minutes", "timer", ("fifteen minutes",)),
    ("stop my timer", "timer", ("cancel",)),
    ("remind me in five minutes", "timer", ("five minutes",)),
    ("turn the tv up a bit", "volume", ("up",)),
    ("can you make it quieter", "volume", ("down",)),
    ("turn down the music", "volume", ("down",)),
    ("mute the tv please", "volume", ("mut",)),
    ("volume five please", "volume", ("five",)),
    ("turn the sound up", "volume", ("up",)),
    ("what was that clanging", "history", ()),
    ("did you hear that noise", "history", ()),
    ("what did they say just now", "history", ()),
    ("hey flow, what happened while I was asleep", "history", ()),
    ("what's that beeping", "history", ()),
]
FRESH_LOOKALIKES: list[str] = [
    "the lights in the garage stopped working",
    "she set a timer and then fell asleep",
    "can you believe how loud that concert was",
    "I switched off my phone during the film",
    "the music downstairs kept me up",
    "turning the lights off saves money",
    "my dad dims the lights every evening",
    "the meeting lasted twenty minutes",
    "what happened next was hilarious",
    "he muted himself on the call",
    "the timer beeped three times",
    "the kitchen light flickers when it rains",
]
# A sixth, written after the grammar was made to generalise (slot and template words by
# sound, numbers misread where a number must be, a misheard first word, more phrasings: each
# from the five sets' misses): scored once, after every change.
SIXTH_REQUESTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("turn the lights off in the bathroom please", "lights", ("off", "bathroom")),
    ("could you put the kitchen lights on", "lights", ("on", "kitchen")),
    ("hey flow, switch off the hallway light", "lights", ("off", "hallway")),
    ("dim the living room lights a little", "lights", ("dim", "living room")),
    ("please turn on the lights in the garage", "lights", ("on", "garage")),
    ("can you shut the bedroom lights off", "lights", ("off", "bedroom")),
    ("lights on in the office", "lights", ("on", "office")),
    ("turn the porch light off for me", "lights", ("off", "porch")),
    ("could you start a timer for eight minutes", "timer", ("eight minutes",)),
    ("I need a four minute timer", "timer", ("four minutes",)),
    ("set me a timer for twenty five minutes", "timer", ("twenty five minutes",)),
    ("wake me up in forty minutes", "timer", ("forty minutes",)),
    ("turn off my timer", "timer", ("cancel",)),
    ("hey flow, set an eleven minute timer", "timer", ("eleven minutes",)),
    ("turn the volume up a bit", "volume", ("up",)),
    ("it's too loud, turn it down", "volume", ("down",)),
    ("can you make the tv louder", "volume", ("up",)),
    ("mute the speaker please", "volume", ("mut",)),
    ("turn the volume to three", "volume", ("three",)),
    ("bring the music down a bit", "volume", ("down",)),
    ("what was that loud noise", "history", ()),
    ("did anyone ring the doorbell", "history", ()),
    ("did I miss anything while I was in the shower", "history", ()),
    ("hey flow, what did she just say", "history", ()),
]
SIXTH_LOOKALIKES: list[str] = [
    "my mum turned the hallway light off hours ago",
    "the timer on my phone keeps going off",
    "we switched on the garden lights for the party",
    "the speaker was so loud I couldn't think",
    "he wants a timer for his eggs",
    "turn up the heat a bit",
    "the lights in the kitchen need new bulbs",
    "nobody heard the doorbell ring",
    "they muted the tv during the ads",
    "I set the volume to five before I left",
    "did you see what happened on the news",
    "the office lights stay on all night",
]
SETS = {
    "dev": (REQUESTS, LOOKALIKES),
    "test": (TEST_REQUESTS, TEST_LOOKALIKES),
    "final": (FINAL_REQUESTS, FINAL_LOOKALIKES),
    "blind": (BLIND_REQUESTS, BLIND_LOOKALIKES),
    "fresh": (FRESH_REQUESTS, FRESH_LOOKALIKES),
    "sixth": (SIXTH_REQUESTS, SIXTH_LOOKALIKES),
}
WAYS = ("decoder", "grammar", "grammar+fallback")
PREFIXES = ("mut", "unmut", "dim", "cancel")  # a word's opening: "muting", "dimming"


def speak(text: str, voice: str, tmp: Path) -> np.ndarray:
    """flite's `voice` saying `text`, 16 kHz, with 0.5 s of silence before and 1.5 s after."""
    import soundfile as sf
    import soxr

    wav = tmp / "say.wav"
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(wav)], check=True)
    x, sr = sf.read(wav, dtype="float32")
    pcm = soxr.resample(x, sr, SAMPLE_RATE).astype(np.float32)
    return np.concatenate([np.zeros(8000, np.float32), pcm, np.zeros(24000, np.float32)])


def right(responses: list, intent: str, words: tuple[str, ...]) -> bool:
    """Every answer has the intent, the first holds the slots' words (whole words; "mut"
    and "dim" as word openings: "muting", "dimming")."""
    if not responses or any(r.intent != intent for r in responses):
        return False
    said = " " + " ".join(responses[0].text.lower().split()) + " "
    for w in words:
        if w in PREFIXES:
            if f" {w}" not in said:
                return False
        elif f" {w} " not in said and f" {w}s " not in said:
            return False
    return not (" on " in said and " off " in said)  # both said is no answer


def _bundles(tmp: Path) -> dict[str, tuple[object, dict]]:
    """Each way: (engine, run-time overrides)."""
    from soundflow.manifest import write_manifest
    from soundflow.runtime.kinds import open_engine

    base = open_engine()
    out = tmp / "fallback"
    shutil.copytree(base.spec.path, out)
    m = json.loads((out / "manifest.json").read_text())
    m["decision"]["assist"] = {"method": "grammar", "fallback": True}
    write_manifest(out, {k: v for k, v in m.items() if k != "files"})
    return {
        "decoder": (base, {"assist": "decoder"}),
        "grammar": (base, {"assist": "grammar"}),
        "grammar+fallback": (open_engine(out), {}),
    }


def score(engine, overrides: dict, clips: dict, voices, requests, lookalikes) -> dict:
    """One way on one set: % requests right, % look-alikes quiet, and every stream's answers."""
    from soundflow.train.evaluate import run_stream

    start = time.monotonic()
    rows, hits, quiet = [], 0, 0
    for v in voices:
        for text, intent, words in requests:
            said, _ = run_stream(engine, clips[v, text], "assist", **overrides)
            ok = right(said, intent, words)
            hits += ok
            rows.append({"voice": v, "text": text, "want": intent, "right": ok,
                         "said": [r.raw for r in said]})  # fmt: skip
        for text in lookalikes:
            said, _ = run_stream(engine, clips[v, text], "assist", **overrides)
            quiet += not said
            rows.append({"voice": v, "text": text, "want": None, "right": not said,
                         "said": [r.raw for r in said]})  # fmt: skip
    n_req, n_look = len(requests) * len(voices), len(lookalikes) * len(voices)
    return {
        "requests_right_pct": round(100 * hits / n_req, 1),
        "lookalikes_quiet_pct": round(100 * quiet / n_look, 1),
        "requests_right": f"{hits}/{n_req}",
        "lookalikes_quiet": f"{quiet}/{n_look}",
        "seconds": round(time.monotonic() - start, 1),
        "rows": rows,
    }


def run(voices: tuple[str, ...], ways: tuple[str, ...] = WAYS, sets=tuple(SETS)) -> dict:
    """{set: {way: score}} for `voices`."""
    if shutil.which("flite") is None:
        raise SystemExit("flite is not installed (apt-get install flite)")
    report: dict = {}
    with tempfile.TemporaryDirectory(prefix="soundflow-assist-") as t:
        tmp = Path(t)
        engines = _bundles(tmp)
        for name in sets:
            requests, lookalikes = SETS[name]
            texts = [r[0] for r in requests] + lookalikes
            clips = {(v, text): speak(text, v, tmp) for v in voices for text in texts}
            report[name] = {"requests": len(requests), "lookalikes": len(lookalikes)}
            for way in ways:
                engine, overrides = engines[way]
                r = score(engine, overrides, clips, voices, requests, lookalikes)
                report[name][way] = r
                print(
                    f"{name:4s} {way:17s} {'/'.join(voices)}: requests right "
                    f"{r['requests_right']} ({r['requests_right_pct']} %), look-alikes quiet "
                    f"{r['lookalikes_quiet']} ({r['lookalikes_quiet_pct']} %)",
                    flush=True,
                )
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated of {WAYS}")
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated of {tuple(SETS)}")
    ap.add_argument(
        "--also-trained-speakers",
        action="store_true",
        help="also score flite's slt and kal (festival's training speakers), apart",
    )
    a = ap.parse_args()
    ways = tuple(w for w in a.ways.split(",") if w)
    sets = tuple(w for w in a.sets.split(",") if w)
    result = {
        "voices": {"held_out": HELD_OUT_VOICES, "trained_speakers": TRAINED_SPEAKERS},
        "held_out": run(HELD_OUT_VOICES, ways, sets),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "command": "python -m soundflow.benchmarks.assist_heldout",
    }
    if a.also_trained_speakers:
        result["trained_speakers"] = run(TRAINED_SPEAKERS, ways, sets)
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
