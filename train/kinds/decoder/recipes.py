"""Named training recipes: the model's dimensions, the optimisation settings, and the
paper's stages as entries. `soundflow train --recipe NAME` looks a recipe up here.

Stages (SoundFlow): (1) format — control tokens on short offline clips; (2) adapter —
align audio to the decoder; (3) streaming SFT on long streams; (4) instruction
fine-tuning on interleaved streams, with history-review and comprehension-aware silence.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

from soundflow import protocol
from soundflow.train.config import EncoderConfig, ModelConfig, tiny_decoder
from soundflow.train.kinds.decoder.model import LossWeights

TRAINABLE = ("all", "audio", "adapter", "decoder")


@dataclass(frozen=True)
class Stage:
    name: str
    steps: int
    lr: float
    chunks_per_sample: int  # chunks in one training segment
    focus_prob: float = 0.5  # share of samples centred on a response (responses are rare)
    task_weights: tuple[tuple[str, float], ...] = tuple((t, 1.0) for t in protocol.TASKS)
    trainable: str = "all"  # one of TRAINABLE: which parameters this stage updates
    warmup: int = 20  # linear warm-up steps, then cosine decay to lr / 10
    floor: ClassVar[float] = 0.1  # the schedule's end, a share of lr (train/trainer.py lr_at)

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise ValueError(f"stage {self.name}: trainable must be one of {TRAINABLE}")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 8  # samples per step, summed over all ranks
    grad_accum: int = 1  # micro-batches per step on each rank
    weight_decay: float = 0.01
    loss: LossWeights = field(default_factory=LossWeights)
    vocab_size: int = 512  # BPE vocabulary (special tokens included)
    log_every: int = 10
    ckpt_every: int = 100  # steps between checkpoints (and trainer state for --resume)
    eval_every: int = 100
    eval_samples: int = 16
    seed: int = 0


@dataclass(frozen=True)
class TrainRecipe:
    name: str
    model: ModelConfig
    train: TrainConfig
    stages: tuple[Stage, ...]
    data: str  # "toy" (generated) or "shards" (needs --data DIR)
    toy_streams: int = 256  # streams in the toy source

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)


RECIPES = {
    # About 30 s on 2 idle CPU cores: proves the whole pipeline on generated tones.
    "smoke": TrainRecipe(
        name="smoke",
        model=ModelConfig(
            encoder=EncoderConfig(d_model=64, n_layers=2, n_heads=4, left_context=20),
            decoder=tiny_decoder(hidden=64, layers=2, heads=4, kv_heads=2),
        ),
        train=TrainConfig(
            batch_size=8,
            vocab_size=300,
            log_every=25,
            ckpt_every=100,
            eval_every=150,
            eval_samples=8,
        ),
        stages=(Stage("streaming", steps=300, lr=3e-3, chunks_per_sample=24, warmup=10),),
        data="toy",
    ),
    # The embedded default: ~5 M parameters, sized to train on 2 CPU cores in < 3 hours.
    "default": TrainRecipe(
        name="default",
        model=ModelConfig(
            encoder=EncoderConfig(d_model=144, n_layers=4, n_heads=4, left_context=50),
            decoder=tiny_decoder(hidden=192, layers=4, heads=6, kv_heads=2),
        ),
        train=TrainConfig(
            batch_size=8,
            vocab_size=1024,
            log_every=20,
            ckpt_every=200,
            eval_every=400,
            eval_samples=16,
            loss=LossWeights(lambda_stream=1.0, mu_ctc=0.3),
        ),
        stages=(
            Stage("format", steps=900, lr=2e-3, chunks_per_sample=8, focus_prob=1.0, warmup=40),
            Stage(
                "adapter",
                steps=1300,
                lr=2e-3,
                chunks_per_sample=12,
                focus_prob=0.8,
                trainable="audio",
            ),
            Stage("streaming", steps=4400, lr=1.5e-3, chunks_per_sample=24, focus_prob=0.5),
            Stage(
                "instruction",
                steps=1400,
                lr=5e-4,
                chunks_per_sample=32,
                focus_prob=0.7,
                task_weights=(("transcribe", 0.5), ("alert", 1.0), ("assist", 2.0)),
            ),
        ),
        data="shards",
    ),
}


def get_recipe(name: str, steps: int | None = None, **train_overrides) -> TrainRecipe:
    """A recipe by name; `steps` rescales every stage so the total is about `steps`."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[name]
    if train_overrides:
        recipe = replace(recipe, train=replace(recipe.train, **train_overrides))
    if steps:
        scale = steps / recipe.total_steps
        stages = tuple(
            replace(
                s,
                steps=max(1, round(s.steps * scale)),
                warmup=min(s.warmup, max(1, round(s.steps * scale) // 5)),
            )
            for s in recipe.stages
        )
        recipe = replace(recipe, stages=stages)
    return recipe
