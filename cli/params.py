"""Options several commands share: LABEL=WORD[,WORD] (`tagger --verify`, `calibrate
--verify`), the caption deadline and the run-time flags of `listen`, `listen --server`, `serve`."""

from __future__ import annotations

import functools
from typing import Any

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


CAPTION_BUDGET_HELP = (
    "Transcribe mode of a Whisper-based bundle: ms after a chunk's audio arrived by which a "
    "window reading's decoder calls must end; a longer reading goes on at the next chunk "
    "(default: the manifest's; 0: no time bound)."
)


CAPTION_HOP_HELP = (
    "Transcribe mode of a Whisper-based bundle: chunks from one window reading to the next "
    "(default: the manifest's, 1). 2 reads every 0.8 s: words come up to 0.4 s later and "
    "some more are misread, and `serve` encodes only the chunks read, about half the CPU."
)


def caption_budget(extra: str = ""):
    """`--caption-budget-ms`: RuntimeOptions' caption_budget_ms (None: the manifest's)."""
    return click.option(
        "--caption-budget-ms",
        type=click.FloatRange(min=0),
        default=None,
        help=CAPTION_BUDGET_HELP + extra,
    )


def _labels(ctx, param, value) -> tuple[str, ...] | None:
    """`--only smoke_alarm,doorbell` -> ("smoke_alarm", "doorbell")."""
    return tuple(x.strip() for x in value.split(",") if x.strip()) if value else None


