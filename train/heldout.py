"""Speech sets held out of training, for `soundflow bench peer`: built on the fly from files
on this machine, never written to a shard, and named in `HELD_OUT` so that the data library
refuses them (train/held_out_sources.py, which train/data/library.py imports).

- `tuxpaint`: real human speech, the English spoken descriptions of Tux Paint's stamps
  (`*_desc.ogg` under /usr/share/tuxpaint/stamps, Debian tuxpaint-stamps-default), each
  scored against the first line of its sibling `<name>.txt` less its leading article (the
  recordings name the stamp, "Frog", where the text says "A frog.": `tuxpaint_reference`);
- `tuxpaint-sounds` (alert mode, `soundflow bench alerts`): the same packages' stamp sounds
  (animals, instruments, household, vehicles) and interface sounds, real recordings, all
  benign but the fire truck's siren;
- `flite`: two synthetic voices training never hears (flite's `rms` and `awb`; its `slt`
  and `kal` are festival voices training uses) saying a fixed draw of sentences from the
  natural-text eval pool (train/data/natural.py, eval split).

Utterances are concatenated into streams of about `STREAM_S` seconds, each utterance
preceded by `GAP_S` of silence and the stream closed by another, so both systems hear the
always-on situation: speech, pauses, speech. Only stdlib, numpy, soundfile and soxr here
at import time: the data builder imports this module.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundflow.audio import SAMPLE_RATE

# The list itself sits below the data library, which refuses its clips (and which this
# module's eval set reads); its names stay importable from here.
from soundflow.train.held_out_sources import (  # noqa: F401
    FLITE_VOICES,
    HELD_OUT,
    HeldOutSource,
    held_out_source,
)

STREAM_S = 60.0  # target stream length
GAP_S = 1.0  # silence before each utterance and at the end of a stream
TUXPAINT_DIR = Path("/usr/share/tuxpaint/stamps")
TUXPAINT_SUFFIX = "_desc.ogg"  # English; translations are "_desc_<lang>.ogg"
FLITE_SENTENCES = 20
FLITE_SEED = 20_251  # the draw from natural.py's eval pool


class SetUnavailable(Exception):
    """A set's source is missing; the message is the one-line reason."""


@dataclass
class Stream:
    id: str
    samples: np.ndarray  # (n,) float32, 16 kHz mono
    reference: list[str]  # normalised words
    utterances: int
    # (start, end) samples of each utterance, for scoring a whole-utterance recognizer
    # (bench peer's offline Whisper)
    spans: tuple[tuple[int, int], ...] = ()


def read_16k(path: str | Path) -> np.ndarray:
    """A sound file as 16 kHz mono float32 (soxr resampling)."""
    import soundfile as sf
    import soxr

    x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = x.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    # a resampled full-scale recording overshoots a little; keep what a 16-bit file holds
    return np.ascontiguousarray(np.clip(mono, -1.0, 1.0), dtype=np.float32)


def pack(name: str, utterances: list[tuple[np.ndarray, str]]) -> list[Stream]:
    """(audio, reference text) utterances -> streams of about STREAM_S seconds, in order."""
    from soundflow.train.evaluate import normalize

    gap = np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)
    streams: list[Stream] = []
    parts: list[np.ndarray] = []
    ref: list[str] = []
    spans: list[tuple[int, int]] = []
    count = 0
    length = 0

    def close() -> None:
        nonlocal parts, ref, spans, count, length
        if count:
            samples = np.concatenate([*parts, gap])
            streams.append(Stream(f"{name}-{len(streams):02d}", samples, ref, count, tuple(spans)))
        parts, ref, spans, count, length = [], [], [], 0, 0

    for x, text in utterances:
        if count and (length + len(gap) + len(x) + len(gap)) / SAMPLE_RATE > STREAM_S:
            close()
        parts += [gap, x]
        spans.append((length + len(gap), length + len(gap) + len(x)))
        length += len(gap) + len(x)
        ref += normalize(text)
        count += 1
    close()
    return streams


# ---------------------------------------------------------------------- tuxpaint
ARTICLE = re.compile(r"^\s*(a|an|the)\s+(?=\S)", re.IGNORECASE)


def tuxpaint_reference(text: str) -> str:
    """What a description recording says: its text without the leading article. The text is
    the label Tux Paint prints ("A frog."); the speaker says the noun alone. Measured with
    the pinned Whisper tiny.en's likelihood of each reference given the audio: the one
    without the article is the likelier on 63 of the 64 clips whose text has one, by 3-10
    nats (the exception, "A chimpanzee.", is a recording of "chimp"). Scored with the
    article, every system lost one deletion per clip: half of the set's words."""
    return ARTICLE.sub("", text, count=1)


