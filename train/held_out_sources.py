"""The sources training must never use (`HELD_OUT`), and which of them a clip belongs to:
train/data/library.py refuses their clips, train/heldout.py builds eval sets from them.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

FLITE_VOICES = ("rms", "awb")  # not slt/kal: the same speakers as festival voices in training


@dataclass(frozen=True)
class HeldOutSource:
    """A source training must never use: what it is, and how to recognise its clips."""

    description: str
    packages: tuple[str, ...] = ()  # Debian packages whose files are held out
    path_patterns: tuple[str, ...] = ()  # fnmatch patterns on a clip's absolute path
    source_prefixes: tuple[str, ...] = ()  # Clip.source values (prefixes) that are held out
    voices: tuple[str, ...] = ()


HELD_OUT: dict[str, HeldOutSource] = {
    "tuxpaint": HeldOutSource(
        description="Tux Paint stamp descriptions (real human speech, English)",
        packages=("tuxpaint-stamps-default", "tuxpaint-data"),
        path_patterns=("*/tuxpaint/*", "*/tuxpaint-stamps*/*", "*/tuxpaint-data/*"),
        source_prefixes=("tuxpaint",),
    ),
    "flite": HeldOutSource(
        description="flite voices rms and awb (synthetic speakers training never hears)",
        packages=("flite", "flite1-dev"),
        path_patterns=("*/flite/*",),
        source_prefixes=("flite", "tts:flite"),
        voices=FLITE_VOICES,
    ),
    # Real recordings of packages design.md does not allow, kept for evaluation only: the
    # noise beds of `bench noise` and the benign audio of `bench alerts`. Not in
    # setup-dev.sh (widelands-data is 400 MB): scripts/setup-heldout.sh installs them.
    "widelands": HeldOutSource(
        description="Widelands' recorded sounds and music (taverns, mills, workshops, animals)",
        packages=("widelands-data",),
        path_patterns=("*/widelands/*",),
        source_prefixes=("widelands",),
    ),
    "asterisk": HeldOutSource(
        description="Asterisk's English prompts (real human speech, one speaker, transcribed)",
        packages=("asterisk-core-sounds-en-wav", "asterisk-core-sounds-en"),
        path_patterns=("*/asterisk/sounds/*",),
        source_prefixes=("asterisk",),
    ),
    "minetest": HeldOutSource(
        description="Minetest's recorded environment sounds (running water, fire, lava)",
        packages=("minetest-data",),
        path_patterns=("*/minetest/*",),
        source_prefixes=("minetest",),
    ),
}


def held_out_source(path: str | Path | None, source: str = "") -> str | None:
    """The name of the held-out source a clip (its path and Clip.source) belongs to, or None."""
    for name, h in HELD_OUT.items():
        if source and any(source == p or source.startswith(p + ":") for p in h.source_prefixes):
            return name
        if source and any(source == f"deb:{pkg}" for pkg in h.packages):
            return name
        if path is not None:
            p = str(Path(str(path).split("#", 1)[0]).expanduser().absolute())
            if any(fnmatch.fnmatch(p, pat) for pat in h.path_patterns):
                return name
    return None
