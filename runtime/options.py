"""Run-time options: how to run a bundle, apart from what the bundle is.

The model's dimensions and defaults live in the bundle's manifest; every `None` here means
"the manifest's default". Frozen, so one options object can be shared between threads.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")
CAPTIONS = ("agreement", "protocol")  # transcribe captions of a whisper-cross bundle
# what decides alert mode in a whisper-cross bundle ("audioset": runtime/audioset_alerts.py)
ALERTS = ("tagger", "protocol", "audioset")
ASSIST = ("grammar", "decoder")  # what answers assist mode in a whisper-cross bundle


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class RuntimeOptions:
    mode: str | None = None  # task prompt (manifest `tasks`); None = the bundle's first
    threshold: float | None = None  # respond iff p(<respond>) >= threshold
    refractory_s: float | None = None  # no second response with the same tag within this
    max_response_tokens: int | None = None  # stop a response here if <eos> has not come
    cache_budget: int | None = None  # decoder cache slots; None = the bundle's capacity
    cache_policy: str = "evict"  # "evict" (sinks + sliding window) | "reprefill"
    cache_window: int | None = None  # recent entries kept at eviction; None = 3/4 of room
    realtime: bool = True  # pace file/stdin input like a microphone (False: as fast as possible)
    asynchronous: bool = True  # perceive + respond threads; False = one thread (baseline)
    threads: int | None = None  # intra-op threads per ONNX session; None = cores split
    provider: str = "auto"  # "auto" | "cpu" | "cuda" | "tensorrt"
    stats_every_s: float = 10.0  # stream seconds between Stats events (0 = never)
    ring_seconds: float = 10.0  # capture ring: audio kept before the oldest is dropped
    queue_chunks: int = 64  # encoded chunks waiting for the decoder before encoding waits
    reconnect: bool = True  # reopen a microphone that dies or goes silent, with backoff
    reconnect_tries: int = 10  # failed reopen attempts in a row before the run ends in error
    source_timeout_s: float = 3.0  # a microphone silent this long (after its first audio) is lost
    gap_s: float = 1.0  # a live source silent this long is reported as an input gap
    # transcribe captions of a whisper-cross bundle: "agreement" (re-decoded windows,
    # runtime/captions.py) | "protocol" (the decoder's own responses); None = the bundle's
    captions: str | None = None
    # alert mode of a whisper-cross bundle: "tagger" (runtime/tagger.py, where the bundle has
    # one) | "protocol" (the decoder's <respond> step and tag); None = the bundle's
    alerts: str | None = None
    # alert mode: raise only these labels (`listen --only smoke_alarm,doorbell`); None = the
    # decider's defaults
    alert_only: tuple[str, ...] | None = None
    # alert mode: alerts on raw AudioSet classes, "Name" or "Name=threshold" (`--alert-class`);
    # decided by the bundle's AudioSet branch
    alert_classes: tuple[str, ...] = ()
    # transcribe captions by agreement: skip the readings of windows the bundle's speech gate
    # (its tagger's speech output) heard no speech in; False reads every window
    speech_gate: bool = True
    # transcribe captions by agreement: decoder calls a window reading may make per chunk (a
    # longer one goes on at the next chunk); None = the manifest's, 0 = no bound
    caption_calls: int | None = None
    # and decoder time (ms) it may spend per chunk; None = the manifest's, 0 = no time bound
    caption_budget_ms: float | None = None
    # a whisper-cross bundle's tagged responses (assist intents): read the window at every
    # one and report its words (Response.heard), not only where `decision.verify` needs a
    # reading to confirm one; `soundflow calibrate --verify` chooses its thresholds by them
    read_answers: bool = False
    # assist mode of a whisper-cross bundle: "grammar" (the words a window reading hears,
    # parsed by runtime/intents.py) | "decoder" (its <respond> step and tag); None = the bundle's
    assist: str | None = None

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider {self.provider!r}: use one of {PROVIDERS}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold {self.threshold} must lie in [0, 1]")
        if self.captions is not None and self.captions not in CAPTIONS:
            raise ValueError(f"captions {self.captions!r}: use one of {CAPTIONS}")
        if self.alerts is not None and self.alerts not in ALERTS:
            raise ValueError(f"alerts {self.alerts!r}: use one of {ALERTS}")
        if self.assist is not None and self.assist not in ASSIST:
            raise ValueError(f"assist {self.assist!r}: use one of {ASSIST}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        checks = (
            ("refractory_s", self.refractory_s, 0, "seconds, 0 or more"),
            ("max_response_tokens", self.max_response_tokens, 1, "tokens, 1 or more"),
            ("cache_budget", self.cache_budget, 1, "slots, 1 or more"),
            ("cache_window", self.cache_window, 1, "entries, 1 or more"),
            ("stats_every_s", self.stats_every_s, 0, "seconds, 0 (never) or more"),
            ("reconnect_tries", self.reconnect_tries, 0, "attempts, 0 or more"),
            ("caption_calls", self.caption_calls, 0, "decoder calls, 0 (no bound) or more"),
            ("caption_budget_ms", self.caption_budget_ms, 0, "ms, 0 (no bound) or more"),
        )
        for name, value, low, what in checks:
            if value is not None and not (_finite(value) and value >= low):
                raise ValueError(f"{name} {value} is out of range: use {what}")
        positive = (
            ("ring_seconds", self.ring_seconds),
            ("queue_chunks", self.queue_chunks),
            ("source_timeout_s", self.source_timeout_s),
            ("gap_s", self.gap_s),
        )
        for name, value in positive:
            if not (_finite(value) and value > 0):
                raise ValueError(f"{name} {value} must be a positive number")

    def with_(self, **changes) -> RuntimeOptions:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

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
