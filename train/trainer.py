"""The training loop: single process or data-parallel under torchrun (DDP).

Rank 0 alone logs and writes checkpoints; `--resume` continues from trainer_state/.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from soundflow.train.checkpoint import save_checkpoint
from soundflow.train.dataset import Segment, StreamSource, draw
from soundflow.train.model import SoundFlowModel, combine_losses, parameter_counts
from soundflow.train.recipes import Recipe
from soundflow.train.sequence import IGNORE, layout
from soundflow.train.tokenizer import encode_response, prompt_ids, special_ids
from torch import distributed as dist

from soundflow import protocol


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


class Batcher:
    """Turns segments into model inputs with one tokenizer."""

    def __init__(self, tokenizer, cfg):
        self.tok, self.cfg = tokenizer, cfg
        ids = special_ids(tokenizer)
        self.silence, self.respond, self.eos = (
            ids[protocol.SILENCE],
            ids[protocol.RESPOND],
            ids[protocol.EOS],
        )

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
        ctc = [model.ctc_ids(s.transcript) for s in segments]
        return pcm, layouts, ctc


def label_counts(batches) -> dict[str, float]:
    """Labels of each loss term over micro-batches of (pcm, layouts, ctc targets)."""
    lm = sum(sum(x != IGNORE for x in lay.lm_labels) for _, lays, _ in batches for lay in lays)
    stream = sum(
        sum(x != IGNORE for x in lay.stream_labels) for _, lays, _ in batches for lay in lays
    )
    return {
        "lm_n": float(lm),
        "stream_n": float(stream),
        "ctc_n": float(sum(len(c) for _, _, c in batches)),
    }


def lr_at(step: int, recipe: Recipe) -> float:
    tc = recipe.train
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    progress = (step - tc.warmup) / max(1, tc.steps - tc.warmup)
    return tc.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(
    recipe: Recipe,
    model: SoundFlowModel,
    tokenizer,
    source: StreamSource,
    eval_source: StreamSource | None,
    out: Path,
    resume: bool = False,
    until: int | None = None,
    log=print,
) -> dict:
    """Train `model` in place; returns the last logged metrics.

    `until` stops early at that step (checkpointed) without changing the LR schedule, so a
    long recipe can run in pieces and continue with `resume`, on any number of ranks.
    """
    rank, size = world()
    tc, cfg = recipe.train, model.cfg
    if tc.batch_size % (size * tc.grad_accum):
        raise ValueError(
            f"batch_size {tc.batch_size} is not divisible by "
            f"{size} ranks x {tc.grad_accum} accumulation steps"
        )
    micro = tc.batch_size // (size * tc.grad_accum)
    device = torch.device(
        f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    )
    model.to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if size > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    batcher = Batcher(tokenizer, cfg)
    state_dir = out / "trainer_state"
    start = 0
    if resume and (state_dir / "state.json").is_file():
        start = json.loads((state_dir / "state.json").read_text())["step"]
        opt.load_state_dict(torch.load(state_dir / "optimizer.pt", weights_only=True))
        log(f"resumed at step {start} from {state_dir}")
    if rank == 0:
        log(f"parameters: {parameter_counts(model)}; {size} rank(s), {micro} samples/micro-batch")
    metrics: dict = {}
    history: list[dict] = []
    t0, seen = time.time(), 0
    stop = min(tc.steps, until or tc.steps)
    for step in range(start, stop):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, recipe)
        model.train()
        opt.zero_grad(set_to_none=True)
        batches = []
        for a in range(tc.grad_accum):
            first = step * tc.batch_size + (rank * tc.grad_accum + a) * micro
            segs = [
                draw(
                    source,
                    tc.seed,
                    first + i,
                    tc.tasks,
                    tc.chunks_per_sample,
                    cfg.chunk_ms,
                    tc.focus_prob,
                )
                for i in range(micro)
            ]
            batches.append(batcher(segs, model))
        totals = label_counts(batches)
        if size > 1:  # normalise by the whole step's counts: 2 ranks == 1 process, exactly
            vals = torch.tensor([totals[k] for k in sorted(totals)], dtype=torch.float64)
            dist.all_reduce(vals)
            totals = dict(zip(sorted(totals), vals.tolist(), strict=True))
        sums: dict[str, float] = {}
        for pcm, lays, ctc in batches:
            parts = ddp(pcm.to(device), lays, ctc)
            terms = combine_losses(parts, totals, tc.loss)
            (terms["loss"] * size).backward()  # DDP averages gradients over ranks
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen += tc.batch_size
        if size > 1:  # each rank holds its share of the step's means
            vals = torch.tensor([sums[k] for k in sorted(sums)], dtype=torch.float64)
            dist.all_reduce(vals)
            sums = dict(zip(sorted(sums), vals.tolist(), strict=True))
        history.append({"step": step + 1, **sums})
        if rank == 0 and ((step + 1) % tc.log_every == 0 or step + 1 == stop):
            rate = seen / (time.time() - t0)
            metrics = {
                "step": step + 1,
                **{k: round(v, 4) for k, v in sums.items()},
                "lr": round(lr_at(step, recipe), 6),
                "samples_per_s": round(rate, 2),
            }
            log(" ".join(f"{k}={v}" for k, v in metrics.items()))
        last = step + 1 == stop
        if rank == 0 and eval_source is not None and ((step + 1) % tc.eval_every == 0 or last):
            ev = evaluate(model, batcher, eval_source, recipe, device)
            log("eval " + " ".join(f"{k}={v}" for k, v in ev.items()))
            metrics.update({f"eval_{k}": v for k, v in ev.items()})
        if rank == 0 and ((step + 1) % tc.ckpt_every == 0 or last):
            save_checkpoint(model, tokenizer, out, extra={"recipe": recipe.name, "step": step + 1})
            state_dir.mkdir(exist_ok=True)
            torch.save(opt.state_dict(), state_dir / "optimizer.pt.tmp")
            os.replace(state_dir / "optimizer.pt.tmp", state_dir / "optimizer.pt")
            (state_dir / "state.json").write_text(json.dumps({"step": step + 1}))
    if rank == 0:
        with open(out / "train_log.jsonl", "a") as f:
            for row in history:
                f.write(json.dumps(row) + "\n")
    return metrics


@torch.no_grad()
def evaluate(
    model: SoundFlowModel, batcher: Batcher, source: StreamSource, recipe: Recipe, device
) -> dict:
    """Losses and control-token accuracy on fixed eval segments (seeded apart from training)."""
    tc = recipe.train
    model.eval()
    segs = [
        draw(
            source,
            tc.seed + 7919,
            i,
            tc.tasks,
            tc.chunks_per_sample,
            model.cfg.chunk_ms,
            tc.focus_prob,
        )
        for i in range(tc.eval_samples)
    ]
    pcm, lays, ctc = batcher(segs, model)
    pcm = pcm.to(device)
    parts = model(pcm, lays, ctc)
    out = combine_losses(parts, label_counts([(pcm, lays, ctc)]), tc.loss)
    from soundflow.train.sequence import collate

    embeds, _ = model.audio_embeds(pcm)
    inputs, mask, stream, _ = collate(lays, embeds, model.decoder.get_input_embeddings())
    logits = model.decoder(inputs_embeds=inputs, attention_mask=mask).logits
    pick = stream != IGNORE
    pair = logits[..., [batcher.silence, batcher.respond]].argmax(-1)
    pred = torch.where(pair == 1, batcher.respond, batcher.silence)
    acc = (pred[pick] == stream[pick]).float().mean().item()
    return {"loss": round(out["loss"].item(), 4), "control_accuracy": round(acc, 4)}
