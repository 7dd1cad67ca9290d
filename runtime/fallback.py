"""The respond decision for bundles whose model has no <silence>/<respond> tokens (manifest
`control.mode == "fallback"`): respond at the end of each detected utterance.

Energy-based and numpy-only: per 20 ms frame, the level in dBFS against an adaptive noise
floor (falls at once, rises slowly, so a steady fan becomes the floor and speech does not);
an utterance is at least `min_utterance_s` of sound above the floor, and it ends after
`end_silence_s` below it. One policy object per stream: `step(chunk)` per chunk, `reset()`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

FRAME_S = 0.02  # analysis frame: 20 ms


@dataclass(frozen=True)
class FallbackOptions:
    margin_db: float = 10.0  # a frame is active this far above the noise floor
    min_level_dbfs: float = -55.0  # never active below this, whatever the floor
    floor_rise_db_per_s: float = 2.0  # how fast the floor follows a louder background
    min_utterance_s: float = 0.3  # shorter sound is a click, not an utterance
    end_silence_s: float = 0.6  # this much quiet after an utterance ends it
    max_utterance_s: float = 15.0  # respond anyway after this much continuous sound

    @classmethod
    def from_manifest(cls, manifest: dict, **overrides) -> FallbackOptions:
        """Defaults, then the manifest's `control.fallback` values, then `overrides`."""
        known = {f.name for f in fields(cls)}
        given = (manifest.get("control") or {}).get("fallback") or {}
        return replace(cls(), **{k: v for k, v in {**given, **overrides}.items() if k in known})


@dataclass(frozen=True)
class FallbackDecision:
    respond: bool  # an utterance ended in this chunk (or ran past max_utterance_s)
    p: float  # how far the trailing quiet is towards ending the utterance, 0..1
    utterance_s: float  # sound in the current (or just ended) utterance
    reason: str  # "utterance_end" | "max_utterance" | "" (silent)


class UtteranceEndPolicy:
    """Chunks of PCM in, one respond/silence decision per chunk out."""

    def __init__(self, sample_rate: int, options: FallbackOptions | None = None) -> None:
        self.options = options or FallbackOptions()
        self.frame = max(1, int(round(sample_rate * FRAME_S)))
        self.frame_s = self.frame / sample_rate
        self.reset()

    def reset(self) -> None:
        self.floor_db: float | None = None
        self.active_s = 0.0  # sound so far in the current utterance
        self.quiet_s = 0.0  # quiet since the last active frame
        self.in_utterance = False
        self._carry = np.zeros(0, np.float32)  # samples short of a whole frame

    def levels_db(self, pcm: np.ndarray) -> np.ndarray:
        """Whole 20 ms frames of `pcm` (carrying the remainder) -> RMS level in dBFS."""
        x = np.concatenate([self._carry, np.asarray(pcm, np.float32).reshape(-1)])
        n = len(x) // self.frame
        self._carry = x[n * self.frame :]
        frames = x[: n * self.frame].reshape(n, self.frame).astype(np.float64)
        return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)

    def step(self, pcm: np.ndarray) -> FallbackDecision:
        """One chunk (any length) -> the decision after it."""
        o = self.options
        respond, reason = False, ""
        for level in self.levels_db(pcm):
            if self.floor_db is None or level < self.floor_db:
                self.floor_db = level  # falls at once: quiet is quiet
            else:  # rises slowly: a sound must outlast many seconds to become background
                self.floor_db = min(level, self.floor_db + o.floor_rise_db_per_s * self.frame_s)
            active = level >= max(self.floor_db + o.margin_db, o.min_level_dbfs)
            if active:
                self.active_s += self.frame_s
                self.quiet_s = 0.0
                if self.active_s >= o.min_utterance_s:
                    self.in_utterance = True
            else:
                self.quiet_s += self.frame_s
                if not self.in_utterance and self.quiet_s >= o.end_silence_s:
                    self.active_s = 0.0  # isolated clicks never add up to an utterance
            if self.in_utterance and not respond:
                if self.quiet_s >= o.end_silence_s:
                    respond, reason = True, "utterance_end"
                elif self.active_s >= o.max_utterance_s:
                    respond, reason = True, "max_utterance"
        utterance_s = self.active_s
        if respond:  # the next utterance starts from nothing
            self.in_utterance, self.active_s = False, 0.0
            p = 1.0
        else:
            p = min(1.0, self.quiet_s / o.end_silence_s) if self.in_utterance else 0.0
        return FallbackDecision(respond, p, utterance_s, reason)
