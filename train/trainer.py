"""The staged training loop: single process or data-parallel under torchrun (DDP).

Rank 0 alone logs and writes checkpoints; `--resume` continues from trainer_state/,
at the same stage and step, on any number of ranks.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import distributed as dist

from soundflow import protocol
from soundflow.train.checkpoint import save_checkpoint
from soundflow.train.dataset import Segment, StreamSource, draw
from soundflow.train.model import SoundFlowModel, combine_losses, parameter_counts
from soundflow.train.parallel import Parallel, autocast
from soundflow.train.recipes import Stage, TrainRecipe
from soundflow.train.sequence import IGNORE, layout
from soundflow.train.tokenizer import encode_response, prompt_ids, special_ids


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> None:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE set)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))


def close_distributed(barrier: bool = True) -> None:
    """Leave the process group before the interpreter exits. Left to the destructors, gloo's
    threads were sometimes torn down mid-use and a rank aborted ("terminate called without
    an active exception", exit -6) after a finished run."""
    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


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
    """The model the trainer drives: SoundFlowModel (train/model.py) and the pretrained
    audio LLM of train/pretrained.py. `forward` returns the loss sums and label counts
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
    """A model whose checkpoint is not soundflow's layout (train/pretrained.py: the HF one)."""

    def save_checkpoint(self, tokenizer, out: Path, extra: dict) -> None: ...


def max_sequence(recipe: TrainRecipe, cfg) -> int:
    """Decoder positions the longest stage's segments span (prompt + audio + control, with
    room for responses): the runtime keeps its cache within what training has seen."""
    chunks = max(s.chunks_per_sample for s in recipe.stages)
    return 2 + chunks * (cfg.embeds_per_chunk + 1) + chunks * 2


def lr_at(step: int, stage: Stage) -> float:
    """Linear warm-up, then cosine decay to a tenth, within one stage."""
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    progress = (step - stage.warmup) / max(1, stage.steps - stage.warmup)
    return stage.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


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


@dataclass
class Position:
    """Where training stands: stage index, step within it, and steps over all stages."""

    stage: int = 0
    step: int = 0
    global_step: int = 0

    @classmethod
    def load(cls, state_dir: Path) -> Position:
        d = json.loads((state_dir / "state.json").read_text())
        return cls(d.get("stage", 0), d["step"], d.get("global_step", d["step"]))


def train(
    recipe: TrainRecipe,
    model: TrainableModel,
    tokenizer,
    source: StreamSource,
    eval_source: StreamSource | None,
    out: Path,
    resume: bool = False,
    until: int | None = None,
    strategy: str = "ddp",
    log=print,
) -> dict:
    """Run the recipe's stages in order; returns the last logged metrics.

    `until` stops at that global step (checkpointed) without changing any schedule, so a
    long recipe can run in pieces and continue with `resume`, on any number of ranks.
    `strategy`: "ddp" (replicas) or "fsdp" (sharded parameters) when several ranks run.
    """
    rank, size = world()
    tc = recipe.train
    if tc.batch_size % (size * tc.grad_accum):
        raise ValueError(
            f"batch_size {tc.batch_size} is not divisible by "
            f"{size} ranks x {tc.grad_accum} accumulation steps"
        )
    device = torch.device(
        f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    )
    parallel = Parallel(strategy, size)
    if rank == 0:
        log(
            f"parameters: {parameter_counts(model)}; {size} rank(s) ({strategy if size > 1 else 'single'}), "
            f"{tc.batch_size // (size * tc.grad_accum)} samples/micro-batch"
        )
    model.to(device)
    parallel.prepare(model)
    state_dir = out / "trainer_state"
    pos = Position()
    if resume and (state_dir / "state.json").is_file():
        pos = Position.load(state_dir)
        name = recipe.stages[min(pos.stage, len(recipe.stages) - 1)].name
        log(f"resumed at step {pos.global_step} (stage {name}, step {pos.step}) from {state_dir}")
    metrics: dict = {}
    ctx = StageContext(
        recipe, model, parallel, tokenizer, source, eval_source, out, device, until, log
    )
    while pos.stage < len(recipe.stages):
        stage = recipe.stages[pos.stage]
        metrics = _run_stage(ctx, stage, pos, resume_optimizer=resume and pos.step > 0)
        if pos.step < stage.steps:  # stopped by `until`
            break
        pos = Position(pos.stage + 1, 0, pos.global_step)
        resume = False
    return metrics


@dataclass(frozen=True)
class StageContext:
    """What every stage of one `train` call shares (the stage and the position vary)."""

    recipe: TrainRecipe
    model: TrainableModel
    parallel: Parallel
    tokenizer: Any
    source: StreamSource
    eval_source: StreamSource | None
    out: Path
    device: torch.device
    until: int | None
    log: Callable[..., None]


def _run_stage(ctx: StageContext, stage: Stage, pos: Position, resume_optimizer: bool) -> dict:
    recipe, model, parallel, tokenizer = ctx.recipe, ctx.model, ctx.parallel, ctx.tokenizer
    source, eval_source, out, device = ctx.source, ctx.eval_source, ctx.out, ctx.device
    until, log = ctx.until, ctx.log
    rank, size = world()
    tc, cfg = recipe.train, model.cfg
    micro = tc.batch_size // (size * tc.grad_accum)
    params = set_trainable(model, stage.trainable)
    step_model = parallel.wrap(model)
    opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=tc.weight_decay)
    state_dir = out / "trainer_state"
    if resume_optimizer:
        state = torch.load(state_dir / "optimizer.pt", weights_only=True)
        parallel.load_optimizer_state(model, opt, state)
    tasks = tuple(t for t, _ in stage.task_weights)
    weights = np.array([w for _, w in stage.task_weights], dtype=np.float64)
    batcher = Batcher(tokenizer, cfg)
    seed = tc.seed * 1000 + pos.stage  # each stage draws its own samples
    if rank == 0:
        log(
            f"stage {pos.stage + 1}/{len(recipe.stages)} {stage.name}: {stage.steps} steps, "
            f"trainable={stage.trainable}, chunks/sample={stage.chunks_per_sample}"
        )
    metrics: dict = {}
    t0, seen = time.time(), 0
    while pos.step < stage.steps and (until is None or pos.global_step < until):
        for g in opt.param_groups:
            g["lr"] = lr_at(pos.step, stage)
        model.train()
        opt.zero_grad(set_to_none=True)
        batches = []
        for a in range(tc.grad_accum):
            first = pos.step * tc.batch_size + (rank * tc.grad_accum + a) * micro
            segs = [
                draw(
                    source,
                    seed,
                    first + i,
                    tasks,
                    stage.chunks_per_sample,
                    cfg.chunk_ms,
                    stage.focus_prob,
                    weights / weights.sum(),
                )
                for i in range(micro)
            ]
            batches.append(batcher(segs, model))
        totals = _all_sum(label_counts(batches), size)  # 2 ranks == 1 process, exactly
        sums: dict[str, float] = {}
        for pcm, lays, ctc in batches:
            with autocast(device):
                terms = combine_losses(step_model(pcm.to(device), lays, ctc), totals, tc.loss)
            (terms.loss * size).backward()  # DDP and FSDP average gradients over ranks
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        pos.step += 1
        pos.global_step += 1
        seen += tc.batch_size
        sums = _all_sum(sums, size)  # each rank held its share of the step's means
        last = pos.step == stage.steps or pos.global_step == until
        if rank == 0:
            with open(out / "train_log.jsonl", "a") as f:
                f.write(json.dumps({"step": pos.global_step, "stage": stage.name, **sums}) + "\n")
        if rank == 0 and (pos.step % tc.log_every == 0 or last):
            metrics = {
                "step": pos.global_step,
                "stage": stage.name,
                **{k: round(v, 4) for k, v in sums.items()},
                "lr": round(lr_at(pos.step - 1, stage), 6),
                "samples_per_s": round(seen / (time.time() - t0), 2),
            }
            log(
                _progress(pos, stage, recipe, metrics["samples_per_s"] / tc.batch_size)
                + " "
                + " ".join(f"{k}={v}" for k, v in metrics.items())
            )
        # Sharded parameters need every rank for evaluation and for gathering a checkpoint.
        if (
            eval_source is not None
            and (pos.step % tc.eval_every == 0 or last)
            and (rank == 0 or parallel.sharded)
        ):
            ev = evaluate(model, batcher, eval_source, recipe, stage, device)
            if rank == 0:
                log("eval " + " ".join(f"{k}={v}" for k, v in ev.items()))
                metrics.update({f"eval_{k}": v for k, v in ev.items()})
        if pos.step % tc.ckpt_every == 0 or last:
            _checkpoint(model, parallel, opt, tokenizer, out, recipe, stage, pos, cfg)
    return metrics


