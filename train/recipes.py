"""Named training recipes: the model's dimensions plus the optimisation schedule.

A recipe is data, not code: `soundflow train --recipe NAME` looks it up here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from soundflow.train.config import EncoderConfig, ModelConfig, tiny_decoder
from soundflow.train.model import LossWeights

from soundflow import protocol


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 200  # optimizer steps
    batch_size: int = 8  # samples per step, summed over all ranks
    grad_accum: int = 1  # micro-batches per step on each rank
    chunks_per_sample: int = 16  # chunks in one training segment
    lr: float = 2e-3
    warmup: int = 20  # linear warm-up steps, then cosine decay to lr / 10
    weight_decay: float = 0.01
    loss: LossWeights = field(default_factory=LossWeights)
    tasks: tuple[str, ...] = protocol.TASKS
    focus_prob: float = 0.5  # share of samples centred on a response
    vocab_size: int = 512  # BPE vocabulary (special tokens included)
    log_every: int = 10
    ckpt_every: int = 100  # steps between checkpoints (and trainer state for --resume)
    eval_every: int = 100
    eval_samples: int = 16
    seed: int = 0


@dataclass(frozen=True)
class Recipe:
    name: str
    model: ModelConfig
    train: TrainConfig
    data: str  # "toy" (generated) or "shards" (needs --data DIR)
    toy_streams: int = 256  # streams in the toy source


RECIPES = {
    # About 30 s on 2 idle CPU cores: proves the whole pipeline on generated tones.
    "smoke": Recipe(
        name="smoke",
        model=ModelConfig(
            encoder=EncoderConfig(d_model=64, n_layers=2, n_heads=4, left_context=20),
            decoder=tiny_decoder(hidden=64, layers=2, heads=4, kv_heads=2),
        ),
        train=TrainConfig(
            steps=300,
            batch_size=8,
            chunks_per_sample=12,
            lr=3e-3,
            warmup=10,
            vocab_size=300,
            log_every=25,
            ckpt_every=100,
            eval_every=150,
            eval_samples=8,
        ),
        data="toy",
    ),
}


def get_recipe(name: str, **overrides) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[name]
    if overrides:
        recipe = replace(recipe, train=replace(recipe.train, **overrides))
    return recipe
