"""`soundflow train`: train a recipe into a checkpoint directory."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option(
    "--recipe", default="smoke", show_default=True, help="Recipe name (see train/recipes.py)."
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
    help="Shard directory from `soundflow data build` (recipes that need it).",
)
@click.option(
    "--eval-data",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Eval split shard directory.",
)
@click.option("--steps", type=int, default=None, help="Override the recipe's step count.")
@click.option(
    "--resume", is_flag=True, help="Continue from the checkpoint and trainer state in --out."
)
def train(
    recipe: str,
    out: Path,
    data: Path | None,
    eval_data: Path | None,
    steps: int | None,
    resume: bool,
) -> None:
    """Train a model from a recipe.

    \b
    Example (a tiny model on generated tones, about a minute on 2 cores):
      soundflow train --recipe smoke --out /tmp/ck
    Data-parallel on 2 processes:
      torchrun --nproc_per_node 2 -m soundflow.cli train --recipe smoke --out /tmp/ck
    """
    try:
        from soundflow.train.recipes import get_recipe
        from soundflow.train.run import run
    except ImportError as e:
        raise click.ClickException(
            f"training needs the train extra ({e.name} is missing): pip install 'soundflow[train]'"
        ) from None
    try:
        r = get_recipe(recipe, **({"steps": steps} if steps else {}))
        metrics = run(r, out, data=data, eval_data=eval_data, resume=resume, log=click.echo)
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e).strip("'\"")) from None
    click.echo(f"checkpoint written to {out} ({metrics})")