def _progress(pos: Position, stage: Stage, recipe: TrainRecipe, steps_per_s: float) -> str:
    """`[3180/8000 40% | streaming 780/4400 | stage eta 34m]`: a progress bar that logs."""
    total = recipe.total_steps
    eta = (stage.steps - pos.step) / max(steps_per_s, 1e-9)
    return (
        f"[{pos.global_step}/{total} {100 * pos.global_step // total}% | {stage.name} "
        f"{pos.step}/{stage.steps} | stage eta {eta / 60:.0f}m]"
    )


def _checkpoint(model, parallel, opt, tokenizer, out, recipe, stage, pos, cfg) -> None:
    """Gather (all ranks, under FSDP) and write (rank 0) the model and the trainer state."""
    rank, _ = world()
    weights = parallel.model_state(model)
    opt_state = parallel.optimizer_state(model, opt)
    if rank != 0:
        return
    extra = {
        "recipe": recipe.name,
        "step": pos.global_step,
        "stage": stage.name,
        "tasks": sorted({t for s in recipe.stages for t, _ in s.task_weights}),
        "max_sequence": max_sequence(recipe, cfg),
    }
    if isinstance(model, SavesOwnCheckpoint):  # a pretrained audio LLM: its HF layout
        model.save_checkpoint(tokenizer, out, extra=extra)
    else:
        save_checkpoint(model, tokenizer, out, state_dict=weights, extra=extra)
    state_dir = out / "trainer_state"
    state_dir.mkdir(exist_ok=True)
    torch.save(opt_state, state_dir / "optimizer.pt.tmp")
    os.replace(state_dir / "optimizer.pt.tmp", state_dir / "optimizer.pt")
    (state_dir / "state.json").write_text(json.dumps(pos.__dict__))


def _all_sum(values: dict[str, float], size: int) -> dict[str, float]:
    if size == 1:
        return values
    keys = sorted(values)
    vals = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(vals)
    return dict(zip(keys, vals.tolist(), strict=True))


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
