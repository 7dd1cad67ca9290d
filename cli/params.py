"""Options several commands share: LABEL=WORD[,WORD] (`tagger --verify`, `calibrate
--verify`) and the caption deadline (`listen`, `serve`, `bench latency`, `bench serve`)."""

from __future__ import annotations

import click


def label_words(ctx, param, values) -> dict[str, tuple[str, ...]]:
    """A click callback: ("shout_for_help=help", ...) -> {"shout_for_help": ("help",)}."""
    words = {}
    for v in values:
        label, _, said = v.partition("=")
        ws = tuple(w.strip().lower() for w in said.split(",") if w.strip())
        if not label or not ws:
            raise click.BadParameter(f"{v!r}: use LABEL=WORD[,WORD]", param=param)
        words[label.strip()] = ws
    return words


def caption_budget(extra: str = ""):
    """`--caption-budget-ms`: RuntimeOptions.caption_budget_ms (None: the manifest's)."""
    return click.option(
        "--caption-budget-ms",
        type=click.FloatRange(min=0),
        default=None,
        help="Transcribe mode of a Whisper-based bundle: ms after a chunk's audio arrived by "
        "which a window reading's decoder calls must end; a longer reading goes on at the next "
        "chunk (default: the manifest's; 0: no time bound)." + extra,
    )
