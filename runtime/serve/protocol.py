"""The `soundflow serve` wire protocol: the hello, PCM frames, text messages, close codes
and the JSON of the events and errors sent back."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from soundflow.audio import SAMPLE_RATE
from soundflow.runtime.events import Event, Notice
from soundflow.runtime.options import ALERTS

PROTOCOL_VERSION = 1
FORMATS = {"s16le": "<i2", "f32le": "<f4", "s32le": "<i4"}

# Close codes (RFC 6455 where one fits, 4000-4999 for the application).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # the server is shutting down (after the summary)
CLOSE_UNSUPPORTED = 1003  # a frame that is not PCM of the announced format, an unknown message
CLOSE_INVALID = 1007  # a hello or message that is not valid JSON / not a valid hello
CLOSE_POLICY = 1008  # a missing or wrong token
CLOSE_TOO_BIG = 1009  # a frame over max_frame_bytes (sent by the WebSocket layer)
CLOSE_INTERNAL = 1011  # the stream's graph failed
CLOSE_TRY_LATER = 1013  # max_streams reached
CLOSE_TOO_SLOW = 4001  # the client does not read its events

HELLO_OPTIONS = {  # flat RuntimeOptions names a stream may set (RuntimeOptions.from_flags)
    "threshold": float,
    "refractory_s": float,
    "max_response_tokens": int,
    "stats_every_s": float,
    # transcribe captions by agreement: decoder calls and ms a reading may spend per chunk
    # (0 lifts the bound); a server under load may want its streams' deadline longer
    "caption_calls": int,
    "caption_budget_ms": float,
    # and chunks between readings: 2 halves the stream's CPU (the server encodes only the
    # chunks read) at some words' cost
    "caption_hop": int,
    # alert mode's decider (RuntimeOptions.ALERTS): "audioset" decides from the PCM alone,
    # so the stream skips the Whisper encoder (a fraction of a transcribe stream's cost)
    "alerts": ALERTS,
}


class ProtocolError(ValueError):
    """A client message the server refuses: `kind` and `code` go to the client."""

    def __init__(self, kind: str, text: str, code: int) -> None:
        super().__init__(text)
        self.kind, self.code = kind, code


@dataclass(frozen=True)
class Hello:
    mode: str | None
    sample_rate: int
    format: str
    channels: int
    realtime: bool
    token: str | None
    options: dict[str, Any]

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample of every channel."""
        return np.dtype(FORMATS[self.format]).itemsize * self.channels


def parse_hello(text: str | bytes) -> Hello:
    """The first message of a connection -> Hello, or ProtocolError saying what is wrong."""
    if isinstance(text, bytes):
        raise ProtocolError(
            "invalid_hello",
            'the first message must be a JSON hello (text), e.g. {"type": "hello", '
            '"sample_rate": 16000, "format": "s16le"}; got a binary frame',
            CLOSE_INVALID,
        )
    try:
        d = json.loads(text)
    except ValueError as e:
        raise ProtocolError(
            "invalid_hello", f"the hello is not valid JSON ({e})", CLOSE_INVALID
        ) from None
    if not isinstance(d, dict) or d.get("type", "hello") != "hello":
        raise ProtocolError(
            "invalid_hello", 'the hello must be a JSON object with "type": "hello"', CLOSE_INVALID
        )

    def bad(field: str, what: str) -> ProtocolError:
        return ProtocolError(
            "invalid_hello", f"hello: {field} {d.get(field)!r}: {what}", CLOSE_INVALID
        )

    rate = d.get("sample_rate", SAMPLE_RATE)
    if not isinstance(rate, int) or isinstance(rate, bool) or not 1000 <= rate <= 384_000:
        raise bad("sample_rate", "use an integer rate in Hz, 1000-384000")
    fmt = d.get("format", "s16le")
    if fmt not in FORMATS:
        raise bad("format", f"use one of {sorted(FORMATS)}")
    channels = d.get("channels", 1)
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= 32:
        raise bad("channels", "use 1-32")
    realtime = d.get("realtime", True)
    if not isinstance(realtime, bool):
        raise bad("realtime", "use true (a live stream) or false (a file, as fast as possible)")
    mode = d.get("mode")
    if mode is not None and not isinstance(mode, str):
        raise bad("mode", "use a task name the bundle lists, or leave it out")
    token = d.get("token")
    if token is not None and not isinstance(token, str):
        raise bad("token", "use a string")
    opts = d.get("options") or {}
    if not isinstance(opts, dict):
        raise bad("options", "use an object")
    clean: dict[str, Any] = {}
    for k, v in opts.items():
        kind = HELLO_OPTIONS.get(k)
        if kind is None:
            raise ProtocolError(
                "invalid_hello",
                f"hello: unknown option {k!r} (known: {sorted(HELLO_OPTIONS)})",
                CLOSE_INVALID,
            )
        if v is None:
            continue
        if isinstance(kind, tuple):  # one of these strings
            if v not in kind:
                raise ProtocolError(
                    "invalid_hello", f"hello: option {k} {v!r}: use one of {kind}", CLOSE_INVALID
                )
            clean[k] = v
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ProtocolError(
                "invalid_hello", f"hello: option {k} {v!r} must be a number", CLOSE_INVALID
            )
        if kind is int and v != int(v):
            raise ProtocolError(
                "invalid_hello", f"hello: option {k} {v!r} must be an integer", CLOSE_INVALID
            )
        clean[k] = kind(v)
    return Hello(mode, rate, fmt, channels, realtime, token, clean)


def message_type(text: str) -> str:
    """A text message after the hello -> its type ("end"), or ProtocolError."""
    try:
        d = json.loads(text)
    except ValueError as e:
        raise ProtocolError(
            "invalid_message", f"a text message that is not valid JSON ({e})", CLOSE_INVALID
        ) from None
    kind = d.get("type") if isinstance(d, dict) else None
    if kind != "end":
        raise ProtocolError(
            "invalid_message",
            f"unknown message type {kind!r}: after the hello send binary PCM frames and "
            '{"type": "end"} when the stream is over',
            CLOSE_UNSUPPORTED,
        )
    return kind


def pcm_samples(data: bytes, hello: Hello) -> np.ndarray:
    """A binary frame -> mono float32 samples (any count), or ProtocolError if it is not
    whole samples of the hello's format."""
    if len(data) % hello.frame_bytes:
        raise ProtocolError(
            "invalid_pcm",
            f"a frame of {len(data)} bytes is not whole {hello.format} samples of "
            f"{hello.channels} channel(s) ({hello.frame_bytes} bytes each)",
            CLOSE_UNSUPPORTED,
        )
    x = np.frombuffer(data, FORMATS[hello.format])
    if x.dtype.kind == "i":
        x = x.astype(np.float32) / np.float32(-float(np.iinfo(x.dtype).min))
    if hello.channels > 1:
        x = x.reshape(-1, hello.channels).mean(axis=1, dtype=np.float64)
    return x.astype(np.float32, copy=False)


def event_json(ev: Event | dict) -> str:
    return json.dumps(ev if isinstance(ev, dict) else ev.to_json(), ensure_ascii=False)


def error_event(kind: str, text: str, t: float = 0.0) -> str:
    return event_json(Notice(t=t, kind=kind, text=text, type="error"))
