"""Run-time options: how to run a bundle, apart from what the bundle is.

The model's dimensions and defaults live in the bundle's manifest; every `None` here means
"the manifest's default". Frozen, so one options object can be shared between threads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")


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

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider {self.provider!r}: use one of {PROVIDERS}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold {self.threshold} must lie in [0, 1]")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

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
