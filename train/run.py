"""Entry point behind `soundflow train`: recipe + data -> tokenizer, model, trained checkpoint."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from soundflow import protocol
from soundflow.train.checkpoint import load_checkpoint
from soundflow.train.dataset import ShardSource, TextSource, ToySource
from soundflow.train.kinds.decoder.kind import DecoderKind, plan
from soundflow.train.kinds.decoder.model import SoundFlowModel, parameter_counts
from soundflow.train.kinds.decoder.pretrained import load_pretrained
from soundflow.train.kinds.decoder.recipes import TrainRecipe
from soundflow.train.tokenizer import load_tokenizer, train_tokenizer
from soundflow.train.trainer import close_distributed, init_distributed, train, world


def sources(recipe: TrainRecipe, data: Path | None, eval_data: Path | None):
    if recipe.data == "toy":
        return (
            ToySource(recipe.toy_streams, seed=recipe.train.seed),
            ToySource(32, seed=recipe.train.seed + 1),
        )
    if data is None:
        raise ValueError(
            f"recipe {recipe.name!r} trains on built streams: pass --data DIR "
            "(make one with `soundflow data build`)"
        )
    return ShardSource([data]), (ShardSource([eval_data]) if eval_data else None)


def tokenizer_texts(recipe: TrainRecipe, source) -> list[str]:
    if isinstance(source, TextSource):
        return source.texts()
    texts = []
    for i in range(min(len(source), 256)):
        _, rec = source.get(i)
        texts += [t["text"] for ts in rec["targets"].values() for t in ts]
    return texts


def run(
    recipe: TrainRecipe,
    out: Path,
    data: Path | None = None,
    eval_data: Path | None = None,
    resume: bool = False,
    until: int | None = None,
    strategy: str = "ddp",
    init_from: Path | None = None,
    log=print,
) -> dict:
    """Train `recipe` into `out`. `init_from`: a local Qwen2-Audio / Qwen2.5-Omni checkpoint
    to start from (its weights loaded, soundflow's tokens added, embeddings resized)."""
    from soundflow.train.kinds.decoder.hf_audio import detect

    init_distributed()
    rank, size = world()
    torch.manual_seed(recipe.train.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_src, eval_src = sources(recipe, data, eval_data)
    if resume and (out / "config.json").is_file() and detect(out):
        model, tok = load_pretrained(out, chunk_ms=recipe.model.chunk_ms)
    elif resume and (out / "model.safetensors").is_file():
        model, tok, _ = load_checkpoint(out)
    elif init_from is not None:
        if not detect(init_from):
            raise ValueError(
                f"--init-from {init_from}: not a Qwen2-Audio or Qwen2.5-Omni "
                "checkpoint directory (config.json + safetensors)"
            )
        if strategy == "fsdp" and size > 1:
            raise ValueError("--strategy fsdp is not supported with --init-from yet; use ddp")
        texts = tokenizer_texts(recipe, train_src)
        tags = tuple(sorted({m.group(0) for t in texts for m in protocol.TAG_PATTERN.finditer(t)}))
        model, tok = load_pretrained(init_from, chunk_ms=recipe.model.chunk_ms, tags=tags)
    else:
        if resume:
            log(f"--resume: no checkpoint in {out} yet, starting fresh")
        tok_path = out / "tokenizer.json"
        if rank == 0:
            tok = train_tokenizer(tokenizer_texts(recipe, train_src), recipe.train.vocab_size)
            tok.save(str(tok_path))
        if size > 1:
            torch.distributed.barrier()  # the other ranks read rank 0's tokenizer
        tok = load_tokenizer(tok_path)
        decoder = {**recipe.model.decoder, "vocab_size": tok.get_vocab_size()}
        model = SoundFlowModel(dataclasses.replace(recipe.model, decoder=decoder))
    if rank == 0:
        (out / "recipe.json").write_text(json.dumps(dataclasses.asdict(recipe), indent=2) + "\n")
    try:
        kind = DecoderKind(recipe, model, tok, train_src, eval_src)
        if rank == 0:
            mode = strategy if size > 1 else "single"
            log(
                f"parameters: {parameter_counts(model)}; {size} rank(s) ({mode}), "
                f"{kind.micro} samples/micro-batch"
            )
        metrics = train(
            plan(recipe),
            kind,
            out,
            resume=resume,
            until=until,
            strategy=strategy,
            log=log if rank == 0 else (lambda *_: None),
        )
    except BaseException:
        close_distributed(barrier=False)  # a failed rank must not wait for the others
        raise
    close_distributed()
    return metrics
