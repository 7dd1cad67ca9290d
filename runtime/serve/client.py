"""A client for `soundflow serve` (`listen --server`): `ServerStream` sends one stream's
audio and receives its events; `stream_source` sends any runtime `Source`."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from soundflow.audio import SAMPLE_RATE
from soundflow.runtime.serve.protocol import FORMATS
from soundflow.runtime.sources import Source


class ServerError(RuntimeError):
    """The server refused or dropped the stream; the message says why."""


class ServerStream:
    """One stream on a server (blocking; `send` and `events` may run on two threads).

    with ServerStream("ws://127.0.0.1:8765", mode="transcribe") as stream:
        stream.send(samples)            # float32 16 kHz mono (or bytes of the hello's format)
        ...
        stream.end()
        for event in stream.events():   # dicts: the JSON of `listen --jsonl`, summary last
            print(event)
    """

    def __init__(
        self,
        url: str,
        mode: str | None = None,
        *,
        token: str | None = None,
        realtime: bool = True,
        sample_rate: int = SAMPLE_RATE,
        format: str = "f32le",
        channels: int = 1,
        options: dict[str, Any] | None = None,
        open_timeout: float = 10.0,
    ) -> None:
        try:
            from websockets.sync.client import connect
        except ImportError:  # pragma: no cover - the optional extra
            raise ServerError(
                "the WebSocket client needs: pip install 'soundflow[serve]'"
            ) from None
        self.format = format
        hello = {
            "type": "hello",
            "mode": mode,
            "sample_rate": sample_rate,
            "format": format,
            "channels": channels,
            "realtime": realtime,
            "options": options or {},
        }
        if token is not None:
            hello["token"] = token
        self._context = contextlib.ExitStack()
        try:
            self.ws = self._context.enter_context(
                connect(url, open_timeout=open_timeout, compression=None, max_size=None)
            )
        except (OSError, TimeoutError) as e:
            raise ServerError(
                f"cannot connect to {url}: {e}; is `soundflow serve` running?"
            ) from None
        except Exception as e:  # noqa: BLE001 - an HTTP refusal, a bad URL
            raise ServerError(f"cannot connect to {url}: {e}") from None
        self.ws.send(json.dumps(hello))
        first = self._recv(open_timeout)
        if first is None or first.get("type") != "ready":
            raise ServerError(self._refusal(first))
        self.ready = first
        self.summary: dict | None = None
        self._ended = False
        self._lock = threading.Lock()

    @property
    def chunk_samples(self) -> int:
        return int(self.ready["sample_rate"] * self.ready["chunk_ms"] // 1000)

    def _refusal(self, event: dict | None) -> str:
        from websockets.exceptions import ConnectionClosed

        try:  # the close frame follows the error event
            while True:
                self.ws.recv(timeout=5)
        except (ConnectionClosed, TimeoutError):
            pass
        code, reason = self.ws.close_code, self.ws.close_reason
        text = event.get("text") if event else reason
        return f"the server refused the stream: {text or 'no reason given'} (close code {code})"

    def _recv(self, timeout: float | None) -> dict | None:
        from websockets.exceptions import ConnectionClosed

        try:
            msg = self.ws.recv(timeout=timeout)
        except ConnectionClosed:
            return None
        return json.loads(msg) if isinstance(msg, str) else None

    def send(self, samples: np.ndarray | bytes) -> None:
        """A frame of audio: bytes of the hello's format, or an array (converted)."""
        if not isinstance(samples, bytes | bytearray | memoryview):
            dtype = FORMATS[self.format]
            a = np.asarray(samples)
            if np.dtype(dtype).kind == "i" and a.dtype.kind == "f":
                scale = -np.iinfo(dtype).min
                a = np.clip(np.round(a * scale), -scale, scale - 1)
            samples = a.astype(dtype).tobytes()
        with self._lock:
            if not self._ended:
                self.ws.send(samples)

    def end(self) -> None:
        """No more audio: the server decides the rest and sends the summary."""
        from websockets.exceptions import ConnectionClosed

        with self._lock:
            if self._ended:
                return
            self._ended = True
            try:
                self.ws.send(json.dumps({"type": "end"}))
            except ConnectionClosed:
                pass

    def next_event(self, timeout: float | None = None) -> dict | None:
        """The next event; None on timeout. Raises ServerError if the connection closes
        before the summary."""
        if self.summary is not None:
            return None
        try:
            ev = self._recv(timeout)
        except TimeoutError:
            return None
        if ev is None:
            raise ServerError(
                f"the server closed the stream before its summary (close code "
                f"{self.ws.close_code}: {self.ws.close_reason or 'no reason'})"
            )
        if ev.get("type") == "summary":
            self.summary = ev
        return ev

    def events(self) -> Iterator[dict]:
        """Every event until the summary (included)."""
        while self.summary is None:
            ev = self.next_event(None)
            if ev is not None:
                yield ev

    def close(self) -> None:
        self._context.close()

    def __enter__(self) -> ServerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send_source(stream: ServerStream, source: Source, stop: threading.Event | None = None) -> None:
    """Send every chunk of `source` (16 kHz float32, as the local loop reads it), then end."""
    n = stream.chunk_samples
    source.start()
    try:
        while stop is None or not stop.is_set():
            chunk = source.read_chunk(n)
            if chunk is None:
                break
            stream.send(np.asarray(chunk, "<f4").tobytes())
    finally:
        source.close()
        stream.end()


def stream_source(
    url: str,
    source: Source,
    on_event: Callable[[dict], None] | None = None,
    mode: str | None = None,
    **kwargs: Any,
) -> dict:
    """Send a Source to a server, deliver its events to `on_event`; returns the summary.

    The source is sent chunk by chunk, as local `listen` would read it, so the server
    decides on the very samples the local loop would have."""
    realtime = bool(getattr(source, "realtime", False))
    with ServerStream(url, mode, realtime=realtime, **kwargs) as stream:
        errors: list[BaseException] = []

        def pump() -> None:
            try:
                send_source(stream, source)
            except BaseException as e:  # noqa: BLE001 - reported by the caller
                errors.append(e)
                stream.end()

        sender = threading.Thread(target=pump, name="soundflow-client-send", daemon=True)
        sender.start()
        for ev in stream.events():
            if on_event is not None:
                on_event(ev)
        sender.join(5)
        if errors:
            raise errors[0]
        assert stream.summary is not None
        return stream.summary
