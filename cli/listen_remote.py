"""`soundflow listen --server URL`: the audio goes to a `soundflow serve` server and its
events are printed exactly as local `listen` prints its own (same lines, same JSONL)."""

from __future__ import annotations

import os
import sys
import threading
import time
from types import SimpleNamespace

import click

from soundflow.audio import SAMPLE_RATE


def _event(d: dict) -> SimpleNamespace:
    """A server event (JSON) with the attributes `listen_output.human_line` reads."""
    ev = SimpleNamespace(**d)
    ev.to_json = lambda: d
    return ev


def listen_remote(
    *,
    input_,
    device,
    demo,
    bundle,
    jsonl,
    int8,
    raw_format,
    raw_rate,
    raw_channels,
    stops,
    flags,
    server,
    token,
) -> None:
    """`flags`: listen's run-time flags by flat RuntimeOptions name (cli/params.py); the
    stream's go in the hello, the engine's belong to the server."""
    from soundflow.cli.listen_output import (
        PIPE_CLOSED,
        Out,
        exit_now,
        quiet_stdout,
        source_flags,
        stopped_summary,
        use_color,
        write_event,
    )
    from soundflow.runtime.events import Notice
    from soundflow.runtime.serve import ServerError, ServerStream, send_source
    from soundflow.runtime.sources import (
        SourceError,
        array_source,
        file_source,
        stdin_source,
    )

    f = flags
    local_only = {
        "--bundle": bundle,
        "--int8": int8 or None,
        "--sync": None if f["asynchronous"] else True,
        "--threads": f["threads"],
        "--cache-budget": f["cache_budget"],
        "--cache-policy": None if f["cache_policy"] == "evict" else f["cache_policy"],
        "--captions": f["captions"],
        "--alerts": f["alerts"],
        "--no-speech-gate": None if f["speech_gate"] else True,
        "--provider": None if f["provider"] == "auto" else f["provider"],
    }
    given = [k for k, v in local_only.items() if v is not None]
    if given:
        raise click.UsageError(
            f"{', '.join(given)}: set on the server (`soundflow serve`), not with --server"
        )
    is_stdin, realtime = source_flags(input_, device, demo, f["realtime"])
    try:
        if demo:  # what local --demo plays: the shipped recording, else the tone scene
            from soundflow.runtime.demo import find_demo_file, procedural_demo

            found = find_demo_file()
            source = (
                file_source(str(found), realtime)
                if found
                else array_source(procedural_demo(), SAMPLE_RATE, realtime)
            )
        elif is_stdin:
            source = stdin_source(raw_format, raw_rate, raw_channels, realtime)
        elif input_ is not None:
            source = file_source(input_, realtime)
        else:
            from soundflow.runtime.mic import MicSource

            source = MicSource(
                device, reconnect=f["reconnect"], reconnect_tries=f["reconnect_tries"]
            )
    except SourceError as e:
        raise click.ClickException(str(e)) from None
    sent_flags = (  # the stream's own: what a hello's `options` takes (serve/protocol.py)
        "threshold",
        "refractory_s",
        "max_response_tokens",
        "stats_every_s",
        "caption_calls",
        "caption_budget_ms",
    )
    try:
        stream = ServerStream(
            server,
            f["mode"],
            token=token or os.environ.get("SOUNDFLOW_TOKEN"),
            realtime=bool(realtime),
            options={k: f[k] for k in sent_flags if f[k] is not None},
        )
    except ServerError as e:
        raise click.ClickException(str(e)) from None
    r = stream.ready
    warn = "" if r.get("trained", True) else "  [UNTRAINED smoke model: responses are placeholders]"
    click.echo(
        f"soundflow listen · server {server} · {r.get('bundle')} · mode {r.get('mode')} · "
        f"{source.name} · {'realtime' if realtime else 'fast'} · session {r.get('session')}{warn}",
        err=True,
    )
    click.echo("listening (Ctrl-C or SIGTERM to stop)", err=True)
    out = Out(sys.stdout)
    color = use_color() and not jsonl
    lock = threading.Lock()
    sent = [0]

    def notice(type_: str, kind: str, text: str) -> None:  # the local source's health
        t = sent[0] * stream.chunk_samples / SAMPLE_RATE
        with lock:
            write_event(out, Notice(t=t, kind=kind, text=text, type=type_), jsonl, color)

    source.on_notice = notice
    stop = threading.Event()
    failure: list[str] = []

    def pump() -> None:
        try:
            send_source(stream, _Counted(source, sent), stop)
        except SourceError as e:
            failure.append(str(e))
        except Exception as e:  # noqa: BLE001 - the connection went, reported below
            failure.append(f"sending to {server} failed: {type(e).__name__}: {e}")

    sender = threading.Thread(target=pump, name="soundflow-listen-send", daemon=True)
    sender.start()
    summary, write_error, stopped_at, handled = None, None, None, 0
    started = time.monotonic()
    try:
        while summary is None:
            while handled < stops.count:  # Ctrl-C, SIGTERM: counted (cli/signals.py)
                handled += 1
                name = stops.names[handled - 1]
                if handled >= 3:
                    why = f"{name} a third time: quit before the server's summary came"
                    wall = time.monotonic() - started
                    kw = {"source": source.name, "realtime": bool(realtime)}
                    last = stopped_summary(why, r.get("mode"), wall, "async", **kw)
                    exit_now(out, last, jsonl, color)
                click.echo(f"{name}: stopping, reporting the audio already sent", err=True)
                stopped_at = stopped_at or time.monotonic()
                stop.set()
                source.stop()
            if stopped_at is not None and time.monotonic() - stopped_at > 20:
                raise click.ClickException("the server did not send its summary within 20 s")
            d = stream.next_event(timeout=0.1)
            if d is None:
                continue
            with lock:
                if write_error is None:
                    write_error = write_event(out, _event(d), jsonl, color)
                    if write_error:
                        stopped_at = stopped_at or time.monotonic()
                        stop.set()
            if d.get("type") == "summary":
                summary = d
    except ServerError as e:
        raise click.ClickException(failure[0] if failure else str(e)) from None
    finally:
        stream.close()
    sender.join(2)
    if write_error is PIPE_CLOSED:
        quiet_stdout()
        return
    if write_error:
        raise click.ClickException(write_error)
    if failure:
        raise click.ClickException(failure[0])
    if summary.get("error"):
        raise click.ClickException(summary["error"])


class _Counted:
    """A Source that counts the chunks read from it (for the times of local notices)."""

    def __init__(self, source, sent: list[int]) -> None:
        self._source, self._sent = source, sent

    def read_chunk(self, n: int):
        chunk = self._source.read_chunk(n)
        if chunk is not None:
            self._sent[0] += 1
        return chunk

    def __getattr__(self, name: str):
        return getattr(self._source, name)


__all__ = ["listen_remote"]
