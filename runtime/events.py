"""Typed events the runtime delivers to callbacks, to `Listener.events()` and to JSONL.

Every event carries `t`, the stream time in seconds it refers to (the end of the chunk
that triggered it), and its JSON form has at least `type`, `t`, `text`, `latency_ms`.
Latencies are wall-clock milliseconds from the end of that chunk's audio (its arrival
from the source) to the moment in question.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Response:
    """The model chose `<respond>` after a chunk and generated a response."""

    t: float  # stream seconds: end of the chunk that triggered the response
    chunk: int  # index of that chunk
    text: str  # plain text, tags removed
    raw: str  # decoded text with tags, e.g. "<alert:smoke_alarm> a smoke alarm ..."
    tags: dict[str, str]  # parsed tags, e.g. {"alert": "smoke_alarm"}
    mode: str  # the task prompt the stream is decoded in
    probability: float  # p(<respond>) that triggered it
    decision_latency_ms: float  # chunk audio end -> decision
    first_token_latency_ms: float  # chunk audio end -> first response token
    latency_ms: float  # chunk audio end -> response complete
    tokens: int  # response tokens generated (without <eos>)
    truncated: bool = False  # stopped at max_response_tokens before <eos>
    # the words a reading of the window heard where one confirmed the response (an assist
    # intent below its threshold, `decision.verify`), else None
    heard: str | None = None
    # an alert by the AudioSet branch (runtime/audioset_alerts.py): the top AudioSet classes
    # YAMNet heard in its chunk, and the stream time the sound began (its first chunk over
    # the threshold); else None
    classes: tuple[str, ...] | None = None
    onset: float | None = None
    type: str = "response"

    @property
    def alert(self) -> str | None:
        return self.tags.get("alert")

    @property
    def intent(self) -> str | None:
        return self.tags.get("intent")

    def to_json(self) -> dict[str, Any]:
        return _json(self)


@dataclass(frozen=True)
class Stats:
    """Periodic health of the loop."""

    t: float
    chunks: int
    overruns: int  # times audio was dropped because the loop fell behind the source
    stalls: int  # chunks decided more than one chunk length after their audio ended
    queued: int  # chunks encoded and waiting for the decoder
    decision_p50_ms: float
    decision_p99_ms: float
    cache_entries: int
    cache_evictions: int
    # the same percentiles over the chunks since the last Stats only: a late regression shows
    decision_p50_recent_ms: float = 0.0
    decision_p99_recent_ms: float = 0.0
    # transcribe captions by agreement (None otherwise): see Summary
    caption_lag_p50_ms: float | None = None
    caption_lag_p95_ms: float | None = None
    captions_late: int | None = None
    captions_skipped: int | None = None
    captions_deferred: int | None = None
    text: str = ""
    latency_ms: float = 0.0
    type: str = "stats"

    def to_json(self) -> dict[str, Any]:
        return _json(self)


@dataclass(frozen=True)
class Notice:
    """The runtime's own health: a source lost, retried or back, non-finite audio
    replaced, a poisoned state reset. `type` is "error", "warning" or "info"; `kind` is
    stable for programs (e.g. "source_lost", "reconnected", "input_gap", "state_reset")."""

    t: float  # stream seconds when it was noticed
    kind: str
    text: str  # one line, with the fix where there is one
    type: str = "warning"
    latency_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return _json(self)


@dataclass(frozen=True)
class Suppressed:
    """A response the decision chose and then withheld (only with `report_suppressed`, the
    CLI's `--show-suppressed`): which tag it would have opened with and why it stayed quiet.
    The summary's `suppressed_by` counts the same reasons."""

    t: float  # stream seconds: end of the chunk whose decision chose to respond
    chunk: int
    # "refractory" (the same tag answered within refractory_s), "below_threshold" (under
    # its tag's calibrated threshold, and no reading of the window confirmed it),
    # "not_an_answer" (it did not open with the mode's tag), "answered" (the request the
    # grammar answered, heard again as the window slides)
    reason: str
    tag: str | None  # the tag it would have opened with, e.g. "intent:lights_off"; None: untagged
    probability: float  # p(<respond>) that chose it
    text: str  # one line saying the above
    latency_ms: float = 0.0
    type: str = "suppressed"

    def to_json(self) -> dict[str, Any]:
        return _json(self)


# One line per reason, for Suppressed.text and the README.
SUPPRESSED_REASONS = {
    "refractory": "the same tag answered less than refractory_s ago",
    "below_threshold": "p(<respond>) under the tag's calibrated threshold, not confirmed by words",
    "not_an_answer": "the response would not open with the mode's tag",
    "answered": "the request was answered already (heard again as the window slides)",
}


@dataclass(frozen=True)
class Summary:
    """The last event of every run."""

    t: float  # stream seconds processed
    chunks: int
    responses: int
    suppressed: int  # responses the decision chose and then withheld (reasons below)
    overruns: int
    overrun_samples: int
    stalls: int  # chunks decided late, plus chunk lengths a live source delivered nothing
    decision_p50_ms: float
    decision_p99_ms: float
    decision_mean_ms: float
    first_token_p50_ms: float
    wall_s: float
    realtime_factor: float  # stream seconds per wall second
    cache_evictions: int
    mode: str
    scheduling: str  # "async" (perceive + respond threads) or "sync"
    interrupted: bool = False
    error: str | None = None
    input_overflows: int = 0  # the audio device's own overflow flags (PortAudio)
    input_gaps: int = 0  # times a live source delivered nothing for longer than its gap limit
    input_gap_s: float = 0.0  # seconds of those gaps
    reconnects: int = 0  # times a lost source came back
    nonfinite_samples: int = 0  # NaN/Inf input samples replaced by 0
    state_resets: int = 0  # streams reset because their state or output turned non-finite
    # suppressed, per reason: "refractory" (its tag answered within refractory_s),
    # "below_threshold" (under its tag's calibrated threshold), "not_an_answer" (it did not
    # open with the mode's tag), "answered" (assist by grammar: the request was answered)
    suppressed_by: dict[str, int] = field(default_factory=dict)
    # Transcribe captions by agreement (None in other modes): a window reading's lag is the
    # time from its newest audio's arrival to its words' emission (a word also waits one
    # reading for agreement); readings that ended after the next was due; chunks of audio no reading
    # held, whose words were never read (0 unless a --caption-budget-ms deadline dropped them);
    # chunks no reading began at because the reader was behind real time (it read over a
    # longer hop; `serve` does not encode them)
    caption_lag_p50_ms: float | None = None
    caption_lag_p95_ms: float | None = None
    caption_lag_max_ms: float | None = None
    captions_late: int | None = None
    captions_skipped: int | None = None
    captions_deferred: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    latency_ms: float = 0.0
    type: str = "summary"

    def to_json(self) -> dict[str, Any]:
        d = _json(self)
        d.update(d.pop("extra"))
        return d


Event = Response | Stats | Notice | Suppressed | Summary


def _json(ev: Any) -> dict[str, Any]:
    d = dataclasses.asdict(ev)
    out = {"type": d.pop("type"), "t": round(d.pop("t"), 3), "text": d.pop("text")}
    out["latency_ms"] = round(d.pop("latency_ms"), 2)
    for k, v in d.items():
        out[k] = round(v, 2) if isinstance(v, float) else v
    return out


class LatencyStats:
    """Latency samples in ms with percentiles; bounded memory for unbounded streams."""

    def __init__(self, keep: int = 100_000) -> None:
        self._buf = np.zeros(keep, np.float64)
        self._n = 0

    def add(self, ms: float) -> None:
        self._buf[self._n % len(self._buf)] = ms
        self._n += 1

    def __len__(self) -> int:
        return self._n

    def _live(self) -> np.ndarray:
        return self._buf[: min(self._n, len(self._buf))]

    def percentile(self, q: float, last: int | None = None) -> float:
        """The q-th percentile of every sample kept, or of the newest `last` only."""
        live = self._live() if last is None else self.newest(last)
        return float(np.percentile(live, q)) if live.size else 0.0

    def newest(self, n: int) -> np.ndarray:
        n = min(n, self._n, len(self._buf))
        end = self._n % len(self._buf)
        return np.roll(self._buf, -end)[len(self._buf) - n :] if n else self._buf[:0]

    def max(self) -> float:
        return float(self._live().max()) if self._n else 0.0

    def mean(self) -> float:
        return float(self._live().mean()) if self._n else 0.0
