"""`soundflow tagger`: train an alert tagger on a whisper-cross bundle's encoder frames,
calibrate it on a dev split, and write the bundle with it."""

from __future__ import annotations

from pathlib import Path

import click

from soundflow.cli.extras import TrainCommand
from soundflow.cli.params import label_words

DIR = click.Path(path_type=Path, exists=True, file_okay=False)


@click.command(cls=TrainCommand)
@click.argument("bundle", type=DIR)
@click.option("--data", type=DIR, multiple=True, required=True, help="Built train splits (repeat).")
@click.option("--dev", type=DIR, required=True, help="A dev split: neither train nor eval.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The new bundle.")
@click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=Path("runs/tagger-features"),
    show_default=True,
    help="Encoder features per stream (reused by a rerun).",
)
@click.option("--steps", type=click.IntRange(min=1), default=6000, show_default=True)
@click.option(
    "--every",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Train on every Nth chunk, plus every chunk near a sound event.",
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Chunks in a row over threshold before an alert.",
)
@click.option(
    "--false-cost",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="Calibration: a false alert costs this many right ones.",
)
@click.option(
    "--negatives",
    multiple=True,
    metavar="PKG",
    help="An installed Debian package whose sounds are all benign (repeat): every clip a "
    "negative, except names that say alarm, siren, explosion and the like.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--speech-gate/--no-speech-gate",
    default=True,
    show_default=True,
    help="Also train a speech gate: transcribe mode then reads a window only where it heard "
    "speech (its threshold calibrated on --dev, see --speech-recall).",
)
@click.option(
    "--speech-recall",
    type=click.FloatRange(0.5, 1.0),
    default=0.999,
    show_default=True,
    help="The speech gate's threshold is the highest that still reads this share of the dev "
    "split's windows that hold speech.",
)
@click.option(
    "--verify",
    "verify",
    multiple=True,
    metavar="LABEL=WORD[,WORD]",
    callback=label_words,
    help="Also raise LABEL where the tagger is less sure but Whisper reads one of the words "
    "in the window (repeat), e.g. shout_for_help=help; the threshold for it is calibrated on "
    "--dev, and left out where it does not help there.",
)
def tagger(data, dev, speech_gate, verify, **opts):
    """Add an alert tagger to BUNDLE (a Whisper-based one): a small head over its encoder's
    newest frames that names alert-worthy sounds, and a speech gate. Alert mode then decides
    by it (`listen --alerts protocol` keeps the decoder's own decision); transcribe mode
    skips the window readings of audio without speech (`listen --no-speech-gate` reads all).

    \b
    Example:
      soundflow tagger soundflow/assets/default_bundle --data runs/data/round2/default-s9 \\
          --dev runs/data/dev3 --out runs/tagged
    """
    from soundflow.export.tagger_export import build
    from soundflow.manifest import BundleError

    for d in (*data, dev):
        if not (d / "streams.jsonl").is_file():
            raise click.ClickException(
                f"{d} has no streams.jsonl; build it with `soundflow data build`"
            )
    try:
        build(data=list(data), dev=dev, log=click.echo, speech=speech_gate, verify=verify, **opts)
    except (BundleError, ValueError) as e:
        raise click.ClickException(str(e)) from None
