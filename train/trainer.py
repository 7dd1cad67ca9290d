"""The one staged training loop, for every model kind (train/kinds/decoder/kind.py, Whisper's in
train/kinds/whisper/train.py): single process or data-parallel under torchrun (DDP / FSDP).

Rank 0 alone logs and writes checkpoints; `--resume` continues from trainer_state/,
at the same stage and step, on any number of ranks.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import distributed as dist

from soundflow.train.kinds.decoder.model import LossTerms
from soundflow.train.parallel import Parallel


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


def lr_at(step: int, stage, peak: float) -> float:
    """The one schedule: linear warm-up over `stage.warmup` steps, then cosine decay to
    `stage.floor` x peak at the stage's end (a tenth for decoder-only stages, 0 for Whisper's).
    The float operations are in the order the Whisper loop used, which shipped the default."""
    if step < stage.warmup:
        return peak * (step + 1) / stage.warmup
    span = max(1, stage.steps - stage.warmup)
    angle = math.pi * min(step - stage.warmup, span) / span
    return peak * (stage.floor + (1 - stage.floor) * (0.5 * (1 + math.cos(angle))))


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


@dataclass(frozen=True)
class Plan:
    """The trainer's view of a recipe: its stages (each with name, steps, warmup, floor,
    trainable) and how often to log, evaluate and write a checkpoint, in steps."""

    name: str
    stages: tuple
    log_every: int = 10
    ckpt_every: int = 100
    eval_every: int = 100

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)


@runtime_checkable
class Kind(Protocol):
    """What one model kind brings to the trainer: its model, the parameter groups a stage
    trains, this rank's micro-batches of a step, their loss terms, an evaluation and its
    checkpoint layout. Stages, schedule, optimizer, resume and logging are the trainer's."""

    model: torch.nn.Module
    batch_size: int  # samples per step, all ranks together
    weight_decay: float

    def param_groups(self, stage) -> list[tuple[list[torch.nn.Parameter], float]]:
        """(parameters, peak learning rate) per group; only these get gradients."""
        ...

    def batches(self, stage, pos: Position) -> list:
        """This rank's micro-batches of step `pos` (drawn from the step alone: resumable)."""
        ...

    def label_counts(self, batches: list) -> dict[str, float]: ...

    def loss_terms(self, model: torch.nn.Module, batch, totals: dict[str, float]) -> LossTerms:
        """One micro-batch's terms, each its sum over `totals` (the step's label counts)."""
        ...

    def evaluate(self, stage) -> dict | None: ...

    def save(self, out: Path, weights: dict, extra: dict, pos: Position) -> None: ...


def train(
    plan: Plan,
    kind: Kind,
    out: Path,
    resume: bool = False,
    until: int | None = None,
    strategy: str = "ddp",
    log=print,
) -> dict:
    """Run the plan's stages in order on `kind`; returns the last logged metrics.

    `until` stops at that global step (checkpointed) without changing any schedule, so a
    long recipe can run in pieces and continue with `resume`, on any number of ranks.
    `strategy`: "ddp" (replicas) or "fsdp" (sharded parameters) when several ranks run.
    """
    rank, size = world()
    device = torch.device(
        f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    )
    parallel = Parallel(strategy, size)
    kind.model.to(device)
    parallel.prepare(kind.model)
    state_dir = out / "trainer_state"
    pos = Position()
    if resume and (state_dir / "state.json").is_file():
        pos = Position.load(state_dir)
        name = plan.stages[min(pos.stage, len(plan.stages) - 1)].name
        log(f"resumed at step {pos.global_step} (stage {name}, step {pos.step}) from {state_dir}")
    metrics: dict = {}
    ctx = StageContext(plan, kind, parallel, out, until, log)
    while pos.stage < len(plan.stages):
        stage = plan.stages[pos.stage]
        metrics = _run_stage(ctx, stage, pos, resume_optimizer=resume and pos.step > 0)
        if pos.step < stage.steps:  # stopped by `until`
            break
        pos = Position(pos.stage + 1, 0, pos.global_step)
        resume = False
    return metrics


@dataclass(frozen=True)
class StageContext:
    """What every stage of one `train` call shares (the stage and the position vary)."""

    plan: Plan
    kind: Kind
    parallel: Parallel
    out: Path
    until: int | None
    log: Callable[..., None]


