"""Run-time options: how to run a bundle, apart from what the bundle is, as one small frozen
object per concern; `RuntimeOptions` composes them and builds them from flat flag names.

The model's dimensions and defaults live in the bundle's manifest; every `None` here means
"the manifest's default". Frozen, so one options object can be shared between threads.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace

PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")
CAPTIONS = ("agreement", "protocol")  # transcribe captions of a whisper-cross bundle
# what decides alert mode in a whisper-cross bundle ("audioset": runtime/audioset_alerts.py)
ALERTS = ("tagger", "protocol", "audioset")
ASSIST = ("grammar", "decoder")  # what answers assist mode in a whisper-cross bundle


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _at_least(name: str, value: object, low: float, what: str) -> None:
    if value is not None and not (_finite(value) and value >= low):
        raise ValueError(f"{name} {value} is out of range: use {what}")


def _positive(name: str, value: object) -> None:
    if not (_finite(value) and value > 0):
        raise ValueError(f"{name} {value} must be a positive number")


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise ValueError(f"{name} {value!r}: use one of {allowed}")


@dataclass(frozen=True)
class DecisionOptions:
    """When the decoder responds (runtime/kinds/decoder.py, runtime/kinds/whisper.py)."""

    mode: str | None = None  # task prompt (manifest `tasks`); None = the bundle's first
    threshold: float | None = None  # respond iff p(<respond>) >= threshold
    refractory_s: float | None = None  # no second response with the same tag within this
    max_response_tokens: int | None = None  # stop a response here if <eos> has not come
    # emit a Suppressed event (tag, reason) for each response the decision chose and then
    # withheld; off, only the summary counts them (`suppressed_by`)
    report_suppressed: bool = False

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold {self.threshold} must lie in [0, 1]")
        _at_least("refractory_s", self.refractory_s, 0, "seconds, 0 or more")
        _at_least("max_response_tokens", self.max_response_tokens, 1, "tokens, 1 or more")


@dataclass(frozen=True)
class CaptionOptions:
    """Transcribe captions of a whisper-cross bundle (runtime/kinds/whisper.py, runtime/captions.py)."""

    # "agreement" (re-decoded windows, runtime/captions.py) | "protocol" (the decoder's own
    # responses); None = the bundle's
    decider: str | None = None
    # by agreement: skip the readings of windows the bundle's speech gate (its tagger's speech
    # output) heard no speech in; False reads every window
    speech_gate: bool = True
    # by agreement: decoder calls a window reading may make per chunk (a longer one goes on at
    # the next chunk); None = the manifest's, 0 = no bound
    calls: int | None = None
    # and decoder time (ms) it may spend per chunk; None = the manifest's, 0 = no time bound
    budget_ms: float | None = None
    # by agreement: chunks from one window reading to the next (None = the manifest's
    # every_chunks, 1 in the default). 2 halves a stream's CPU where the driver skips the
    # encoder between readings (`serve`) at some words' cost (benchmarks/README.md)
    hop: int | None = None

    def __post_init__(self) -> None:
        _one_of("captions", self.decider, CAPTIONS)
        _at_least("caption_hop", self.hop, 1, "chunks, 1 or more")
        if self.hop is not None and (not isinstance(self.hop, int) or self.hop > 4):
            raise ValueError(f"caption_hop {self.hop} is out of range: use 1 to 4 chunks")
        _at_least("caption_calls", self.calls, 0, "decoder calls, 0 (no bound) or more")
        _at_least("caption_budget_ms", self.budget_ms, 0, "ms, 0 (no bound) or more")


@dataclass(frozen=True)
class AlertOptions:
    """Alert mode of a whisper-cross bundle (runtime/kinds/whisper.py, runtime/audioset_alerts.py)."""

    # "tagger" (runtime/tagger.py, where the bundle has one) | "protocol" (the decoder's
    # <respond> step and tag) | "audioset" (the AudioSet branch); None = the bundle's
    decider: str | None = None
    # raise only these labels (`listen --only smoke_alarm,doorbell`); None = the decider's
    only: tuple[str, ...] | None = None
    # alerts on raw AudioSet classes, "Name" or "Name=threshold" (`--alert-class`); decided by
    # the bundle's AudioSet branch
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _one_of("alerts", self.decider, ALERTS)


@dataclass(frozen=True)
class AssistOptions:
    """Assist mode of a whisper-cross bundle (runtime/kinds/whisper.py)."""

    # "grammar" (the words a window reading hears, parsed by runtime/intents.py) | "decoder"
    # (its <respond> step and tag); None = the bundle's
    decider: str | None = None
    # tagged responses (assist intents): read the window at every one and report its words
    # (Response.heard), not only where `decision.verify` needs a reading to confirm one;
    # `soundflow calibrate --verify` chooses its thresholds by them
    read_answers: bool = False

    def __post_init__(self) -> None:
        _one_of("assist", self.decider, ASSIST)


@dataclass(frozen=True)
class CacheOptions:
    """The decoder's KV cache (runtime/kinds/decoder.py, runtime/kinds/whisper.py)."""

    budget: int | None = None  # decoder cache slots; None = the bundle's capacity
    policy: str = "evict"  # "evict" (sinks + sliding window) | "reprefill"
    window: int | None = None  # recent entries kept at eviction; None = 3/4 of room

    def __post_init__(self) -> None:
        _at_least("cache_budget", self.budget, 1, "slots, 1 or more")
        _at_least("cache_window", self.window, 1, "entries, 1 or more")


