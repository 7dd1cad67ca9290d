"""What people say in a stream, and what the device answers.

Chatter is talk not addressed to the device (it gets transcribed, never answered): mostly
natural English from natural.py (fortunes, WordNet glosses), split like every other source,
and otherwise a small seeded grammar. Instructions are addressed and get short templated
answers a tiny model can learn; hard negatives and shouts stay templated too. The slot word
lists, numbers, chatter templates and hard negatives live in phrases.json beside this file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundflow.protocol import intent_tag

from . import natural

WAKE = "hey flow"  # optional: comprehension, not a keyword, decides whether to answer

# Word lists and templates, from phrases.json (order matters: every draw is seeded).
_PHRASES = json.loads(Path(__file__).with_name("phrases.json").read_text(encoding="utf-8"))
NUMBERS: tuple[str, ...] = tuple(_PHRASES["numbers"])
_SLOTS: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _PHRASES["slots"].items()}
# Talk between people. {x} slots draw from _SLOTS.
CHATTER: tuple[str, ...] = tuple(_PHRASES["chatter"])
# Talk that sounds like an alarm or an instruction but is neither: no alert, no answer.
HARD_NEGATIVES: tuple[str, ...] = tuple(_PHRASES["hard_negatives"])

SHOUTS = ("help", "help me", "somebody help me", "help help", "please help me")


@dataclass(frozen=True)
class Instruction:
    """An addressed request; the answer is filled in from the stream's history."""

    intent: str  # timer, history_sound, history_speech, history_alert, lights, volume
    text: str
    answer: str  # complete for stateless intents; a template for history ones


def _fill(template: str, rng: np.random.Generator) -> str:
    slots = {k: str(rng.choice(v)) for k, v in _SLOTS.items()}
    slots["n"] = str(rng.choice(NUMBERS))
    return " ".join(template.format(**slots).split())


NATURAL_SHARE = 0.75  # of chatter from natural.py when its packages are installed


def chatter(rng: np.random.Generator, split: str = "train") -> str:
    """Talk between people: natural text of `split` (eval never says a train sentence)."""
    if rng.uniform() < NATURAL_SHARE and natural.available():
        return natural.sentence(rng, split)
    return _fill(str(rng.choice(CHATTER)), rng)


def hard_negative(rng: np.random.Generator) -> str:
    return _fill(str(rng.choice(HARD_NEGATIVES)), rng)


def shout(rng: np.random.Generator) -> str:
    return str(rng.choice(SHOUTS))


def instruction(rng: np.random.Generator, intent: str, pronoun: str = "she") -> Instruction:
    """An addressed request for `intent`. pronoun: "he"/"she", for history_speech."""
    wake = WAKE + " " if rng.uniform() < 0.5 else ""
    if intent == "timer":
        n = str(rng.choice(NUMBERS))
        unit = "minute" if n == "one" else "minutes"
        text = str(
            rng.choice(("set a timer for {n} {u}", "start a {n} {u} timer", "time {n} {u} please"))
        )
        return Instruction(
            intent,
            wake + text.format(n=n, u=unit),
            f"{intent_tag('timer')} timer set for {n} {unit}",
        )
    if intent == "lights":
        state = str(rng.choice(("on", "off")))
        text = str(
            rng.choice(("turn the lights {s}", "switch the lights {s}", "lights {s} please"))
        )
        return Instruction(
            intent,
            wake + text.format(s=state),
            f"{intent_tag('lights')} turning the lights {state}",
        )
    if intent == "volume":
        way = str(rng.choice(("up", "down")))
        text = str(rng.choice(("turn the volume {w}", "volume {w} please", "turn it {w} a bit")))
        return Instruction(
            intent, wake + text.format(w=way), f"{intent_tag('volume')} volume {way}"
        )
    if intent == "history_sound":
        text = str(
            rng.choice(("what was that noise", "what was that sound", "what did i just hear"))
        )
        return Instruction(intent, wake + text, intent_tag("history") + " {answer}")
    if intent == "history_speech":
        text = str(
            rng.choice(("what did {p} just say", "what did {p} say", "sorry what did {p} say"))
        )
        return Instruction(
            intent, wake + text.format(p=pronoun), intent_tag("history") + " {answer}"
        )
    if intent == "history_alert":
        text = str(
            rng.choice(
                ("did any alarm go off", "was there an alarm", "did i miss anything important")
            )
        )
        return Instruction(intent, wake + text, intent_tag("history") + " {answer}")
    raise ValueError(f"unknown intent {intent!r}")


INTENTS = ("timer", "lights", "volume", "history_sound", "history_speech", "history_alert")


def answer_sound(caption: str | None) -> str:
    return f"that was {caption}" if caption else "i did not hear anything unusual"


def answer_speech(pronoun: str, said: str | None) -> str:
    return (
        f"{pronoun} said {said}"
        if said
        else f"i did not hear {'him' if pronoun == 'he' else 'her'} say anything"
    )


def answer_alert(caption: str | None) -> str:
    # caption: "a smoke alarm is going off" -> "yes a smoke alarm went off" keeps the label words.
    return f"yes earlier {caption}" if caption else "no nothing important happened"
