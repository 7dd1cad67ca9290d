"""`soundflow serve`: many live streams over WebSocket from one engine (runtime/serve/)."""

from __future__ import annotations

import os
import sys

import click

from soundflow.cli.params import CAPTION_BUDGET_HELP, runtime_flags, runtime_options
from soundflow.manifest import BundleError


@click.command()
@click.option(
    "--bundle", "-b", type=click.Path(), help="Bundle directory (default: the embedded default)."
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; anything but loopback needs --token.",
)
@click.option(
    "--port",
    type=int,
    default=8765,
    show_default=True,
    help="TCP port (0: any free port, printed).",
)
@click.option(
    "--max-streams",
    type=int,
    default=64,
    show_default=True,
    help="Open streams; more are refused (close 1013).",
)
@click.option(
    "--token",
    default=None,
    help="Shared secret clients send in their hello (compared in constant time). Default: $SOUNDFLOW_TOKEN.",
)
@click.option(
    "--batch",
    type=click.Choice(["off", "encoder", "full"]),
    default="off",
    show_default=True,
    help="Batch the encoder calls of streams with a chunk ready (encoder), also their decision steps (full), or neither (off).",
)
@click.option(
    "--max-wait-ms",
    type=float,
    default=20.0,
    show_default=True,
    help="Longest wait for other streams' chunks before a batch (--batch encoder or full).",
)
@click.option(
    "--max-frame-kb",
    type=int,
    default=256,
    show_default=True,
    help="Largest binary frame; bigger ones close the stream (1009).",
)
@click.option(
    "--buffer",
    "buffer_s",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds of audio buffered per live stream before the oldest is dropped.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Worker threads, each driving its own streams over the one engine "
    "(0: one per core). ONNX Runtime threads default to cores / workers.",
)
@runtime_flags(
    "threads",
    "provider",
    helps={"threads": "Intra-op threads per ONNX session (default: cores / workers)."},
)
@click.option("--int8", is_flag=True, help="Use the bundle's int8 graphs.")
@runtime_flags(
    "caption_budget_ms",
    "caption_hop",
    helps={
        "caption_budget_ms": CAPTION_BUDGET_HELP
        + " A stream's hello may set its own. Streams share the server's loop, so a deadline "
        "counted from each chunk's arrival leaves the later streams of a busy server less of it."
    },
)
@click.option(
    "--ray",
    "use_ray",
    is_flag=True,
    help="Serve through Ray Serve on a local Ray cluster: --replicas processes, each with "
    "its own engine and streams, behind Ray's proxy (needs: pip install 'soundflow[ray]').",
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="With --ray: replicas (engines); Ray restarts one that dies or fails its health check.",
)
@click.option(
    "--max-replicas",
    type=click.IntRange(min=1),
    default=None,
    help="With --ray: let Ray's autoscaler add replicas up to this many, aiming at "
    "--target-streams streams each (default: a fixed --replicas).",
)
@click.option(
    "--target-streams",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="With --ray --max-replicas: streams per replica the autoscaler aims at.",
)
@click.option(
    "--adaptive-hop/--fixed-hop",
    default=True,
    show_default=True,
    help="A worker busy more than 85 % of the time reads its live caption streams every "
    "second chunk (staggered; the chunks between are not encoded) until it is below 40 %: "
    "about twice the streams, at hop 2's words; each stream gets a caption_hop notice. "
    "--fixed-hop keeps every stream at its own hop (a hello's caption_hop always wins).",
)
@click.option("--quiet", "-q", is_flag=True, help="No per-connection log lines on stderr.")
def serve(
    bundle,
    host,
    port,
    max_streams,
    token,
    batch,
    max_wait_ms,
    max_frame_kb,
    buffer_s,
    workers,
    int8,
    use_ray,
    replicas,
    max_replicas,
    target_streams,
    adaptive_hop,
    quiet,
    flags,
) -> None:
    """Serve live streams over WebSocket: one engine, one state per connection.

    \b
    A connection sends a JSON hello, then binary PCM frames of any size, then
    {"type": "end"}; it receives the events of `listen --jsonl` and a summary.
    README.md ("Serve") documents the protocol.

    \b
    Examples:
      soundflow serve                                   # ws://127.0.0.1:8765
      soundflow serve --host 0.0.0.0 --token "$(openssl rand -hex 16)"
      soundflow listen --server ws://127.0.0.1:8765 --input talk.wav
      soundflow serve --ray --replicas 2                # Ray Serve (docs/deploy.md)

    SIGTERM or Ctrl-C stops accepting, decides the audio every open stream has sent,
    sends each its summary (close 1001) and exits 0.
    """
    try:
        import websockets  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "soundflow serve needs the WebSocket library: pip install 'soundflow[serve]'"
        ) from None
    from soundflow.runtime.kinds import open_engine
    from soundflow.runtime.serve import ServerConfig, run_server

    token = token or os.environ.get("SOUNDFLOW_TOKEN") or None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    threads = flags["threads"]
    if use_ray:  # the replicas are the parallelism: one worker each, cores split among them
        workers = workers or 1
        threads = threads or max(1, cores // (replicas * workers))
    workers = workers or cores
    threads = threads or max(1, cores // workers)  # workers x threads = cores
    try:
        config = ServerConfig(
            host=host,
            port=port,
            max_streams=max_streams,
            token=token,
            batch=batch,
            max_wait_ms=max_wait_ms,
            max_frame_bytes=max_frame_kb * 1024,
            buffer_s=buffer_s,
            workers=workers,
            adaptive_hop=adaptive_hop,
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    options = runtime_options(flags, threads=threads, asynchronous=False)
    if use_ray:
        _serve_ray(
            bundle,
            options,
            "int8" if int8 else "fp32",
            config,
            cores,
            quiet,
            (replicas, max_replicas, target_streams),
        )
        return
    try:
        engine = open_engine(bundle, options, variant="int8" if int8 else "fp32")
    except BundleError as e:
        raise click.ClickException(str(e)) from None

    def log(msg: str) -> None:
        if not quiet:
            click.echo(f"soundflow serve: {msg}", err=True)

    def ready(server) -> None:
        spec = engine.spec
        click.echo(
            f"soundflow serve · bundle {spec.path} · {spec.label} · {engine.provider} · "
            f"batch {batch} · {workers} worker(s) x {threads} thread(s) · max {max_streams} "
            "streams" + (" · token required" if token else ""),
            err=True,
        )
        # One line on stdout with the address, for scripts (--port 0 picks a free port).
        click.echo(f"listening on ws://{host}:{server.port}")
        sys.stdout.flush()

    try:
        run_server(engine, config, log=log, on_ready=ready)
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _serve_ray(bundle, options, variant, config, cores, quiet, scaling) -> None:
    """`serve --ray`: the replicas open the engine; this process runs the Ray cluster."""
    import socket
    from pathlib import Path

    from soundflow.runtime.bundle import load_spec

    try:
        from soundflow.runtime.serve import ray_app
    except ImportError as e:
        raise click.ClickException(
            f"soundflow serve --ray needs Ray Serve ({e}): pip install 'soundflow[ray]'"
        ) from None
    replicas, max_replicas, target_streams = scaling
    bundle = str(Path(bundle).resolve()) if bundle else None  # replicas run elsewhere
    try:
        load_spec(bundle, variant=variant)  # a bad bundle fails here, not in every replica
        scale = ray_app.RayOptions(
            replicas=replicas,
            max_replicas=max_replicas,
            target_streams=target_streams,
            cpus_per_replica=cores / max(replicas, max_replicas or 0),  # all fit this machine
        )
    except BundleError as e:
        raise click.ClickException(str(e)) from None
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    port = config.port
    if port == 0:  # Ray's proxy cannot report the port it got: pick a free one here
        with socket.socket() as s:
            s.bind((config.host, 0))
            port = s.getsockname()[1]
    app = ray_app.application(bundle, options=options, variant=variant, config=config, scale=scale)

    def ready() -> None:
        click.echo(
            f"soundflow serve --ray · {replicas}"
            + (f"-{max_replicas}" if max_replicas else "")
            + f" replica(s) x {config.workers} worker(s) x {options.engine.threads} thread(s) · "
            f"max {config.max_streams} streams a replica"
            + (" · token required" if config.token else ""),
            err=True,
        )
        click.echo(f"listening on ws://{config.host}:{port}")
        sys.stdout.flush()

    try:
        ray_app.run_local(
            app, config.host, port, num_cpus=cores, log_to_driver=not quiet, on_ready=ready
        )
    except RuntimeError as e:  # Ray's own: a port taken, a cluster that did not start
        raise click.ClickException(f"Ray Serve did not start: {_first(e)}") from None


def _first(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