@dataclass(frozen=True)
class SourceOptions:
    """The audio's way in and out of the loop (runtime/listener.py, runtime/loop.py)."""

    realtime: bool = True  # pace file/stdin input like a microphone (False: as fast as possible)
    ring_seconds: float = 10.0  # capture ring: audio kept before the oldest is dropped
    queue_chunks: int = 64  # encoded chunks waiting for the decoder before encoding waits
    reconnect: bool = True  # reopen a microphone that dies or goes silent, with backoff
    reconnect_tries: int = 10  # failed reopen attempts in a row before the run ends in error
    timeout_s: float = 3.0  # a microphone silent this long (after its first audio) is lost
    gap_s: float = 1.0  # a live source silent this long is reported as an input gap
    stats_every_s: float = 10.0  # stream seconds between Stats events (0 = never)

    def __post_init__(self) -> None:
        _at_least("stats_every_s", self.stats_every_s, 0, "seconds, 0 (never) or more")
        _at_least("reconnect_tries", self.reconnect_tries, 0, "attempts, 0 or more")
        _positive("ring_seconds", self.ring_seconds)
        _positive("queue_chunks", self.queue_chunks)
        _positive("source_timeout_s", self.timeout_s)
        _positive("gap_s", self.gap_s)


@dataclass(frozen=True)
class EngineOptions:
    """How the ONNX sessions run (runtime/engine.py, runtime/loop.py)."""

    threads: int | None = None  # intra-op threads per ONNX session; None = cores split
    provider: str = "auto"  # "auto" | "cpu" | "cuda" | "tensorrt"
    asynchronous: bool = True  # perceive + respond threads; False = one thread (baseline)

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider {self.provider!r}: use one of {PROVIDERS}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    def session_threads(self) -> int:
        """Intra-op threads per session. Two sessions run at once in async mode, so each
        gets half the cores (oversubscribing a 2-core board hurts both)."""
        if self.threads is not None:
            return self.threads
        cores = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
        return max(1, cores // 2) if self.asynchronous else max(1, cores)


@dataclass(frozen=True, init=False)
class RuntimeOptions:
    """Every concern's options; `RuntimeOptions()` is all manifest defaults."""

    decision: DecisionOptions = field(default_factory=DecisionOptions)
    captions: CaptionOptions = field(default_factory=CaptionOptions)
    alerts: AlertOptions = field(default_factory=AlertOptions)
    assist: AssistOptions = field(default_factory=AssistOptions)
    cache: CacheOptions = field(default_factory=CacheOptions)
    source: SourceOptions = field(default_factory=SourceOptions)
    engine: EngineOptions = field(default_factory=EngineOptions)

    def __init__(self, **given: object) -> None:
        """Concerns by name (`decision=DecisionOptions(...)`). Flat names are taken too, as
        from_flags takes them (the docs' `RuntimeOptions(threads=2, asynchronous=False)`); a
        concern's name given a plain value ("captions", "alerts", "assist") is its flat name."""
        flat = {}
        for f in fields(self):
            value = given.pop(f.name, None)
            if value is not None and not isinstance(value, f.default_factory):
                flat[f.name], value = value, None
            object.__setattr__(self, f.name, value or f.default_factory())
        flat.update(given)
        if flat:
            changed = self.with_flags(**flat)
            for f in fields(self):
                object.__setattr__(self, f.name, getattr(changed, f.name))

    @classmethod
    def from_flags(cls, **flat) -> RuntimeOptions:
        """From flat names (CLI flags, a serve hello's `options`): `threshold=0.4`,
        `cache_budget=64`, ...; a None value means "not given" (the default)."""
        return cls().with_flags(**flat)

    def with_flags(self, **flat) -> RuntimeOptions:
        """These options with the flat names given (not None) changed."""
        unknown = sorted(set(flat) - set(FLAGS))
        if unknown:
            raise ValueError(f"unknown run-time option(s) {', '.join(unknown)}: use {NAMES}")
        changes: dict[str, dict[str, object]] = {}
        for name, value in flat.items():
            if value is not None:
                concern, attr = FLAGS[name]
                changes.setdefault(concern, {})[attr] = value
        return replace(self, **{c: replace(getattr(self, c), **kw) for c, kw in changes.items()})

    def flags(self) -> dict[str, object]:
        """The flat names and their values (from_flags(**o.flags()) == o)."""
        return {name: getattr(getattr(self, c), a) for name, (c, a) in FLAGS.items()}


# The one map from a flat name to its concern and field: a field's own name unless renamed
# here (the concern already says "cache", "caption", ...).
_RENAMED = {
    ("captions", "decider"): "captions",
    ("captions", "calls"): "caption_calls",
    ("captions", "budget_ms"): "caption_budget_ms",
    ("captions", "hop"): "caption_hop",
    ("alerts", "decider"): "alerts",
    ("alerts", "only"): "alert_only",
    ("alerts", "classes"): "alert_classes",
    ("assist", "decider"): "assist",
    ("cache", "budget"): "cache_budget",
    ("cache", "policy"): "cache_policy",
    ("cache", "window"): "cache_window",
    ("source", "timeout_s"): "source_timeout_s",
}
FLAGS: dict[str, tuple[str, str]] = {
    _RENAMED.get((c.name, f.name), f.name): (c.name, f.name)
    for c in fields(RuntimeOptions)
    for f in fields(c.default_factory)
}
NAMES = ", ".join(sorted(FLAGS))