def tuxpaint_clips(root: Path = TUXPAINT_DIR) -> list[tuple[Path, str]]:
    """(audio file, reference text) of every English stamp description with a text file."""
    from soundflow.train.evaluate import normalize

    if not root.is_dir():
        raise SetUnavailable(
            f"{root} not found (apt-get install tuxpaint-stamps-default tuxpaint-data)"
        )
    out = []
    for ogg in sorted(root.rglob("*" + TUXPAINT_SUFFIX), key=str):
        txt = ogg.with_name(ogg.name[: -len(TUXPAINT_SUFFIX)] + ".txt")
        if not txt.is_file():
            continue  # no text, no reference (wallaby has only its recording)
        lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
        text = tuxpaint_reference(lines[0].strip()) if lines else ""
        if normalize(text):
            out.append((ogg, text))
    if not out:
        raise SetUnavailable(f"no *{TUXPAINT_SUFFIX} with a sibling .txt under {root}")
    return out


def tuxpaint_streams(root: Path = TUXPAINT_DIR) -> list[Stream]:
    return pack("tuxpaint", [(read_16k(p), text) for p, text in tuxpaint_clips(root)])


# ---------------------------------------------------------------------- asterisk
ASTERISK_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TEXT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
ASTERISK_PROMPTS = 60  # about five minutes of speech
ASTERISK_MIN_WORDS = 4


