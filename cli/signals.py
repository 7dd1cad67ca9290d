"""SIGINT and SIGTERM for `soundflow listen`: counted, never raised.

Ctrl-C, `timeout -s INT`, systemd and `docker stop` all mean "stop and report". The
handler only counts, so no KeyboardInterrupt ever interrupts a model load, a write or a
join half-way, and none reaches click (which would print `Aborted!` and exit 1); the
listen loop reads the count and acts on it: the first stops capturing, the second drops
the audio not yet decided, the third exits at once. All of them end with a summary line
and exit 0.

`soundflow listen` counts from before its module is imported (cli/main.py), so a signal
during start-up or model load is counted like any other.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stops:
    """The stop requests received so far, in order (signal names)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    @property
    def count(self) -> int:
        return len(self.names)

    def __call__(self, signum: int, frame: object = None) -> None:
        self.names.append(signal.Signals(signum).name)


_installed: tuple[Stops, dict[int, object]] | None = None
_held = False  # the `soundflow` program itself: counting lasts until the process exits


def catch() -> Stops:
    """Count SIGINT and SIGTERM from now on (the handlers of the main thread only: in any
    other thread the returned Stops never counts, as signals never reach it there)."""
    global _installed
    if _installed is not None:
        return _installed[0]
    stops = Stops()
    if threading.current_thread() is threading.main_thread():
        _installed = (stops, {s: signal.signal(s, stops) for s in SIGNALS})
    return stops


def hold_until_exit() -> None:
    """The process is the `soundflow` program: keep counting after the command returns,
    so a signal that comes after the summary (a second Ctrl-C, a supervisor's SIGTERM as
    the process exits) cannot turn its exit 0 into a KeyboardInterrupt."""
    global _held
    _held = True


def ignore_from_now() -> None:
    """The program is exiting after a listen: ignore any further stop request. SIG_IGN, not
    the counter, because Python's finalization puts a Python handler back to the default
    action (death by the signal) but leaves an ignored signal ignored."""
    if _installed is not None:
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)


def release() -> None:
    """Put back the handlers `catch` replaced, unless held: a CliRunner test shares its
    runner's process, whose own Ctrl-C must work again."""
    global _installed
    if _installed is None or _held:
        return
    _, old = _installed
    _installed = None
    for s, handler in old.items():
        signal.signal(s, handler)
