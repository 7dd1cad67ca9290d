"""The decoder-only kind for train/trainer.py: SoundFlowModel or a pretrained audio LLM, its
segments drawn per step and rank, and its loss terms (lm, stream, ctc)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from soundflow import protocol
from soundflow.train.checkpoint import save_checkpoint
from soundflow.train.dataset import Segment, StreamSource, draw
from soundflow.train.kinds.decoder.model import LossTerms, SoundFlowModel, combine_losses
from soundflow.train.kinds.decoder.recipes import Stage, TrainRecipe
from soundflow.train.kinds.decoder.sequence import IGNORE, layout
from soundflow.train.parallel import autocast
from soundflow.train.tokenizer import encode_response, prompt_ids, special_ids
from soundflow.train.trainer import Plan, Position, world


class Batcher:
    """Segments -> (pcm, layouts, CTC targets) with one tokenizer."""

    def __init__(self, tokenizer, cfg):
        self.tok, self.cfg = tokenizer, cfg
        ids = special_ids(tokenizer)
        self.silence, self.respond = ids[protocol.SILENCE], ids[protocol.RESPOND]
        self.eos = ids[protocol.EOS]

    def __call__(self, segments: list[Segment], model: SoundFlowModel):
        pcm = torch.from_numpy(np.stack([s.pcm for s in segments]))
        layouts = [
            layout(
                prompt_ids(self.tok, s.task),
                [None if r is None else encode_response(self.tok, r) for r in s.responses],
                self.cfg.embeds_per_chunk,
                self.silence,
                self.respond,
                self.eos,
            )
            for s in segments
        ]
        return pcm, layouts, [model.ctc_ids(s.transcript) for s in segments]


def label_counts(batches) -> dict[str, float]:
    """Labels of each loss term over micro-batches of (pcm, layouts, ctc targets)."""
    lays = [lay for _, ls, _ in batches for lay in ls]
    return {
        "lm_n": float(sum(x != IGNORE for lay in lays for x in lay.lm_labels)),
        "stream_n": float(sum(x != IGNORE for lay in lays for x in lay.stream_labels)),
        "ctc_n": float(sum(len(c) for _, _, c in batches)),
    }


@runtime_checkable
class TrainableModel(Protocol):
    """The model the trainer drives: SoundFlowModel (train/kinds/decoder/model.py) and the pretrained
    audio LLM of train/kinds/decoder/pretrained.py. `forward` returns the loss sums and label counts
    (`decoder_losses`; with `control_ids` also the control targets and predictions), which
    `combine_losses` turns into a LossTerms over the whole step."""

    cfg: Any  # chunk_ms, embeds_per_chunk, ...: what Batcher and draw read
    encoder: torch.nn.Module
    adapter: torch.nn.Module
    ctc_head: torch.nn.Module
    decoder: torch.nn.Module

    def __call__(
        self, pcm: torch.Tensor, layouts, ctc, control_ids: tuple[int, int] | None = None
    ) -> dict[str, torch.Tensor]: ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...


@runtime_checkable
class SavesOwnCheckpoint(Protocol):
    """A model whose checkpoint is not soundflow's layout (train/kinds/decoder/pretrained.py: the HF one)."""

    def save_checkpoint(self, tokenizer, out: Path, extra: dict) -> None: ...


def max_sequence(recipe: TrainRecipe, cfg) -> int:
    """Decoder positions the longest stage's segments span (prompt + audio + control, with
    room for responses): the runtime keeps its cache within what training has seen."""
    chunks = max(s.chunks_per_sample for s in recipe.stages)
    return 2 + chunks * (cfg.embeds_per_chunk + 1) + chunks * 2


def set_trainable(model: TrainableModel, which: str) -> list[torch.nn.Parameter]:
    groups = {
        "all": [model],
        "audio": [model.encoder, model.adapter, model.ctc_head],
        "adapter": [model.adapter],
        "decoder": [model.decoder],
    }[which]
    for p in model.parameters():
        p.requires_grad_(False)
    for module in groups:
        for p in module.parameters():
            p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


@torch.no_grad()
def evaluate(
    model: TrainableModel,
    batcher: Batcher,
    source: StreamSource,
    recipe: TrainRecipe,
    stage: Stage,
    device,
) -> dict:
    """Losses and control-token accuracy on fixed eval segments (seeded apart from training)."""
    model.eval()
    tasks = tuple(t for t, _ in stage.task_weights)
    segs = [
        draw(
            source,
            recipe.train.seed + 7919,
            i,
            tasks,
            stage.chunks_per_sample,
            model.cfg.chunk_ms,
            stage.focus_prob,
        )
        for i in range(recipe.train.eval_samples)
    ]
    pcm, lays, ctc = batcher(segs, model)
    with autocast(device):
        out = model(pcm.to(device), lays, ctc, control_ids=(batcher.silence, batcher.respond))
    terms = combine_losses(out, label_counts([(pcm, lays, ctc)]), recipe.train.loss)
    target, pred = out["control_target"], out["control_pred"]
    respond = target == batcher.respond
    hits = pred == target
    return {
        **{k: round(v.item(), 4) for k, v in terms.items()},  # loss and each term
        "control_accuracy": round(hits.float().mean().item(), 4),
        "respond_recall": round(hits[respond].float().mean().item(), 4) if respond.any() else None,
    }


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
