"""`soundflow eval`: score a bundle on an eval split through the runtime."""

from __future__ import annotations

import json
from pathlib import Path

import click

from soundflow.cli.extras import TrainCommand


@click.command("eval", cls=TrainCommand)
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="Eval split directory from `soundflow data build --split eval`.",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the report here as JSON.",
)
@click.option("--max-streams", type=int, default=None, help="Score only the first N streams.")
@click.option("--int8", is_flag=True, help="Score the bundle's int8 graphs.")
@click.option(
    "--task",
    "tasks",
    multiple=True,
    help="Score only this task (repeatable; default: every task the bundle has).",
)
def eval_(bundle, data, json_out, max_streams, int8, tasks):
    """Score a bundle (default: the embedded one) on an eval split.

    Runs every stream through the real runtime in fast mode, once per task, and reports
    transcribe WER, alert trigger accuracy / precision / recall / F1 / delay per category,
    false alerts per hour and assist exact match.

    \b
    Example:
      soundflow data build --recipe default --hours 0.5 --split eval --out /tmp/eval
      soundflow eval --data /tmp/eval --json /tmp/report.json
      soundflow eval --data /tmp/eval --task alert   # alert mode only
    """
    from soundflow.manifest import BundleError
    from soundflow.train.evaluate import evaluate_bundle, format_table

    if not (data / "streams.jsonl").is_file():
        raise click.ClickException(
            f"{data} has no streams.jsonl; build one with "
            "`soundflow data build --split eval --out DIR`"
        )
    try:
        report = evaluate_bundle(
            bundle,
            data,
            max_streams=max_streams,
            variant="int8" if int8 else "fp32",
            tasks=list(tasks) or None,
        )
    except BundleError as e:
        raise click.ClickException(str(e)) from None
    click.echo(format_table(report))
    if json_out:
        json_out.write_text(json.dumps(report, indent=2) + "\n")
        click.echo(f"report written to {json_out}")