def _run_stage(ctx: StageContext, stage, pos: Position, resume_optimizer: bool) -> dict:
    rank, size = world()
    kind, plan = ctx.kind, ctx.plan
    groups = kind.param_groups(stage)
    params = [p for ps, _ in groups for p in ps]
    for p in kind.model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    step_model = ctx.parallel.wrap(kind.model)
    opt = torch.optim.AdamW(
        [{"params": ps} for ps, _ in groups], lr=groups[0][1], weight_decay=kind.weight_decay
    )
    if resume_optimizer:
        state = torch.load(ctx.out / "trainer_state" / "optimizer.pt", weights_only=True)
        ctx.parallel.load_optimizer_state(kind.model, opt, state)
    if rank == 0:
        ctx.log(
            f"stage {pos.stage + 1}/{len(plan.stages)} {stage.name}: {stage.steps} steps, "
            f"trainable={stage.trainable}"
        )
    metrics: dict = {}
    t0, seen = time.time(), 0
    while pos.step < stage.steps and (ctx.until is None or pos.global_step < ctx.until):
        for g, (_, peak) in zip(opt.param_groups, groups, strict=True):
            g["lr"] = lr_at(pos.step, stage, peak)
        kind.model.train()
        opt.zero_grad(set_to_none=True)
        batches = kind.batches(stage, pos)
        totals = _all_sum(kind.label_counts(batches), size)  # 2 ranks == 1 process, exactly
        sums: dict[str, float] = {}
        for batch in batches:
            terms = kind.loss_terms(step_model, batch, totals)
            (terms.loss * size).backward()  # DDP and FSDP average gradients over ranks
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        pos.step += 1
        pos.global_step += 1
        seen += kind.batch_size
        sums = _all_sum(sums, size)  # each rank held its share of the step's means
        last = pos.step == stage.steps or pos.global_step == ctx.until
        if rank == 0:
            with open(ctx.out / "train_log.jsonl", "a") as f:
                f.write(json.dumps({"step": pos.global_step, "stage": stage.name, **sums}) + "\n")
        if rank == 0 and (pos.step % plan.log_every == 0 or last):
            metrics = {
                "step": pos.global_step,
                "stage": stage.name,
                **{k: round(v, 4) for k, v in sums.items()},
                "lr": round(opt.param_groups[-1]["lr"], 6),
                "samples_per_s": round(seen / (time.time() - t0), 2),
            }
            ctx.log(
                _progress(pos, stage, plan, metrics["samples_per_s"] / kind.batch_size)
                + " "
                + " ".join(f"{k}={v}" for k, v in metrics.items())
            )
        # Sharded parameters need every rank for evaluation and for gathering a checkpoint.
        if (pos.step % plan.eval_every == 0 or last) and (rank == 0 or ctx.parallel.sharded):
            ev = kind.evaluate(stage)
            if rank == 0 and ev is not None:
                ctx.log("eval " + " ".join(f"{k}={v}" for k, v in ev.items()))
                metrics.update({f"eval_{k}": v for k, v in ev.items()})
        if pos.step % plan.ckpt_every == 0 or last:
            _checkpoint(ctx, opt, stage, pos)
    return metrics


def _progress(pos: Position, stage, plan: Plan, steps_per_s: float) -> str:
    """`[3180/8000 40% | streaming 780/4400 | stage eta 34m]`: a progress bar that logs."""
    total = plan.total_steps
    eta = (stage.steps - pos.step) / max(steps_per_s, 1e-9)
    return (
        f"[{pos.global_step}/{total} {100 * pos.global_step // total}% | {stage.name} "
        f"{pos.step}/{stage.steps} | stage eta {eta / 60:.0f}m]"
    )


def _checkpoint(ctx: StageContext, opt, stage, pos: Position) -> None:
    """Gather (all ranks, under FSDP) and write (rank 0) the model, in its kind's layout,
    and the trainer state: the optimizer and the position, which `--resume` reads."""
    rank, _ = world()
    weights = ctx.parallel.model_state(ctx.kind.model)
    opt_state = ctx.parallel.optimizer_state(ctx.kind.model, opt)
    if rank != 0:
        return
    extra = {"recipe": ctx.plan.name, "step": pos.global_step, "stage": stage.name}
    ctx.kind.save(ctx.out, weights, extra, pos)
    state_dir = ctx.out / "trainer_state"
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
