"""The `soundflow` command: a thin click layer over the library.

Each subcommand lives in its own module and is imported only when it runs, so
`soundflow listen` never pays for torch and `--help` stays fast.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import os
import select
import sys

import click

from soundflow import __version__
from soundflow.cli import signals

# command name -> (module under soundflow.cli, attribute, one-line help)
COMMANDS = {
    "data": ("data_cmd", "data", "Build and inspect SoundFlow training streams."),
    "train": ("train_cmd", "train", "Train a model from a recipe."),
    "export": ("export_cmd", "export", "Export a checkpoint to an ONNX bundle, or check one."),
    "listen": ("listen_cmd", "listen", "Run a bundle on a microphone, a file or stdin."),
    "devices": ("listen_cmd", "devices", "List audio input devices."),
    "eval": ("eval_cmd", "eval_", "Score a bundle on an eval split through the runtime."),
    "calibrate": ("calibrate_cmd", "calibrate", "Per-label alert thresholds from a dev split."),
    "tagger": ("tagger_cmd", "tagger", "Add an alert tagger to a Whisper-based bundle."),
    "labels": ("labels_cmd", "labels", "List a bundle's alert labels (and AudioSet classes)."),
    "serve": ("serve_cmd", "serve", "Serve many live streams over WebSocket from one engine."),
    "bench": ("bench_cmd", "bench", "Benchmarks: latency, scale, size, peer, alerts, soak, serve."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._available(name))

    def _available(self, name: str) -> bool:
        module, _, _ = COMMANDS[name]
        return importlib.util.find_spec(f"soundflow.cli.{module}") is not None

    def main(self, args=None, *rest, **kwargs):
        if args is None:  # the program, reading sys.argv (a CliRunner passes its args)
            signals.hold_until_exit()
        try:
            return super().main(args, *rest, **kwargs)
        finally:
            if args is None:
                signals.ignore_from_now()

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] == "listen":
            # Before listen's imports: a Ctrl-C or SIGTERM at any moment is counted, never
            # a KeyboardInterrupt (cli/signals.py).
            signals.catch()
        return super().resolve_command(ctx, args)

    def make_context(self, *args, **kwargs) -> click.Context:
        try:  # `soundflow --help | head`: the help is written here
            return super().make_context(*args, **kwargs)
        except OSError as e:
            _end_if_reader_gone(e)
            raise

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OSError as e:
            _end_if_reader_gone(e)
            raise
        finally:
            signals.release()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"soundflow.cli.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help from the table, so listing commands imports none of them.
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _end_if_reader_gone(err: OSError) -> None:
    """`soundflow labels | head`: stdout's reader went away, a normal end (exit 0, nothing
    on stderr), as `listen` has it; click alone would exit 1. Only where stdout itself is
    a pipe with no reader left, so an EPIPE of a socket keeps its error."""
    if err.errno != errno.EPIPE:
        return
    try:
        fd = sys.__stdout__.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if not any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0)):
            return
        # What is still buffered would fail again at exit ("Exception ignored ...").
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    except (AttributeError, OSError, ValueError):  # no stdout, or no poll (Windows)
        return
    raise click.exceptions.Exit(0)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="soundflow")
def cli() -> None:
    """soundflow: an always-on streaming audio model and its edge runtime.

    \b
    Quick start (no microphone needed):
      soundflow listen --demo
    """


if __name__ == "__main__":
    cli()
