"""What local `listen` (cli/listen_cmd.py) and `listen --server` (cli/listen_remote.py) share:
the event lines they print, how a write fails or a stop ends the run, and the source flags.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time

import click


class Out:
    """Writes each line the moment its event happens, unbuffered, straight to the file
    descriptor when there is one: a redirected file holds every line written so far, and a
    full disk surfaces as an OSError here rather than in a buffer flushed at exit."""

    def __init__(self, stream) -> None:
        self.stream = stream
        try:
            self.fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: CliRunner
            self.fd = None

    def line(self, text: str) -> None:
        if self.fd is None:
            self.stream.write(text + "\n")
            self.stream.flush()
            return
        data = (text + "\n").encode("utf-8")
        while data:
            try:
                n = os.write(self.fd, data)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            data = data[n:]


def use_color() -> bool:
    """Colour the human lines: stdout is a terminal and NO_COLOR is not set."""
    return sys.stdout.isatty() and os.environ.get("NO_COLOR") is None


def human_line(ev, color: bool) -> str | None:
    """The line printed for an event without --jsonl (None: the event prints nothing)."""

    def style(text, **kw):
        return click.style(text, **kw) if color else text

    if ev.type == "response":
        stamp = style(f"[{ev.t:8.1f}s]", fg="cyan")
        tag = ""
        if ev.tags.get("alert"):
            tag = style(f"ALERT {ev.tags['alert']} ", fg="red", bold=True)
        elif ev.tags.get("intent"):
            tag = style(f"{ev.tags['intent']} ", fg="yellow", bold=True)
        lat = style(
            f"(p={ev.probability:.2f}, decision {ev.decision_latency_ms:.0f} ms, "
            f"first token {ev.first_token_latency_ms:.0f} ms)",
            dim=True,
        )
        return f"{stamp} {tag}{ev.text or style('<empty>', dim=True)}  {lat}"
    if ev.type == "suppressed":
        return style(f"[{ev.t:8.1f}s] · {ev.text} (p={ev.probability:.2f})", dim=True)
    if ev.type == "stats":
        return style(
            f"[{ev.t:8.1f}s] · {ev.chunks} chunks, decision p50 {ev.decision_p50_ms:.0f} ms / "
            f"p99 {ev.decision_p99_ms:.0f} ms, queued {ev.queued}, overruns {ev.overruns}, "
            f"cache {ev.cache_entries} ({ev.cache_evictions} evictions)",
            dim=True,
        )
    if ev.type == "summary":
        faults = [
            f"{name} {value}"
            for name, value in (
                ("input overflows", ev.input_overflows),
                ("input gaps", ev.input_gaps),
                ("reconnects", ev.reconnects),
                ("non-finite samples", ev.nonfinite_samples),
                ("state resets", ev.state_resets),
            )
            if value
        ]
        return style(
            f"done: {ev.t:.1f} s of audio in {ev.wall_s:.1f} s, {ev.chunks} chunks, "
            f"{ev.responses} responses ({ev.suppressed} suppressed), overruns {ev.overruns}, "
            f"stalls {ev.stalls}, decision latency p50 {ev.decision_p50_ms:.1f} ms "
            f"p99 {ev.decision_p99_ms:.1f} ms ({ev.scheduling})"
            + "".join(f", {f}" for f in faults),
            bold=True,
        )
    if ev.type in ("error", "warning", "info"):
        colour = {"error": "red", "warning": "yellow", "info": "green"}[ev.type]
        return style(f"[{ev.t:8.1f}s] {ev.type}: {ev.text}", fg=colour)
    return None


# What write_event returns when stdout's reader went away (`listen ... | head`): a normal end.
PIPE_CLOSED = "stdout was closed by its reader"


def write_event(out: Out, ev, jsonl: bool, color: bool) -> str | None:
    """Write one event; on failure return the one-line reason (nothing is retried), or
    PIPE_CLOSED."""
    try:
        text = json.dumps(ev.to_json(), ensure_ascii=False) if jsonl else human_line(ev, color)
        if text is not None:
            out.line(text)
    except OSError as e:
        if e.errno == errno.EPIPE:  # BrokenPipeError
            return PIPE_CLOSED
        what = "disk full" if e.errno == errno.ENOSPC else e.strerror or str(e)
        return (
            f"cannot write output ({what}); every line before this one was written: "
            "free space or redirect to another disk"
        )
    return None


def quiet_stdout() -> None:
    """After the reader closed stdout: point it at /dev/null, so that nothing flushed at exit
    fails again (Python's documented way to end on a broken pipe)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (CliRunner)
        pass


def stopped_summary(why: str, mode: str | None, wall_s: float, scheduling: str, loop=None, **extra):
    """The summary of a run stopped before its loop wrote one: during model load (no
    loop, no audio), or by a third stop request (what the loop had counted by then)."""
    from soundflow.runtime.events import LatencyStats, Summary

    n = loop.chunks if loop is not None else 0
    t = n * loop.chunk_s if loop is not None else 0.0
    decision = loop.decision_ms if loop is not None else LatencyStats(1)
    first_token = loop.first_token_ms if loop is not None else LatencyStats(1)
    source = loop.source if loop is not None else None
    return Summary(
        t=t,
        chunks=n,
        responses=loop.responses if loop is not None else 0,
        suppressed=loop.suppressed if loop is not None else 0,
        overruns=getattr(source, "overruns", 0),
        overrun_samples=getattr(source, "overrun_samples", 0),
        stalls=loop.stalls if loop is not None else 0,
        decision_p50_ms=decision.percentile(50),
        decision_p99_ms=decision.percentile(99),
        decision_mean_ms=decision.mean(),
        first_token_p50_ms=first_token.percentile(50),
        wall_s=wall_s,
        realtime_factor=t / wall_s if wall_s > 0 else 0.0,
        cache_evictions=loop.decoder.cache.evictions if loop is not None else 0,
        mode=mode or "",
        scheduling=scheduling,
        interrupted=True,
        text=why,
        extra=extra,
    )


def exit_now(out: Out, summary, jsonl: bool, color: bool) -> None:
    """Write `summary` and end the process at once, exit 0. os._exit: a thread may be inside
    ONNX Runtime, and a normal exit there aborts in its destructors (exit 134)."""
    click.echo(summary.text, err=True)
    write_event(out, summary, jsonl, color)
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(0)


def source_flags(input_, device, demo, realtime) -> tuple[bool, bool]:
    """(stdin?, realtime?) from listen's source flags, local or with --server: one source at
    most; a pipe on stdin is live unless redirected from a file, everything else is paced."""
    from soundflow.runtime.sources import stdin_is_live

    if sum(x is not None and x is not False for x in (input_, device, demo or None)) > 1:
        raise click.UsageError("give at most one of --input, --device and --demo")
    is_stdin = input_ == "-"
    if realtime is None:
        realtime = stdin_is_live(sys.stdin.buffer) if is_stdin else True
    return is_stdin, realtime