# Each run-time flag under its flat RuntimeOptions name (the click parameter's name, so the
# values gathered are RuntimeOptions.from_flags' arguments): declarations, then click kwargs.
RUNTIME_FLAGS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "mode": (
        ("--mode", "-m"),
        dict(
            metavar="MODE",
            help="Task prompt: transcribe (live captions), alert (sounds worth an alert) or "
            "assist (spoken instructions), as the bundle lists them. Default: the bundle's "
            "first, which for the embedded default is transcribe.",
        ),
    ),
    "realtime": (
        ("--realtime/--fast",),
        dict(
            default=None,
            help="Live (files paced like a microphone; a stdin pipe timed by its arrival, its "
            "end an error) or as fast as possible. Default: live, except stdin redirected from "
            "a file.",
        ),
    ),
    "threshold": (
        ("--threshold",),
        dict(
            type=float,
            help="p(<respond>) needed to respond, for every tag (default: the manifest's "
            "calibrated ones, and its intents confirmed by words).",
        ),
    ),
    "refractory_s": (
        ("--refractory",),
        dict(type=float, help="Seconds before the same alert/intent tag may fire again."),
    ),
    "max_response_tokens": (("--max-tokens",), dict(type=int, help="Longest response in tokens.")),
    "report_suppressed": (
        ("--show-suppressed",),
        dict(
            is_flag=True,
            default=None,
            help="Also print each response the decision chose and then withheld, with its tag "
            "and reason (refractory, below_threshold, not_an_answer, answered).",
        ),
    ),
    "cache_budget": (
        ("--cache-budget",),
        dict(type=int, help="Decoder KV slots (default: the bundle's capacity)."),
    ),
    "cache_policy": (
        ("--cache-policy",),
        dict(
            type=click.Choice(["evict", "reprefill"]),
            default="evict",
            show_default=True,
            help="At the budget: keep sinks + a sliding window, or re-prefill them.",
        ),
    ),
    "captions": (
        ("--captions",),
        dict(
            type=click.Choice(["agreement", "protocol"]),
            default=None,
            help="Transcribe mode of a Whisper-based bundle: re-decode the window and emit the "
            "words two windows agree on, or the decoder's own responses (default: the "
            "manifest's).",
        ),
    ),
    "alerts": (
        ("--alerts",),
        dict(
            type=click.Choice(["tagger", "protocol", "audioset"]),
            default=None,
            help="Alert mode of a Whisper-based bundle: the bundle's alert tagger names the "
            "sound, the decoder's own <respond> step and tag, or the head over the bundle's "
            "AudioSet branch (YAMNet) (default: the manifest's; the tagger where the bundle has "
            "one).",
        ),
    ),
    "alert_only": (
        ("--only",),
        dict(
            default=None,
            metavar="LABELS",
            callback=_labels,
            help="Alert mode: raise only these labels, comma-separated (`soundflow labels` "
            "lists them), e.g. --only smoke_alarm,doorbell.",
        ),
    ),
    "alert_classes": (
        ("--alert-class",),
        dict(
            multiple=True,
            metavar='"NAME[=P]"',
            callback=lambda ctx, param, value: tuple(value),
            help="Alert mode: also alert when YAMNet's score for this AudioSet class reaches P "
            '(default 0.5), no training needed; repeatable, e.g. --alert-class "Cat=0.4" '
            "(`soundflow labels --audioset` lists the classes). Decides by the AudioSet branch.",
        ),
    ),
    "speech_gate": (
        ("--speech-gate/--no-speech-gate",),
        dict(
            default=True,
            show_default=True,
            help="Transcribe mode of a Whisper-based bundle with a speech gate: read a window "
            "only where the gate heard speech (--no-speech-gate reads every window).",
        ),
    ),
    "caption_calls": (
        ("--caption-calls",),
        dict(
            type=click.IntRange(min=0),
            default=None,
            help="Transcribe mode of a Whisper-based bundle: decoder calls a window reading may "
            "make per chunk; a longer reading goes on at the next chunk (default: the "
            "manifest's; 0: no bound).",
        ),
    ),
    "caption_budget_ms": (
        ("--caption-budget-ms",),
        dict(type=click.FloatRange(min=0), default=None, help=CAPTION_BUDGET_HELP),
    ),
    "caption_hop": (
        ("--caption-hop",),
        dict(type=click.IntRange(1, 4), default=None, help=CAPTION_HOP_HELP),
    ),
    "threads": (
        ("--threads",),
        dict(
            type=int,
            help="Intra-op threads per ONNX session (default: cores split between encoder and "
            "decoder).",
        ),
    ),
    "provider": (
        ("--provider",),
        dict(
            type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]),
            default="auto",
            show_default=True,
        ),
    ),
    "asynchronous": (
        ("--sync",),
        dict(
            is_flag=True,
            callback=lambda ctx, param, value: not value,
            help="Encode and decode in one thread (the benchmark baseline).",
        ),
    ),
    "stats_every_s": (
        ("--stats",),
        dict(
            type=float,
            default=10.0,
            show_default=True,
            help="Seconds of stream between stats events (0: none).",
        ),
    ),
    "reconnect": (
        ("--reconnect/--no-reconnect",),
        dict(
            default=True,
            show_default=True,
            help="Reopen a microphone that dies or goes silent, with backoff (0.5 s doubling to "
            "8 s).",
        ),
    ),
    "reconnect_tries": (
        ("--reconnect-tries",),
        dict(
            type=int,
            default=10,
            show_default=True,
            help="Failed reopen attempts in a row before giving up with a non-zero exit.",
        ),
    ),
}
# `listen` and `listen --server` take every one, in these groups (other flags between them)
LISTEN_FLAGS = (
    ("mode", "realtime"),
    (
        *("threshold", "refractory_s", "max_response_tokens", "report_suppressed"),
        *("cache_budget", "cache_policy"),
        *("captions", "alerts", "alert_only", "alert_classes"),
        *("speech_gate", "caption_calls", "caption_budget_ms", "caption_hop"),
        *("threads", "provider"),
    ),
    ("asynchronous", "stats_every_s"),
    ("reconnect", "reconnect_tries"),
)


def runtime_flags(*names: str, helps: dict[str, str] | None = None):
    """A decorator adding the run-time flags `names` (flat RuntimeOptions names; `helps`
    replaces some texts) to a click command, which gets their values as one dict, `flags`."""
    helps = helps or {}

    def decorate(command):
        @functools.wraps(command)
        def run(*args, **kwargs):
            # several groups on one command (to keep its help's order) make one dict
            flags = {**kwargs.pop("flags", {}), **{n: kwargs.pop(n) for n in names}}
            return command(*args, flags=flags, **kwargs)

        for name in reversed(names):
            decls, kw = RUNTIME_FLAGS[name]
            kw = {**kw, "help": helps.get(name, kw.get("help"))}
            run = click.option(*decls, name, **kw)(run)
        return run

    return decorate


def runtime_options(flags: dict[str, Any], **changes: Any):
    """`flags` (and `changes` over them) as RuntimeOptions; a value out of range is a usage
    error saying which flag and what to use."""
    from soundflow.runtime.options import RuntimeOptions

    try:
        return RuntimeOptions.from_flags(**{**flags, **changes})
    except ValueError as e:
        raise click.UsageError(str(e)) from None