def asterisk_clips(root: Path = ASTERISK_DIR, text: Path = ASTERISK_TEXT) -> list[tuple]:
    """(wav, transcript) of the prompts whose transcript is plain words: none that is a
    sound's description ("[ascending tones]"), none with digits (the recording says "one",
    the text "1"), none shorter than ASTERISK_MIN_WORDS words; ASTERISK_PROMPTS of them,
    evenly spaced in name order (the names group by feature: agent-*, conf-*, vm-*)."""
    import gzip

    if not text.is_file() or not root.is_dir():
        return []
    out = []
    for line in gzip.open(text, "rt", encoding="utf-8", errors="replace"):
        name, sep, said = line.partition(":")
        said = said.strip()
        if not sep or name.startswith(";") or "/" in name or not said:
            continue
        if "[" in said or re.search(r"\d", said) or len(said.split()) < ASTERISK_MIN_WORDS:
            continue
        wav = root / f"{name.strip()}.wav"
        if wav.is_file():
            out.append((wav, said))
    out.sort()
    return out[:: max(1, len(out) // ASTERISK_PROMPTS)][:ASTERISK_PROMPTS]


def asterisk_streams(root: Path = ASTERISK_DIR, text: Path = ASTERISK_TEXT) -> list[Stream]:
    return pack("asterisk", [(read_16k(p), said) for p, said in asterisk_clips(root, text)])


# ---------------------------------------------------------------------- tuxpaint sounds
TUXPAINT_UI_DIR = Path("/usr/share/tuxpaint/sounds")
# The stamp sounds worth an alert, by path under the stamps directory; every other one is benign.
TUXPAINT_ALERTS = {"vehicles/emergency/firetruck.ogg": "siren"}
SOUND_GAP_S = 2.0  # quiet room between two sounds


def tuxpaint_sound_clips(root: Path = TUXPAINT_DIR, ui: Path = TUXPAINT_UI_DIR):
    """(file, alert label or None) of every stamp sound (not the spoken descriptions, nor
    the spoken letters and numbers under symbols/) and every interface sound."""
    if not root.is_dir():
        raise SetUnavailable(
            f"{root} not found (apt-get install tuxpaint-stamps-default tuxpaint-data)"
        )
    stamps = [
        p
        for ext in ("*.ogg", "*.wav")
        for p in root.rglob(ext)
        if "_desc" not in p.name and "symbols" not in p.relative_to(root).parts
    ]
    out = [(p, TUXPAINT_ALERTS.get(p.relative_to(root).as_posix())) for p in stamps]
    out += [(p, None) for p in (ui.glob("*.wav") if ui.is_dir() else ())]
    return sorted(out, key=lambda c: str(c[0]))


def sound_streams(clips, name: str, seed: int = 0) -> list[dict]:
    """Clips -> streams of about STREAM_S seconds, each sound after SOUND_GAP_S of quiet
    room noise, as records `train/evaluate.score_alerts` reads: samples, events (start, end,
    label, alert, file)."""
    rng = np.random.default_rng(seed)
    streams, parts, events, length = [], [], [], 0

    def close():
        nonlocal parts, events, length
        if parts:
            tail = (rng.standard_normal(int(SOUND_GAP_S * SAMPLE_RATE)) * 1e-3).astype(np.float32)
            samples = np.concatenate([*parts, tail])
            streams.append(
                {
                    "id": f"{name}-{len(streams):02d}",
                    "samples": samples,
                    "events": events,
                    "duration": len(samples) / SAMPLE_RATE,
                }
            )
        parts, events, length = [], [], 0

    for path, label in clips:
        x = read_16k(path)
        gap = (rng.standard_normal(int(SOUND_GAP_S * SAMPLE_RATE)) * 1e-3).astype(np.float32)
        if parts and (length + len(gap) + len(x)) / SAMPLE_RATE > STREAM_S:
            close()
        start = (length + len(gap)) / SAMPLE_RATE
        events.append(
            {
                "start": start,
                "end": start + len(x) / SAMPLE_RATE,
                "label": label or Path(path).stem,
                "alert": label is not None,
                "category": "Held-out",
                "file": str(path),
            }
        )
        parts += [gap, x]
        length += len(gap) + len(x)
    close()
    return streams


# ---------------------------------------------------------------------- flite
def flite_sentences(n: int = FLITE_SENTENCES, seed: int = FLITE_SEED) -> list[str]:
    """A fixed draw of `n` distinct sentences from natural.py's eval pool."""
    from soundflow.train.data import natural

    pool = natural.sentences("eval") if natural.available() else ()
    if not pool:
        raise SetUnavailable(
            "the natural-text eval pool is empty (apt-get install fortunes wordnet-base)"
        )
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    return [pool[int(i)] for i in picks]


def _flite_voices(flite: str) -> set[str]:
    out = subprocess.run([flite, "-lv"], capture_output=True, text=True, check=False)
    return set(out.stdout.replace(":", " ").split())


def flite_utterances(n: int = FLITE_SENTENCES, seed: int = FLITE_SEED) -> list[tuple]:
    """(audio, text, voice) for each sentence, the voices taking turns."""
    flite = shutil.which("flite")
    if flite is None:
        raise SetUnavailable("flite is not installed (apt-get install flite)")
    missing = [v for v in FLITE_VOICES if v not in _flite_voices(flite)]
    if missing:
        raise SetUnavailable(f"flite has no voice {', '.join(missing)}")
    out = []
    with tempfile.TemporaryDirectory(prefix="soundflow-flite-") as tmp:
        for i, text in enumerate(flite_sentences(n, seed)):
            voice = FLITE_VOICES[i % len(FLITE_VOICES)]
            wav = Path(tmp) / f"{i:03d}.wav"
            r = subprocess.run(
                [flite, "-voice", voice, "-t", text, "-o", str(wav)],
                capture_output=True,
                text=True,
                check=False,
            )
            if r.returncode != 0 or not wav.is_file():
                msg = (r.stderr or r.stdout).strip().splitlines()
                raise SetUnavailable(f"flite -voice {voice} failed: {msg[-1] if msg else '?'}")
            out.append((read_16k(wav), text, voice))
    return out


def flite_streams(n: int = FLITE_SENTENCES, seed: int = FLITE_SEED) -> list[Stream]:
    return pack("flite", [(x, text) for x, text, _ in flite_utterances(n, seed)])


# ---------------------------------------------------------------------- eval shards
def eval_streams(data: Path | None, limit: int | None = None) -> list[Stream]:
    """The synthetic eval split built by `soundflow data build --split eval`."""
    from soundflow.train.data.shards import iter_streams
    from soundflow.train.evaluate import normalize

    if data is None:
        raise SetUnavailable("no --data given (soundflow data build --split eval --out DIR)")
    if not (Path(data) / "streams.jsonl").is_file():
        raise SetUnavailable(
            f"{data} has no streams.jsonl (soundflow data build --split eval --out DIR)"
        )
    out = []
    for record in iter_streams(data):
        if limit is not None and len(out) >= limit:
            break
        ref = [w for word in record["words"] for w in normalize(word["word"])]
        spoken = [e for e in record.get("events", []) if e.get("text")]
        spans = _spans(spoken, len(record["samples"]))
        out.append(Stream(str(record["id"]), record["samples"], ref, len(spoken), spans))
    return out


EVAL_PAD_S = 0.2  # around each speech event: its words' edges, not the next event's


def _spans(events: list[dict], n: int) -> tuple[tuple[int, int], ...]:
    """The samples of a stream's speech events, padded, in time order, overlapping ones
    (a recipe's overlap_prob) merged: every word is heard by the whole-utterance reference
    once, in the order the reference lists it."""
    out: list[list[int]] = []
    for e in sorted(events, key=lambda e: e["start"]):
        a = max(0, int((e["start"] - EVAL_PAD_S) * SAMPLE_RATE))
        b = min(n, int((e["end"] + EVAL_PAD_S) * SAMPLE_RATE))
        if out and a < out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return tuple((a, b) for a, b in out)


SETS = ("eval", "tuxpaint", "flite", "asterisk")
SOURCES = {
    "eval": "synthetic eval split (soundflow data build --split eval)",
    "tuxpaint": HELD_OUT["tuxpaint"].description,
    "flite": HELD_OUT["flite"].description,
    "asterisk": HELD_OUT["asterisk"].description,
}


def load_set(name: str, data: Path | None = None, limit: int | None = None) -> list[Stream]:
    """The streams of set `name` (at most `limit`); SetUnavailable if its source is missing."""
    if name == "eval":
        streams = eval_streams(data, limit)
    elif name == "tuxpaint":
        streams = tuxpaint_streams()
    elif name == "flite":
        streams = flite_streams()
    elif name == "asterisk":
        streams = asterisk_streams()
    else:
        raise ValueError(f"unknown set {name!r}; sets: {', '.join(SETS)}")
    if not streams:
        raise SetUnavailable("no streams")
    return streams[:limit] if limit is not None else streams
