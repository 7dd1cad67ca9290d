"""`soundflow labels`: the alert labels a bundle can raise, by which decider, with their
thresholds; with --audioset, the AudioSet class names `listen --alert-class` accepts."""

from __future__ import annotations

import json
from pathlib import Path

import click

from soundflow.manifest import BundleError


@click.command()
@click.option(
    "--bundle",
    type=click.Path(path_type=Path),
    default=None,
    help="Bundle dir (default: the embedded one).",
)
@click.option("--audioset", is_flag=True, help="Also list the 521 AudioSet classes (YAMNet's).")
@click.option("--json", "as_json", is_flag=True, help="Print the lists as JSON.")
def labels(bundle, audioset, as_json) -> None:
    """List the alert labels of a bundle: the tagger's, the AudioSet head's (* alerts by
    default; the others with `listen --only LABEL`), and with --audioset the class names
    `listen --alert-class "NAME=P"` takes.

    \b
    Examples:
      soundflow labels
      soundflow labels --audioset | grep -i cat
      soundflow listen --input kitchen.wav --only smoke_alarm,doorbell
    """
    from soundflow.runtime.audioset import read_class_map
    from soundflow.runtime.bundle import load_spec

    try:
        spec = load_spec(bundle)
    except BundleError as e:
        raise click.ClickException(str(e)) from None
    out: dict = {}
    if spec.tagger is not None:
        out["tagger"] = {k: {"threshold": v} for k, v in spec.tagger.thresholds.items()}
    head = spec.audioset.head if spec.audioset is not None else None
    if head is not None:
        out["audioset_head"] = {
            k: {
                "threshold": head.thresholds[k],
                "default": k in head.defaults,
                "caption": head.captions[k],
            }
            for k in head.labels
        }
        out["audioset_head_decides"] = head.decides
    if audioset:
        if spec.audioset is None:
            raise click.ClickException(f"{spec.path} has no audioset section (YAMNet)")
        try:
            out["audioset_classes"] = list(read_class_map(spec.audioset.class_map))
        except BundleError as e:
            raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    if "tagger" in out:
        click.echo("tagger (over Whisper's encoder frames):")
        for k, v in out["tagger"].items():
            click.echo(f"  {k:16s} threshold {v['threshold']:.2f}")
    if head is not None:
        by = "decides alert mode" if head.decides else "opt-in: --alerts audioset"
        click.echo(f"audioset head (over YAMNet; {by}; * = alerts by default):")
        for k, v in out["audioset_head"].items():
            mark = "*" if v["default"] else " "
            click.echo(f" {mark}{k:16s} threshold {v['threshold']:.2f}  {v['caption']}")
    if not out or (not audioset and "tagger" not in out and head is None):
        click.echo("this bundle names no alert labels")
    for name in out.get("audioset_classes", ()):
        click.echo(name)
