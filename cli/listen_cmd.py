"""`soundflow listen` and `soundflow devices`: a thin layer over `soundflow.Listener`."""

from __future__ import annotations

import json
import sys
import threading
import time

import click

from soundflow.audio import SAMPLE_RATE
from soundflow.cli import signals
from soundflow.cli.listen_output import (  # noqa: F401  (importable from here too)
    PIPE_CLOSED,
    Out,
    exit_now,
    human_line,
    quiet_stdout,
    source_flags,
    stopped_summary,
    use_color,
    write_event,
)
from soundflow.cli.params import LISTEN_FLAGS, runtime_flags, runtime_options
from soundflow.manifest import BundleError


def _load(fn, stops: signals.Stops, quit_now):
    """fn() (the model load) on a thread while this one keeps count of stop requests: those
    wait for the load to return, a third calls quit_now() at once."""
    result: list = []

    def run() -> None:
        try:
            result.append((True, fn()))
        except BaseException as e:  # noqa: BLE001 - raised again on the calling thread
            result.append((False, e))

    thread = threading.Thread(target=run, name="soundflow-load", daemon=True)
    thread.start()
    told = 0
    while thread.is_alive():
        thread.join(0.1)
        if stops.count > told:
            told = stops.count
            if told >= 3:
                quit_now()
            click.echo(
                f"{stops.names[-1]} while the model loads: stopping once it is loaded "
                "(a third time: now)",
                err=True,
            )
    ok, value = result[0]
    if not ok:
        raise value
    return value


@click.command()
@click.option(
    "--input",
    "-i",
    "input_",
    metavar="FILE|-",
    help="Audio file (wav/flac/ogg, any rate), or - for stdin: WAV, FLAC or Ogg there are "
    "recognised by their header, MP3 and Matroska refused (convert them with ffmpeg), "
    "anything else read as raw PCM (see --raw-format).",
)
@click.option(
    "--device", "-d", metavar="ID", help="Microphone by index or name (see `soundflow devices`)."
)
@click.option(
    "--demo", is_flag=True, help="Play the bundled demo stream through the default bundle."
)
@click.option(
    "--bundle", "-b", type=click.Path(), help="Bundle directory (default: the embedded default)."
)
@runtime_flags(*LISTEN_FLAGS[0])
@click.option("--jsonl", is_flag=True, help="One JSON object per event on stdout, then a summary.")
@runtime_flags(*LISTEN_FLAGS[1])
@click.option("--int8", is_flag=True, help="Use the bundle's int8 graphs.")
@runtime_flags(*LISTEN_FLAGS[2])
@click.option(
    "--raw-format",
    type=click.Choice(["s16le", "f32le"]),
    default="s16le",
    show_default=True,
    help="Raw PCM on stdin: sample format.",
)
@click.option(
    "--raw-rate",
    type=int,
    default=SAMPLE_RATE,
    show_default=True,
    help="Raw PCM on stdin: sample rate.",
)
@click.option(
    "--raw-channels", type=int, default=1, show_default=True, help="Raw PCM on stdin: channels."
)
@runtime_flags(*LISTEN_FLAGS[3])
@click.option(
    "--record",
    type=click.Path(dir_okay=False),
    help="Also write the audio as the model read it to this WAV file (16 kHz, in stream time).",
)
@click.option(
    "--server",
    metavar="URL",
    help="Send the audio to a `soundflow serve` server (ws://HOST:PORT) and print its events.",
)
@click.option(
    "--token", default=None, help="The server's token (with --server; default: $SOUNDFLOW_TOKEN)."
)
def listen(**opts) -> None:
    """Listen to a microphone, a file or stdin and print responses as they happen.

    \b
    Examples:
      soundflow listen --demo
      soundflow listen --input kitchen.wav --fast --jsonl > events.jsonl
      arecord -f S16_LE -r 16000 -c 1 -t raw | soundflow listen --input -
      soundflow listen --device 2 --mode alert
      soundflow listen --server ws://127.0.0.1:8765 --input kitchen.wav

    \b
    Modes (--mode): transcribe  live captions
                    alert       a response when a sound is worth an alert
                    assist      answers to instructions spoken to the device

    Ctrl-C or SIGTERM stops capturing and still reports the audio already captured (the
    summary is written, exit 0); a second drops the audio not yet decided, a third quits at
    once (still a summary line, exit 0), and one during model load stops once it is loaded.
    A closed stdout (`| head`) ends quietly, exit 0. Errors, a microphone that does not come
    back after --reconnect-tries, and a live stdin producer that ends, exit non-zero.
    """
    # Ctrl-C, SIGTERM (systemd, `docker stop`) and repeats are counted from before this
    # module was imported (cli/main.py), never raised: the loops below act on the count.
    stops = signals.catch()
    try:
        _listen(stops=stops, **opts)
    finally:
        signals.release()


