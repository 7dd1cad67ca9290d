"""`soundflow data`: build, merge, inspect and set up SoundFlow training streams.

A thin layer over soundflow.train.data; every option maps to a library argument.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import click

from soundflow.cli.extras import train_extra


def _shard(value: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in value.split("/"))
    except ValueError as err:
        raise click.BadParameter(f"{value!r}: use I/N, e.g. 0/4") from err
    if not 0 <= i < n:
        raise click.BadParameter(f"{value!r}: need 0 <= I < N")
    return i, n


class _DataGroup(click.Group):
    """A missing train-extra module is one line with the install command, not a traceback."""

    def invoke(self, ctx: click.Context):
        with train_extra("data"):
            return super().invoke(ctx)


@click.group(cls=_DataGroup)
def data() -> None:
    """Build and inspect SoundFlow training streams (shards of FLAC + JSONL)."""


@data.command()
@click.option("--recipe", default="default", show_default=True, help="recipes/NAME.json or a path")
@click.option("--hours", type=float, required=True, help="Hours of stream audio to build.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Shard directory.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--split", type=click.Choice(["train", "eval"]), default="train", show_default=True)
@click.option("--shard", "shard", default="0/1", show_default=True, help="Build shard I of N.")
@click.option("--workers", type=int, default=1, show_default=True, help="Local processes.")
def build(
    recipe: str, hours: float, out: str, seed: int, split: str, shard: str, workers: int
) -> None:
    """Build streams into OUT; rerun the same command to resume after an interruption.

    \b
    Example:
      soundflow data build --recipe default --hours 0.2 --out /tmp/d --seed 0
      soundflow data build --hours 100 --out /data/s3 --shard 3/16 --workers 8
    """
    from soundflow.train.data import shards
    from soundflow.train.data.recipe import load_recipe

    try:
        rec = load_recipe(recipe)
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from err
    from soundflow.train.data import espeak

    if not espeak.available():
        raise click.ClickException(
            "libespeak-ng is missing: apt-get install espeak-ng libespeak-ng1"
        )
    lib = shards.library_for(split, rec)
    for note in lib.notes:
        click.echo(f"note: {note}", err=True)
    bar = {"b": None, "last": 0}
    start = time.time()

    def progress(done: int, total: int) -> None:
        if bar["b"] is None:
            bar["b"] = click.progressbar(length=total, label=f"{split} streams", show_pos=True)
            bar["b"].__enter__()
        bar["b"].update(done - bar["last"])
        bar["last"] = done

    try:
        desc = shards.build(out, rec, hours, seed, split, _shard(shard), workers, progress)
    except shards.ShardError as err:
        raise click.ClickException(str(err)) from err
    finally:
        if bar["b"] is not None:
            bar["b"].__exit__(None, None, None)
    click.echo(f"{len(desc['streams'])} streams in {out} ({time.time() - start:.1f} s)")


@data.command()
@click.argument(
    "shard_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False)
)
@click.option("--out", type=click.Path(file_okay=False), required=True)
def merge(shard_dirs: tuple[str, ...], out: str) -> None:
    """Check shards built elsewhere and index them into OUT.

    \b
    Example:
      soundflow data merge /data/s0 /data/s1 /data/s2 /data/s3 --out /data/all
    """
    from soundflow.train.data import shards

    try:
        desc = shards.merge(list(shard_dirs), out)
    except shards.ShardError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"merged {len(shard_dirs)} shards: {len(desc['streams'])} streams in {out}")


@data.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--png", type=click.Path(dir_okay=False), default=None, help="Default: DIR/timeline.png"
)
@click.option("--stream", "stream_id", default=None, help="Stream id to draw (default: the first).")
@click.option("--seconds", type=float, default=120.0, show_default=True, help="Timeline length.")
@click.option("--json", "as_json", is_flag=True, help="Print statistics as JSON.")
def inspect(
    directory: str, png: str | None, stream_id: str | None, seconds: float, as_json: bool
) -> None:
    """Print statistics of a shard directory and draw one stream's timeline.

    \b
    Example:
      soundflow data inspect /tmp/d --stream train-000001
    """
    from soundflow.train.data import report, shards

    try:
        st = report.statistics(directory)
        png = png or os.path.join(directory, "timeline.png")
        sid = report.render_timeline(directory, png, stream_id, seconds)
    except (shards.ShardError, KeyError) as err:
        raise click.ClickException(str(err)) from err
    if as_json:
        click.echo(json.dumps({k: v for k, v in st.items()}, indent=1, default=dict))
    else:
        click.echo(report.format_statistics(st))
    click.echo(f"timeline of {sid}: {png}")


@data.command()
@click.option("--split", type=click.Choice(["train", "eval"]), default="train", show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="Write the index as JSONL."
)
def library(split: str, out: str | None) -> None:
    """List the clip library a split draws on (procedural, packages, TTS voices)."""
    from collections import Counter

    from soundflow.train.data import espeak, festival
    from soundflow.train.data.library import Library

    lib = Library.default(split)
    for note in lib.notes:
        click.echo(f"note: {note}")
    click.echo(
        f"{len(lib.clips)} clips: "
        + ", ".join(
            f"{k} {v}" for k, v in Counter(c.source.split(":")[0] for c in lib.clips).items()
        )
    )
    click.echo(
        "by category: "
        + ", ".join(f"{k} {v}" for k, v in Counter(c.category for c in lib.clips).most_common())
    )
    voices, variants = espeak.voice_pool(split)
    click.echo(f"espeak voices {', '.join(voices)}; variants {', '.join(sorted(variants))}")
    click.echo(f"festival voices {', '.join(festival.voice_pool(split)) or '(none installed)'}")
    if out:
        lib.to_jsonl(out)
        click.echo(f"index written to {out}")


@data.command()
@click.option("--dry-run", is_flag=True, help="Print the apt-get command only.")
def setup(dry_run: bool) -> None:
    """Install the Debian sound packages and festival voices training may use (train/data/README.md; needs root)."""
    script = Path(__file__).resolve().parent.parent / "train" / "data" / "setup_sources.sh"
    if not script.is_file():
        from soundflow.train import data as data_pkg

        script = Path(data_pkg.__file__).parent / "setup_sources.sh"
    cmd = ["bash", str(script)] + (["--dry-run"] if dry_run else [])
    if subprocess.run(cmd, check=False).returncode != 0:
        raise click.ClickException(f"{script} failed; run it as root")
