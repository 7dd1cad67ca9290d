"""`soundflow calibrate`: per-tag decision thresholds (alert labels, assist intents) from a dev
split, into the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import click

from soundflow.cli.extras import TrainCommand
from soundflow.cli.params import label_words


@click.command(cls=TrainCommand)
@click.argument("bundle", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--data",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="A dev split (`soundflow data build` with its own seed): neither train nor eval.",
)
@click.option(
    "--false-per-hour",
    type=click.FloatRange(min=0.0),
    default=None,
    help="False responses per hour allowed per tag on the dev split "
    "[default: 0.5 per alert label, 1.5 per intent].",
)
@click.option(
    "--mode",
    "modes",
    type=click.Choice(["alert", "assist"]),
    multiple=True,
    default=("alert", "assist"),
    show_default=True,
    help="Modes to calibrate (repeat the flag for several).",
)
@click.option(
    "--verify",
    "verify",
    multiple=True,
    metavar="INTENT=WORD[,WORD]",
    callback=label_words,
    help="Assist mode: also answer INTENT below its threshold where Whisper reads one of the "
    "words in the window (repeat), e.g. timer=timer,minutes; both thresholds are chosen on "
    "--data, and the words left out where they add no hit there.",
)
@click.option("--max-streams", type=click.IntRange(min=1), default=None)
@click.option("--dry-run", is_flag=True, help="Print the thresholds, leave the bundle as it is.")
def calibrate(bundle, data, false_per_hour, modes, verify, max_streams, dry_run):
    """Choose one decision threshold per tag on a dev split (per alert label in alert mode,
    per intent in assist mode) and write them into BUNDLE's manifest
    (`decision.thresholds.MODE`, and `decision.verify.assist` with --verify);
    `listen --threshold` still overrides.

    \b
    Example:
      soundflow data build --recipe default --hours 1 --seed 77 --out /tmp/dev
      cp -r soundflow/assets/default_bundle /tmp/my-bundle   # never the shipped one
      soundflow calibrate /tmp/my-bundle --data /tmp/dev
    """
    from soundflow.manifest import BundleError
    from soundflow.runtime.bundle import default_bundle_dir

    if not dry_run and bundle.resolve() == default_bundle_dir().resolve():
        raise click.ClickException(
            f"{bundle} is the shipped default bundle: calibrate a copy "
            f"(cp -r {bundle} /tmp/my-bundle), or pass --dry-run to only print the thresholds"
        )
    from soundflow.train.calibrate import calibrate as run
    from soundflow.train.calibrate import write_thresholds

    if not (data / "streams.jsonl").is_file():
        raise click.ClickException(
            f"{data} has no streams.jsonl; build one with `soundflow data build`"
        )
    try:
        for mode in modes:
            report = run(
                bundle,
                data,
                false_per_hour=false_per_hour,
                max_streams=max_streams,
                mode=mode,
                verify=verify if mode == "assist" else None,
            )
            click.echo(json.dumps(report, indent=2))
            if not dry_run:
                write_thresholds(bundle, report)
                click.echo(f"{mode} thresholds written to {bundle / 'manifest.json'}")
    except BundleError as e:
        raise click.ClickException(str(e)) from None