def _listen(
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
    record=None,
    server=None,
    token=None,
) -> None:
    """`flags`: the run-time flags by flat RuntimeOptions name (cli/params.py)."""
    if (flags["alert_only"] or flags["alert_classes"]) and flags["mode"] is None:
        flags = {**flags, "mode": "alert"}  # the flags only mean something there
    if server:
        from soundflow.cli.listen_remote import listen_remote

        if flags["alert_only"] or flags["alert_classes"] or record:
            raise click.UsageError(
                "--only, --alert-class and --record run locally, not with --server"
            )
        return listen_remote(
            **{k: v for k, v in locals().items() if k not in ("listen_remote", "record")}
        )
    from soundflow.runtime.kinds import open_engine
    from soundflow.runtime.listener import Listener
    from soundflow.runtime.sources import SourceError, array_source, stdin_source

    is_stdin, realtime = source_flags(input_, device, demo, flags["realtime"])
    options = runtime_options(flags, realtime=realtime)
    mode, sync = options.decision.mode, not options.engine.asynchronous
    started = time.monotonic()
    out = Out(sys.stdout)
    color = use_color() and not jsonl

    def load() -> Listener:
        engine = open_engine(bundle, options, variant="int8" if int8 else "fp32")
        source = input_
        if demo:
            from soundflow.runtime.demo import find_demo_file, procedural_demo

            found = find_demo_file(engine.spec.path)
            source = (
                str(found)
                if found
                else array_source(procedural_demo(), engine.spec.sample_rate, realtime)
            )
        elif is_stdin:
            source = stdin_source(raw_format, raw_rate, raw_channels, realtime)
        return Listener(engine, input=source, device=device, options=options, record=record)

    wanted = input_ or (f"microphone {device}" if device is not None else "default microphone")
    wanted = "demo" if demo else "stdin" if is_stdin else wanted

    def stopped(why: str, mode_: str | None, loop=None):
        return stopped_summary(
            why,
            mode_,
            time.monotonic() - started,
            "sync" if sync else "async",
            loop,
            source=loop.source.name if loop is not None else str(wanted),
            realtime=realtime,
        )

    try:
        listener = _load(
            load,
            stops,
            lambda: exit_now(
                out, stopped("stopped three times during model load", mode), jsonl, color
            ),
        )
        if stops.count:  # asked to stop while loading: no audio was read
            write_event(out, stopped("stopped during model load", listener.mode), jsonl, color)
            return
        listener.start()
    except (BundleError, SourceError) as e:
        raise click.ClickException(str(e)) from None

    spec = listener.engine.spec
    src = listener.loop.source.name
    warn = "" if spec.trained else "  [UNTRAINED smoke model: responses are placeholders]"
    click.echo(
        f"soundflow listen · bundle {spec.path} · {spec.label} · mode {listener.mode} · "
        f"{src} · {'realtime' if realtime else 'fast'} · {listener.engine.provider}{warn}",
        err=True,
    )
    click.echo("listening (Ctrl-C or SIGTERM to stop)", err=True)
    sys.stdout.flush()
    write_error: str | None = None
    summary = None
    pending = None  # an event taken from the listener but not yet written
    stopped_at: float | None = None  # when a stop was asked for (a signal, a closed stdout)
    handled = 0  # stop requests acted on
    while summary is None:
        while handled < stops.count:
            handled += 1
            name = stops.names[handled - 1]
            if handled >= 3:
                why = f"{name} a third time: quit before the audio captured was decided"
                exit_now(out, stopped(why, listener.mode, listener.loop), jsonl, color)
            click.echo(
                f"{name}: stopping, reporting the audio already captured (again: drop the "
                "audio not yet decided; a third time: quit now)"
                if handled == 1
                else f"{name} again: dropping the audio not yet decided",
                err=True,
            )
            stopped_at = stopped_at or time.monotonic()
            listener.stop()  # the first stops capturing, the second drops the queue too
        if stopped_at is not None and time.monotonic() - stopped_at > 20:
            why = "the listener did not stop within 20 s of being asked (a read is blocked)"
            if handled:  # asked by a signal: its summary, exit 0, whatever is blocked
                exit_now(out, stopped(why, listener.mode, listener.loop), jsonl, color)
            raise click.ClickException(f"{why}; exiting without a summary")
        if stopped_at is not None and time.monotonic() - stopped_at > 5:
            listener.stop()  # a second stop abandons queued audio and blocked reads
        if pending is None:
            pending = listener.next_event(timeout=0.1)
            if pending is None:
                continue
        if write_error is None:
            write_error = write_event(out, pending, jsonl, color)
            if write_error is PIPE_CLOSED:  # nobody reads on: decide nothing more
                stopped_at = stopped_at or time.monotonic()
                listener.stop()
                listener.stop()
            elif write_error:
                listener.stop()
        if pending.type == "summary":
            summary = pending
        pending = None
    listener.wait()
    if write_error is PIPE_CLOSED:
        quiet_stdout()
    elif write_error:
        raise click.ClickException(write_error)
    if summary.error:
        raise click.ClickException(summary.error)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def devices(as_json: bool) -> None:
    """List audio input devices (for `soundflow listen --device ID`)."""
    from soundflow.runtime.mic import list_input_devices
    from soundflow.runtime.sources import SourceError

    try:
        found = list_input_devices()
    except SourceError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo("no input devices found")
    for d in found:
        star = "*" if d["default"] else " "
        click.echo(
            f"{star}{d['index']:3d}  {d['name']}  ({d['hostapi']}, {d['channels']} ch, {d['samplerate']} Hz)"
        )
