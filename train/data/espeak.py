"""espeak-ng speech with word timings from the synthesizer itself (ctypes on libespeak-ng).

The C API reports an espeakEVENT_WORD at the sample where each word starts; a word ends
where its last voiced sample falls before the next word's start (an energy check only
trims the pause espeak inserts between words).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from soundflow.audio import SAMPLE_RATE

# espeak_ng/speak_lib.h enums, spelled out because ctypes cannot read headers.
AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
ESPEAK_CHARS_AUTO = 0
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
PARAM_RATE = 1
PARAM_VOLUME = 2
PARAM_PITCH = 3
PARAM_RANGE = 4
PARAM_WORDGAP = 7
EE_OK = 0

# Sweeps for the split: eval voices and variants are never used for training (train/data/README.md,
# the split table). espeak_voices.json holds them; variants map to a gender, so "what did she just
# say" names the right speaker.
_VOICES = json.loads(Path(__file__).with_name("espeak_voices.json").read_text(encoding="utf-8"))
TRAIN_VOICES: tuple[str, ...] = tuple(_VOICES["train"]["voices"])
EVAL_VOICES: tuple[str, ...] = tuple(_VOICES["eval"]["voices"])
TRAIN_VARIANTS: dict[str, str] = _VOICES["train"]["variants"]
EVAL_VARIANTS: dict[str, str] = _VOICES["eval"]["variants"]


class EspeakError(RuntimeError):
    """libespeak-ng is missing or refused a request."""


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),  # union {int number; const char *name; char string[8]}
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class Voice:
    """One espeak-ng speaker: a language voice, a variant and prosody settings."""

    name: str = "en-us"  # language voice, e.g. "en-gb-x-rp"
    variant: str = "m1"  # file under espeak-ng-data/voices/!v
    rate: int = 165  # words per minute (espeak default 175)
    pitch: int = 50  # 0..100 base pitch
    pitch_range: int = 50  # 0..100 intonation range
    gender: str = "m"  # "m" or "f", for "what did he/she just say"

    @property
    def id(self) -> str:
        return f"espeak:{self.name}+{self.variant}"


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds from the start of the utterance audio
    end: float


class _Engine:
    """The process-wide espeak-ng instance (the C library keeps global state)."""

    def __init__(self) -> None:
        path = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(path)
        except OSError as err:
            raise EspeakError(
                f"cannot load {path}: install it with `apt-get install libespeak-ng1`"
            ) from err
        self.rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0)
        if self.rate <= 0:
            raise EspeakError("espeak_Initialize failed; is espeak-ng-data installed?")
        self._pcm: list[np.ndarray] = []
        self._events: list[tuple[int, int]] = []  # (text_position, sample)
        self._cb = _CALLBACK(self._on_audio)  # kept alive: C holds the pointer
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lock = threading.Lock()

    def _on_audio(self, wav, n, events) -> int:
        if n > 0 and wav:
            self._pcm.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            if events[i].type == EVENT_WORD:
                self._events.append((events[i].text_position, events[i].sample))
            i += 1
        return 0  # 0 = continue synthesis

    def synth(self, text: str, voice: Voice) -> tuple[np.ndarray, list[tuple[int, int]]]:
        with self.lock:
            name = f"{voice.name}+{voice.variant}".encode()
            if self.lib.espeak_SetVoiceByName(name) != EE_OK:
                raise EspeakError(f"espeak-ng has no voice {name.decode()!r}")
            for param, value in (
                (PARAM_RATE, voice.rate),
                (PARAM_PITCH, voice.pitch),
                (PARAM_RANGE, voice.pitch_range),
                (PARAM_VOLUME, 100),
                (PARAM_WORDGAP, 0),
            ):
                self.lib.espeak_SetParameter(param, value, 0)
            self._pcm, self._events = [], []
            data = text.encode() + b"\0"
            err = self.lib.espeak_Synth(
                data, len(data), 0, POS_CHARACTER, 0, ESPEAK_CHARS_AUTO, None, None
            )
            if err != EE_OK:
                raise EspeakError(f"espeak_Synth returned {err} for {text!r}")
            self.lib.espeak_Synchronize()
            pcm = np.concatenate(self._pcm) if self._pcm else np.zeros(0, np.int16)
            return pcm, list(self._events)


_ENGINE: _Engine | None = None


def load_engine() -> _Engine:
    """The process's espeak engine (an EspeakError if libespeak-ng cannot be loaded)."""
    # Created on first use, never at import, so forked/spawned workers each own one.
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def available() -> bool:
    try:
        load_engine()
    except EspeakError:
        return False
    return True


