"""The decoder-only kind for train/trainer.py: SoundFlowModel or a pretrained audio LLM, its
segments drawn per step and rank, and its loss terms (lm, stream, ctc)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from soundflow.train.checkpoint import save_checkpoint
from soundflow.train.dataset import StreamSource, draw
from soundflow.train.model import LossTerms, combine_losses
from soundflow.train.parallel import autocast
from soundflow.train.recipes import Stage, TrainRecipe
from soundflow.train.trainer import (
    Batcher,
    Plan,
    Position,
    SavesOwnCheckpoint,
    TrainableModel,
    evaluate,
    label_counts,
    max_sequence,
    set_trainable,
    world,
)


def plan(recipe: TrainRecipe) -> Plan:
    tc = recipe.train
    return Plan(recipe.name, recipe.stages, tc.log_every, tc.ckpt_every, tc.eval_every)


class DecoderKind:
    """Segments -> (pcm, layouts, CTC targets) -> the model's loss sums over the step's counts."""

    def __init__(
        self,
        recipe: TrainRecipe,
        model: TrainableModel,
        tokenizer,
        source: StreamSource,
        eval_source: StreamSource | None = None,
    ):
        _, size = world()
        tc = recipe.train
        if tc.batch_size % (size * tc.grad_accum):
            raise ValueError(
                f"batch_size {tc.batch_size} is not divisible by "
                f"{size} ranks x {tc.grad_accum} accumulation steps"
            )
        self.recipe, self.model, self.tokenizer = recipe, model, tokenizer
        self.source, self.eval_source = source, eval_source
        self.batch_size, self.weight_decay = tc.batch_size, tc.weight_decay
        self.micro = tc.batch_size // (size * tc.grad_accum)
        self.batcher = Batcher(tokenizer, model.cfg)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def param_groups(self, stage: Stage) -> list[tuple[list[torch.nn.Parameter], float]]:
        return [(set_trainable(self.model, stage.trainable), stage.lr)]

    def batches(self, stage: Stage, pos: Position) -> list:
        rank, _ = world()
        tc = self.recipe.train
        tasks = tuple(t for t, _ in stage.task_weights)
        weights = np.array([w for _, w in stage.task_weights], dtype=np.float64)
        seed = tc.seed * 1000 + pos.stage  # each stage draws its own samples
        out = []
        for a in range(tc.grad_accum):
            first = pos.step * tc.batch_size + (rank * tc.grad_accum + a) * self.micro
            segs = [
                draw(
                    self.source,
                    seed,
                    first + i,
                    tasks,
                    stage.chunks_per_sample,
                    self.model.cfg.chunk_ms,
                    stage.focus_prob,
                    weights / weights.sum(),
                )
                for i in range(self.micro)
            ]
            out.append(self.batcher(segs, self.model))
        return out

    def label_counts(self, batches: list) -> dict[str, float]:
        return label_counts(batches)

    def loss_terms(self, model, batch, totals: dict[str, float]) -> LossTerms:
        pcm, lays, ctc = batch
        device = self.device
        with autocast(device):
            return combine_losses(model(pcm.to(device), lays, ctc), totals, self.recipe.train.loss)

    def evaluate(self, stage: Stage) -> dict | None:
        if self.eval_source is None:
            return None
        return evaluate(self.model, self.batcher, self.eval_source, self.recipe, stage, self.device)

    def save(self, out: Path, weights: dict, extra: dict, pos: Position) -> None:
        stages = self.recipe.stages
        extra = {
            **extra,
            "tasks": sorted({t for s in stages for t, _ in s.task_weights}),
            "max_sequence": max_sequence(self.recipe, self.model.cfg),
        }
        if isinstance(self.model, SavesOwnCheckpoint):  # a pretrained audio LLM: its HF layout
            self.model.save_checkpoint(self.tokenizer, out, extra=extra)
        else:
            save_checkpoint(self.model, self.tokenizer, out, state_dict=weights, extra=extra)
