"""The Whisper recipes (run by train/trainer.py on the kind in train/kinds/whisper/train.py): stages,
task mixes and steps as plain data, so what reads a bundle's recipe name needs no loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar


@dataclass(frozen=True)
class Stage:
    name: str
    steps: int
    lr: float  # peak, for the decoder layers; appended token rows get `new_lr`
    trainable: str  # "new" (appended tokens) | "cross" (+ cross-attention q/out) | "decoder"
    tasks: dict[str, float]  # task mix
    captions: str = "word"  # transcribe targets: each word at its end, or "phrase"s
    floor: ClassVar[float] = 0.0  # the schedule decays to 0 (train/trainer.py lr_at)

    @property
    def warmup(self) -> int:
        """Linear warm-up steps: a tenth of the stage, 1 to 20."""
        return max(1, min(20, self.steps // 10))


@dataclass(frozen=True)
class WhisperRecipe:
    name: str
    stages: tuple[Stage, ...]
    batch: int = 6
    n_chunks: int = 24  # 9.6 s segments: each chunk's window is its memory (24 x 220 frames)
    new_lr: float = 2e-3
    lam: float = 1.0  # L = L_lm + lam * L_stream
    seed: int = 0
    focus_prob: float = 0.6
    dims: dict = field(default_factory=dict)  # WhisperModelConfig fields
    # A continuation: starts from a bundle this project shipped (--init-bundle), not from
    # Whisper alone, so CPU-only sessions can add training to the committed default.
    continues: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


ALL = {"transcribe": 0.4, "alert": 0.3, "assist": 0.3}
INSTRUCTION = {"transcribe": 0.2, "alert": 0.4, "assist": 0.4}
PHRASES = {"transcribe": 0.5, "alert": 0.25, "assist": 0.25}

RECIPES = {
    # The default model: tiny.en through the four stages on the default data recipe.
    "whisper-tiny": WhisperRecipe(
        "whisper-tiny",
        (
            Stage("format", 30, 0.0, "new", ALL),
            Stage("adapter", 80, 5e-5, "cross", ALL),
            Stage("streaming", 260, 3e-5, "decoder", ALL),
            Stage("instruction", 70, 1.5e-5, "decoder", INSTRUCTION),
            # Word-by-word captions stayed at WER ~80 % on held-out voices: the decoder has
            # to find the one word that just ended. A phrase (words up to a pause or 3 s)
            # at its end is what Whisper reads well; this stage teaches that granularity.
            Stage("phrases", 160, 2e-5, "decoder", PHRASES, captions="phrase"),
        ),
    ),
    # More of the same on fresh streams, from the shipped default (train/kinds/whisper/warmstart.py):
    # 8 h from two builds, data recipes `negatives` (twice the benign sounds) and `default`
    # (more speech), phrase captions, a gentler rate for the appended rows, which are trained
    # already. 450 steps on 4 h took flite's WER from 62 % to 47 % and were still improving,
    # so it runs 2400 (~45 min at 0.9 steps/s on 2 idle cores).
    "whisper-tiny-more": WhisperRecipe(
        "whisper-tiny-more",
        (Stage("more", 2400, 2e-5, "decoder", ALL, captions="phrase"),),
        new_lr=5e-4,
        seed=1,
        continues=True,
    ),
    # A minute on CI-sized data: proves the loop, teaches nothing.
    "whisper-smoke": WhisperRecipe(
        "whisper-smoke",
        (Stage("format", 2, 0.0, "new", ALL), Stage("streaming", 2, 1e-5, "decoder", ALL)),
        batch=2,
        n_chunks=8,
    ),
}