def _word_spans(text: str) -> list[tuple[int, str]]:
    """1-based character position (espeak's text_position) of each whitespace word."""
    spans, pos = [], 0
    for word in text.split():
        pos = text.index(word, pos)
        spans.append((pos + 1, word))
        pos += len(word)
    return spans


def _voiced_end(x: np.ndarray, lo: int, hi: int, frame: int = 160) -> int:
    """Last sample in [lo, hi) of a frame within 35 dB of the segment's loudest frame."""
    seg = x[lo:hi]
    n = len(seg) // frame
    if n == 0:
        return hi
    rms = np.sqrt(np.mean(seg[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    loud = np.nonzero(rms > rms.max() * 10 ** (-35 / 20))[0]
    return lo + (int(loud[-1]) + 1) * frame if len(loud) else hi


def _spoken_length(word: str, voice: Voice) -> int:
    """Voiced samples (at the engine rate) of one word spoken alone."""
    pcm, _ = load_engine().synth(word, voice)
    x = pcm.astype(np.float32) / 32768.0
    frame = 160
    n = len(x) // frame
    if n == 0:
        return 1
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    return max(1, int(np.sum(rms > rms.max() * 10 ** (-35 / 20))) * frame)


def synthesize(text: str, voice: Voice) -> tuple[np.ndarray, list[Word]]:
    """Speak `text` (plain words, no punctuation) at 16 kHz; return audio and word times.

    audio: (samples,) float32 in [-1, 1].
    """
    eng = load_engine()
    pcm, events = eng.synth(text, voice)
    audio = soxr.resample(pcm.astype(np.float32) / 32768.0, eng.rate, SAMPLE_RATE)
    audio = audio.astype(np.float32)
    spans = _word_spans(text)
    scale = SAMPLE_RATE / eng.rate
    starts: dict[int, int] = {}
    for text_pos, sample in events:
        if text_pos <= 0:  # the end-of-message marker carries no word
            continue
        # An event belongs to the word whose span holds its character position.
        idx = max((i for i, (p, _) in enumerate(spans) if p <= text_pos), default=0)
        starts.setdefault(idx, int(round(sample * scale)))
    if 0 not in starts:
        raise EspeakError(f"espeak reported no word events for {text!r}")
    # espeak folds unstressed words into their neighbour ("was a", "in the"): such a
    # group shares one event, and is split by the words' durations spoken alone.
    heads = sorted(starts) + [len(spans)]
    bounds = [starts[i] for i in heads[:-1]] + [len(audio)]
    words = []
    for g, (first, nxt) in enumerate(zip(heads[:-1], heads[1:], strict=True)):
        lo, hi = min(bounds[g], len(audio)), min(bounds[g + 1], len(audio))
        end = _voiced_end(audio, lo, hi) if hi > lo else hi
        group = [w for _, w in spans[first:nxt]]
        if len(group) == 1:
            words.append(Word(group[0], lo / SAMPLE_RATE, end / SAMPLE_RATE))
            continue
        alone = np.array([_spoken_length(w, voice) for w in group], np.float64)
        cuts = lo + (end - lo) * np.concatenate([[0.0], np.cumsum(alone) / alone.sum()])
        for k, w in enumerate(group):
            words.append(Word(w, float(cuts[k]) / SAMPLE_RATE, float(cuts[k + 1]) / SAMPLE_RATE))
    return audio, words


def voice_pool(split: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """(language voices, variant -> gender) for a split; the two pools are disjoint."""
    if split == "eval":
        return EVAL_VOICES, EVAL_VARIANTS
    return TRAIN_VOICES, TRAIN_VARIANTS


def sample_voice(rng: np.random.Generator, split: str) -> Voice:
    """A random speaker from the split's pool, with speed and pitch swept."""
    names, variants = voice_pool(split)
    variant = str(rng.choice(sorted(variants)))
    return Voice(
        name=str(rng.choice(names)),
        variant=variant,
        rate=int(rng.integers(130, 200)),
        pitch=int(rng.integers(25, 80)),
        pitch_range=int(rng.integers(30, 90)),
        gender=variants[variant],
    )
