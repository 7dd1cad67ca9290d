"""Assist by grammar for a whisper-cross stream: where speech may have ended, the window is
read with Whisper's own prompt and its words parsed by runtime/intents.py's slot grammar.

The stream (runtime/kinds/whisper.py) owns the memory and the token cache; this object owns what the
grammar needs between chunks: the speech gate, what was heard (history answers name it),
which requests were answered, and the request a reading parsed, until the stream answers it.
Configured by the manifest's `decision.assist` ({"method": "grammar", "fallback": false}).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from soundflow.runtime import intents
from soundflow.runtime.agreement import key
from soundflow.runtime.policy import Decision
from soundflow.runtime.tagger import SpeechGate

FRAMES_PER_S = 50  # Whisper's encoder frames: a memory of 220 frames is a 4.4 s window
# decision.assist.min_avg_logprob: an assist reading's floor (the captions' is -0.7)
ASSIST_MIN_LOGPROB = -1.0
# History answers (runtime/intents.py) name what the tagger heard: the newest sound within
# HISTORY_SOUND_S before the question, an alert within HISTORY_ALERT_S, or what was said in
# the utterance before, within HISTORY_SAID_S. A sound counts at SOUND_P (asked about, one
# may be named below its alert threshold: procedural doorbells peaked at 0.51), an alert at
# its own threshold.
HISTORY_SOUND_S, HISTORY_ALERT_S, HISTORY_SAID_S, SOUND_P = 30.0, 600.0, 30.0, 0.3


class GrammarAssist:
    """One stream's assist-by-grammar state. `reader` is the stream's window reading
    (runtime/captions.WindowCaptions); `tagger` the bundle's tagger spec, or None (then no
    speech gate and no history context); `special` the bundle's tag -> id map."""

    def __init__(self, reader, tagger, special: dict, fallback: bool, chunk_s: float,
                 refractory_s: float, memory_frames: int) -> None:  # fmt: skip
        self.reader, self.tagger, self.special = reader, tagger, special
        self.fallback, self.chunk_s = fallback, chunk_s
        # the same request again within this long (or while its words are still in the
        # window) is the same words read again
        self.again_s = max(refractory_s, memory_frames / FRAMES_PER_S)
        self.gate = None  # where speech may have ended (the bundle's speech gate)
        if tagger is not None and tagger.speech is not None:
            self.gate = SpeechGate(tagger.speech)
        self.readings = 0  # readings made (the stream's `verified` adds them)
        self.reset()

    def reset(self) -> None:
        self.intent = None  # the request this chunk's reading parsed, for the stream to answer
        self.heard: str | None = None  # the words of the last reading parsed
        self.answered_at = -np.inf  # stream time of the last answer
        self._answered: dict[tuple, float] = {}  # each request answered -> when
        self._chunks = 0
        self._held = None  # the request read at the first quiet chunk, answered at the next
        self._quiet_answered = False  # a request was answered since speech last stopped
        self._sounds: dict[str, float] = {}  # history's context: each label -> when last heard
        self._alerts: dict[str, float] = {}  # ... and each alert label over its threshold
        self._utterance = 0  # utterances begun (the gate opening after quiet)
        self._said: dict[int, tuple[float, str]] = {}  # utterance -> its last reading's words
        if self.gate is not None:
            self.gate.reset()

    def hear(self, probs: np.ndarray) -> None:
        """One chunk's tagger outputs: the speech gate (has speech ended?) and history's
        context (the last time each sound met SOUND_P, each alert its threshold)."""
        gate, tagger = self.gate, self.tagger
        quiet = gate.since > 0
        gate.update(probs)
        if quiet and gate.since == 0:
            self._utterance += 1
        t = (self._chunks + 1) * self.chunk_s
        speech = tagger.labels[gate.spec.column]
        for label, p in zip(tagger.labels, np.asarray(probs).reshape(-1), strict=True):
            if label != speech and p >= SOUND_P:
                self._sounds[label] = t
            if p >= tagger.thresholds.get(label, np.inf):
                self._alerts[label] = t

    def _history(self, now: float) -> dict[str, str] | None:
        """What a history answer names (runtime/intents.answer), or None without a tagger."""
        if self.gate is None:
            return None
        ended = now - self.gate.since * self.chunk_s  # about when the question ended
        context = {}
        recent = [(t, x) for x, t in self._sounds.items() if now - t <= HISTORY_SOUND_S]
        if recent:
            context["sound"] = max(recent)[1]
        alerts = [(t, x) for x, t in self._alerts.items() if now - t <= HISTORY_ALERT_S]
        if alerts:
            context["alert"] = max(alerts)[1]
        before = self._said.get(self._utterance - 1)
        if before is not None and ended - before[0] <= HISTORY_SAID_S:
            context["said"] = before[1]
        return context

    def decide(self, p: float, decide_at: float) -> Decision:
        """After the chunk's protocol call (`p`: its p(<respond>)): a request not already
        answered answers (p 1.0, `intent` set). Elsewhere the decoder's own decision stands
        only where `fallback` lets the decoder answer what the grammar does not parse."""
        self._chunks += 1
        self.intent = None
        gate = self.gate
        mine = Decision(p, self.fallback and p >= decide_at)
        # Speech may have ended at the gate's first quiet chunk, or only paused there (what is
        # read then may be cut short: "turn on the lights" of "... in the office"). So that
        # chunk's reading is held and the next one's answers: its request, or the held one
        # where it reads none (Whisper sometimes reads nothing, or less, of speech that ended
        # a second before the window's end); where neither holds one, the third quiet
        # chunk's reading may answer. Speech again drops what was held. With no gate, every
        # other chunk answers what it reads (a window without speech costs its reading one
        # call: Whisper's no-speech check).
        if gate is None:
            due = answers = self._chunks % 2 == 0
        else:
            if gate.since == 0:
                self._held, self._quiet_answered = None, False
            due = gate.since in (1, 2, 3) and not self._quiet_answered
            answers = gate.since >= 2
        if not due:
            return mine
        words = [w.text for w in self.reader.words(self.reader.hypothesis())]
        self.readings += 1
        self.heard = " ".join(key(w) for w in words)
        now = self._chunks * self.chunk_s
        intent = intents.parse(words)
        if intent is None and self.heard:  # what was said: history's "what did she say"
            self._said = {self._utterance: (now, self.heard)} | {
                u: v for u, v in self._said.items() if u == self._utterance - 1
            }
        if intent is not None and intent.tag not in self.special:
            intent = None  # an intent this bundle has no tag for
        if not answers:
            self._held = intent
            return mine
        intent, self._held = intent or self._held, None
        if intent is None:
            return mine
        self._quiet_answered = True  # this quiet run's request: the third reading is not made
        last = self._answered.get(intent.identity)
        if last is not None and now - last < self.again_s:
            return Decision(p, False)
        self._answered[intent.identity] = now
        if intent.name == "history":  # the answer names what the stream heard
            context = self._history(now)
            intent = dataclasses.replace(
                intent, answer=intents.answer(intent.name, intent.slots, context)
            )
        self.intent = intent
        return Decision(1.0, True)
