"""Option values several commands parse alike: LABEL=WORD[,WORD] (`tagger --verify`,
`calibrate --verify`)."""

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
