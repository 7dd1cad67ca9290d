"""festival speech with word timings read from the utterance's own Word relation.

One festival process speaks a batch of sentences (startup costs ~0.5 s, synthesis little),
printing each word's first-segment start and last-segment end from the SylStructure tree.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from soundflow.audio import SAMPLE_RATE

from .espeak import Word

# kal_diphone trains; slt (when installed) is kept for eval only (train/data/README.md, the split table).
TRAIN_VOICES = {"kal_diphone": "m"}
EVAL_VOICES = {"cmu_us_slt_arctic_hts": "f"}


class FestivalError(RuntimeError):
    """festival is missing or failed on a batch."""


@dataclass(frozen=True)
class FestivalVoice:
    name: str = "kal_diphone"
    stretch: float = 1.0  # Duration_Stretch: >1 speaks slower
    gender: str = "m"

    @property
    def id(self) -> str:
        return f"festival:{self.name}"


def installed_voices() -> set[str]:
    """Voice directories festival can load (cheap: a directory listing, no process)."""
    if shutil.which("festival") is None:
        return set()
    root = Path("/usr/share/festival/voices")
    return {p.name for p in root.glob("*/*") if p.is_dir()} if root.is_dir() else set()


def voice_pool(split: str) -> dict[str, str]:
    pool = EVAL_VOICES if split == "eval" else TRAIN_VOICES
    have = installed_voices()
    return {name: g for name, g in pool.items() if name in have}


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "").replace('"', "") + '"'


def synthesize_many(texts: list[str], voice: FestivalVoice) -> list[tuple[np.ndarray, list[Word]]]:
    """Speak each text (plain words) with one festival process; 16 kHz audio + word times."""
    if shutil.which("festival") is None:
        raise FestivalError("festival is not installed: `apt-get install festival`")
    if not texts:
        return []
    with tempfile.TemporaryDirectory(prefix="sf-festival-") as tmp:
        lines = [f"(voice_{voice.name})", f"(Parameter.set 'Duration_Stretch {voice.stretch:.3f})"]
        for i, text in enumerate(texts):
            wav = Path(tmp) / f"{i}.wav"
            lines += [
                f"(set! utt (Utterance Text {_quote(text)}))",
                "(utt.synth utt)",
                f'(utt.save.wave utt "{wav}" \'riff)',
                f'(format t "U {i}\\n")',
                '(mapcar (lambda (w) (format t "W %s %f %f\\n" (item.name w)'
                ' (item.feat w "R:SylStructure.daughter1.daughter1.segment_start")'
                ' (item.feat w "R:SylStructure.daughtern.daughtern.segment_end")))'
                " (utt.relation.items utt 'Word))",
            ]
        script = Path(tmp) / "batch.scm"
        script.write_text("\n".join(lines) + "\n")
        proc = subprocess.run(
            ["festival", "--batch", str(script)], capture_output=True, text=True, timeout=600
        )
        if proc.returncode != 0:
            raise FestivalError(f"festival failed: {proc.stderr.strip()[-400:]}")
        words: dict[int, list[Word]] = {}
        current = -1
        for line in proc.stdout.splitlines():
            parts = line.split()
            if parts[:1] == ["U"]:
                current = int(parts[1])
                words[current] = []
            elif parts[:1] == ["W"] and len(parts) == 4 and current >= 0:
                words[current].append(Word(parts[1], float(parts[2]), float(parts[3])))
        out = []
        for i, text in enumerate(texts):
            audio, rate = sf.read(Path(tmp) / f"{i}.wav", dtype="float32", always_2d=True)
            audio = soxr.resample(audio[:, 0], rate, SAMPLE_RATE).astype(np.float32)
            got = words.get(i, [])
            if len(got) != len(text.split()):
                raise FestivalError(f"festival gave {len(got)} words for {text!r}")
            # festival's names are lowercased tokens; keep the caller's spelling.
            out.append(
                (audio, [Word(w, g.start, g.end) for w, g in zip(text.split(), got, strict=True)])
            )
        return out
