"""Hierarchical event selection, bottom level, and the mix: ground each planned event with a
library clip or a synthesizer, place it over the bed at its SNR, and derive the targets.

Targets follow ARCHITECTURE.md "Contract 1": transcribe at each word's end, alert at an
alert-worthy onset, assist at the end of an addressed instruction (answered from history).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundflow.audio import SAMPLE_RATE
from soundflow.protocol import alert_tag

from . import augment, espeak, festival, procedural, text, tfjp
from .library import Library
from .planner import Plan, PlannedEvent
from .recipe import Recipe

SR = SAMPLE_RATE
MAX_CLIP_S = 12.0  # longer grounded clips are cut (faded): a stream is many events
BED_LOOP_S = 12.0  # beds are generated once per stream and looped through smooth joins

# What the device calls a sound when asked about it later ("that was ..."): label -> noun,
# from nouns.json; a label not listed there is called by its clip's caption.
NOUNS: dict[str, str] = json.loads(
    Path(__file__).with_name("nouns.json").read_text(encoding="utf-8")
)


@dataclass(frozen=True)
class Speaker:
    id: str  # "espeak:en-us+f3" or "festival:kal_diphone"
    gender: str  # "m" or "f"
    voice: espeak.Voice | festival.FestivalVoice


def make_speakers(
    plan: Plan, rng: np.random.Generator, split: str, recipe: Recipe
) -> list[Speaker]:
    """plan.n_speakers people (0 is the device's user) plus a TV voice, all from the split's pool."""
    fest = festival.voice_pool(split) if recipe.festival_share > 0 else {}
    out = []
    for k in range(plan.n_speakers + 1):
        if k > 0 and fest and rng.uniform() < recipe.festival_share:
            name = str(rng.choice(sorted(fest)))
            v = festival.FestivalVoice(name, float(rng.uniform(0.85, 1.2)), fest[name])
        else:
            v = espeak.sample_voice(rng, split)
            for _ in range(8):  # distinct variants, so "what did she say" names one person
                if all(getattr(o.voice, "variant", None) != v.variant for o in out):
                    break
                v = espeak.sample_voice(rng, split)
        out.append(Speaker(v.id, v.gender, v))
    return out


def _bed(
    plan: Plan, n: int, rng: np.random.Generator, split: str, level_db: float, cfg: tfjp.TFJPConfig
) -> np.ndarray:
    loop = procedural.BEDS[plan.bed](procedural.Params(rng, split), int(BED_LOOP_S * SR))
    # Loop it through one spectral seam: loop[:N-L], then (seam + loop[L:N-L]) repeated,
    # where seam fades loop's tail into its head; each unit starts where the last one ends.
    big = len(loop)
    seam_len = SR * cfg.join_ms // 1000
    seam = tfjp.smooth_join(loop, loop, cfg)[big - seam_len : big]
    unit = np.concatenate([seam, loop[seam_len : big - seam_len]])
    reps = int(np.ceil(max(0, n - (big - seam_len)) / len(unit)))
    out = np.concatenate([loop[: big - seam_len], np.tile(unit, reps)])[:n]
    return (out * 10 ** (level_db / 20) / (np.sqrt(np.mean(out**2)) + 1e-9)).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2) + 1e-12))


class StreamRenderer:
    """Renders one plan; holds the per-stream state (speakers, history) while it does."""

    def __init__(
        self, plan: Plan, library: Library, recipe: Recipe, rng: np.random.Generator
    ) -> None:
        self.plan, self.lib, self.recipe, self.rng = plan, library, recipe, rng
        self.split = library.split
        self.speakers = make_speakers(plan, rng, self.split, recipe)
        self.history: list[dict] = []  # rendered events, in time order
        self._festival = self._batch_festival()

    def _batch_festival(self) -> dict[int, tuple[np.ndarray, list]]:
        # One festival process per voice for the whole stream: its start-up dominates.
        out: dict[int, tuple[np.ndarray, list]] = {}
        by_voice: dict[int, list[int]] = {}
        for i, e in enumerate(self.plan.events):
            if e.kind in ("speech", "shout", "tv") and isinstance(
                self.speakers[e.speaker].voice, festival.FestivalVoice
            ):
                by_voice.setdefault(e.speaker, []).append(i)
        for spk, idx in by_voice.items():
            said = festival.synthesize_many(
                [self.plan.events[i].text for i in idx], self.speakers[spk].voice
            )
            out.update(zip(idx, said, strict=True))
        return out

    def _say(self, i: int, words: str, spk: Speaker) -> tuple[np.ndarray, list[espeak.Word]]:
        if i in self._festival:
            return self._festival[i]
        if isinstance(spk.voice, festival.FestivalVoice):
            return festival.synthesize_many([words], spk.voice)[0]
        return espeak.synthesize(words, spk.voice)

    def _instruction(self, e: PlannedEvent, at: float) -> text.Instruction:
        before = [h for h in self.history if h["end"] <= at]
        if e.intent == "history_speech":
            said = [
                h
                for h in before
                if h["kind"] == "speech" and h["speaker_index"] != 0 and h["gender"]
            ]
            gender = said[-1]["gender"] if said else str(self.rng.choice(["m", "f"]))
            pronoun = "he" if gender == "m" else "she"
            ins = text.instruction(self.rng, e.intent, pronoun)
            return text.Instruction(
                ins.intent,
                ins.text,
                ins.answer.format(
                    answer=text.answer_speech(pronoun, said[-1]["text"] if said else None)
                ),
            )
        ins = text.instruction(self.rng, e.intent)
        if e.intent == "history_sound":
            sounds = [h for h in before if h["kind"] in ("sound", "shout")]
            return text.Instruction(
                ins.intent,
                ins.text,
                ins.answer.format(answer=text.answer_sound(sounds[-1]["noun"] if sounds else None)),
            )
        if e.intent == "history_alert":
            alerts = [h for h in before if h["alert"]]
            return text.Instruction(
                ins.intent,
                ins.text,
                ins.answer.format(answer=text.answer_alert(alerts[-1]["noun"] if alerts else None)),
            )
        return ins

    def render(self) -> tuple[np.ndarray, dict]:
        """The stream audio (samples,) float32 and its events, words and targets."""
        rng, cfg, aug = self.rng, self.recipe.tfjp, self.recipe.augment
        half = cfg.half_chunk
        n = int(round(self.plan.duration * SR / half)) * half
        bed_db = float(rng.uniform(*self.recipe.bed_db))
        mix = _bed(self.plan, n, rng, self.split, bed_db, cfg)
        bed_rms = 10 ** (bed_db / 20)
        events, words, targets = [], [], {"transcribe": [], "alert": [], "assist": []}
        cursor = 0
        for i, e in enumerate(self.plan.events):
            start = max(0, int(np.ceil((cursor + e.gap_s * SR) / half)) * half)
            grounded = self._ground(i, e, start / SR)
            if grounded is None:
                continue
            x, onset, offset, info = grounded
            if start + len(x) > n:
                break
            gain = bed_rms * 10 ** (e.snr_db / 20) / _rms(x[onset:offset])
            mix[start : start + len(x)] += gain * x
            t0, t1 = (start + onset) / SR, (start + offset) / SR
            ev = {
                "start": round(t0, 4),
                "end": round(t1, 4),
                "category": info["category"],
                "label": info["label"],
                "alert": info["alert"],
                "source": info["source"],
                "snr_db": round(e.snr_db, 2),
            }
            if "text" in info:
                ev.update(text=info["text"], speaker=info["speaker"], addressed=info["addressed"])
            events.append(ev)
            for w in info.get("words", []):
                wd = {
                    "word": w.word,
                    "start": round(start / SR + w.start, 4),
                    "end": round(start / SR + w.end, 4),
                    "speaker": info["speaker"],
                    "addressed": info["addressed"],
                }
                if "timing" in info:
                    wd["timing"] = info["timing"]
                words.append(wd)
                targets["transcribe"].append({"t": wd["end"], "text": w.word})
            if info["alert"]:
                targets["alert"].append(
                    {"t": ev["start"], "text": f"{alert_tag(info['label'])} {info['caption']}"}
                )
            if "answer" in info:
                targets["assist"].append({"t": words[-1]["end"], "text": info["answer"]})
            self.history.append(
                {
                    **ev,
                    "kind": e.kind if e.kind != "tv" else "tv",
                    "noun": info["noun"],
                    "speaker_index": e.speaker,
                    "gender": info.get("gender", ""),
                }
            )
            cursor = max(cursor, start + offset)
        mix, mic = augment.microphone(mix, rng, aug)
        peak = float(np.max(np.abs(mix)))
        if peak > 0.98:  # keep FLAC's 16-bit range; SNRs are relative, so they survive
            mix *= 0.98 / peak
        for v in targets.values():
            v.sort(key=lambda d: d["t"])
        meta = {
            "scenario": self.plan.scenario,
            "bed": self.plan.bed,
            "bed_db": round(bed_db, 2),
            "mic": mic,
            "events": events,
            "words": words,
            "targets": targets,
        }
        return mix.astype(np.float32), meta

    def _ground(self, i: int, e: PlannedEvent, at: float):
        """(clip, onset, offset, info) for one planned event, or None if it cannot be grounded."""
        rng, cfg, aug = self.rng, self.recipe.tfjp, self.recipe.augment
        if e.kind == "sound":
            clips = self.lib.query(label=e.label)
            if not clips:
                return None
            clip = clips[int(rng.integers(len(clips)))]
            x = augment.augment_clip(self.lib.load(clip, rng), rng, aug)
            x = x[: int(MAX_CLIP_S * SR)]
            x, onset, offset = tfjp.prepare_clip(x, cfg)
            if offset <= onset:
                return None
            noun = NOUNS.get(clip.label, clip.caption)
            return (
                x,
                onset,
                offset,
                {
                    "category": clip.category,
                    "label": clip.label,
                    "alert": clip.alert,
                    "source": clip.source if clip.path is None else clip.id,
                    "caption": clip.caption,
                    "noun": noun,
                },
            )
        if e.kind == "speech" and e.label == "corpus":
            return self._ground_corpus_speech(e)
        spk = self.speakers[e.speaker]
        info = {
            "category": "Speech",
            "label": e.label or e.kind,
            "alert": False,
            "speaker": spk.id,
            "addressed": e.kind == "instruction",
            "gender": spk.gender,
            "noun": "someone talking",
            "source": "tts:" + spk.id,
        }
        if e.kind == "instruction":
            ins = self._instruction(e, at)
            words_text, info["answer"], info["label"] = (
                ins.text,
                ins.answer,
                f"instruction_{ins.intent}",
            )
        else:
            words_text = e.text
        if e.kind == "shout":
            # A shout: the person, louder and higher, alert-worthy whatever the scenario.
            v = spk.voice
            if isinstance(v, espeak.Voice):
                v = espeak.Voice(
                    v.name,
                    v.variant,
                    rate=max(v.rate, 170),
                    pitch=min(99, v.pitch + 25),
                    pitch_range=90,
                    gender=v.gender,
                )
            spk = Speaker(spk.id, spk.gender, v)
            info.update(
                category="Human",
                label="shout_for_help",
                alert=True,
                caption="someone is shouting for help",
                noun=NOUNS["shout_for_help"],
            )
        x, said = self._say(i, words_text, spk)
        factor = float(rng.uniform(*aug.speed))
        x = augment.speed_perturb(x, factor)
        said = [espeak.Word(w.word, w.start / factor, w.end / factor) for w in said]
        if e.kind == "tv":
            x = augment.band_limit(x, 250.0, 4500.0)
            bgm = procedural.music(procedural.Params(rng, self.split))
            x[: len(bgm)] += 0.2 * _rms(x) / _rms(bgm) * bgm[: len(x)]
            info.update(speaker="tv:" + spk.id, category="Speech", noun="the tv")
        elif rng.uniform() < aug.room_prob:
            rir = augment.room_impulse(
                rng, float(rng.uniform(*aug.rt60_s)), float(rng.uniform(*aug.drr_db))
            )
            x = augment.reverberate(x, rir)
        onset, offset = int(said[0].start * SR), int(said[-1].end * SR)
        x = tfjp.fade_edges(x, ms=cfg.frame_ms / 2)
        x, new_onset = tfjp.align_half_chunk(x, onset, cfg)
        lead = (new_onset - onset) / SR
        info["words"] = [espeak.Word(w.word, w.start + lead, w.end + lead) for w in said]
        info["text"] = words_text
        return x, new_onset, offset + (new_onset - onset), info

    def _ground_corpus_speech(self, e: PlannedEvent):
        """A recorded utterance with a transcript. Corpora carry no word times, so the words
        share the voiced core in proportion to their letters (marked "timing": "estimated")."""
        rng, cfg = self.rng, self.recipe.tfjp
        clips = [c for c in self.lib.query(category="Speech") if c.text]
        if not clips:
            return None
        clip = clips[int(rng.integers(len(clips)))]
        x = self.lib.load(clip, rng)[: int(3 * MAX_CLIP_S * SR)]
        start, end = tfjp.core_span(x, cfg)
        x = tfjp.fade_edges(x, ms=cfg.frame_ms / 2)
        x, onset = tfjp.align_half_chunk(x, start, cfg)
        offset = onset + (end - start)
        toks = clip.text.split()
        weights = np.array([len(t) + 1 for t in toks], np.float64)
        cuts = onset + (offset - onset) * np.concatenate(
            [[0.0], np.cumsum(weights) / weights.sum()]
        )
        words = [
            espeak.Word(t, float(cuts[k]) / SR, float(cuts[k + 1]) / SR) for k, t in enumerate(toks)
        ]
        speaker = f"{clip.source}:{clip.extra.get('speaker', clip.id)}"
        return (
            x,
            onset,
            offset,
            {
                "category": "Speech",
                "label": "corpus_speech",
                "alert": False,
                "source": clip.id,
                "speaker": speaker,
                "addressed": False,
                "gender": "",
                "noun": "someone talking",
                "words": words,
                "text": clip.text,
                "timing": "estimated",
            },
        )
