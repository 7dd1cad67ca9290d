"""`soundflow bench`: the benchmarks behind benchmarks/README.md, one command each."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from soundflow.cli.params import CAPTION_HOP_HELP, caption_budget

BUNDLE = click.option(
    "--bundle",
    type=click.Path(path_type=Path),
    default=None,
    help="Bundle directory (default: the embedded default bundle).",
)
JSON = click.option(
    "--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write results here."
)
PNG = click.option(
    "--png/--no-png", default=True, help="Also write a plot next to --json (needs matplotlib)."
)
INT8 = click.option("--int8", is_flag=True, help="Run the bundle's int8 graphs.")
CAPTION_BUDGET = caption_budget()
THREADS = click.option(
    "--threads", type=int, default=None, help="ONNX Runtime threads per session."
)


def _finish(result: dict, json_out: Path | None, png: bool, plot=None) -> dict:
    from soundflow.benchmarks.common import write_json

    result = write_json(json_out, result)
    if json_out and png and plot is not None:
        path = json_out.with_suffix(".png")
        if plot(result, path):
            click.echo(f"plot written to {path}")
    if json_out:
        click.echo(f"results written to {json_out}")
    return result


def _run(fn, *args):
    from soundflow.manifest import BundleError

    try:
        return fn(*args)
    except (BundleError, RuntimeError, ValueError) as e:
        raise click.ClickException(str(e)) from None


def _stderr(line: str) -> None:
    """Progress lines: on stderr, so stdout keeps the results alone."""
    click.echo(line, err=True)


def _row(name: str, d: dict, keys: tuple[str, ...]) -> str:
    return f"{name:8s} " + "  ".join(f"{k}={d.get(k)}" for k in keys)


@click.group()
def bench() -> None:
    """Benchmarks: latency, scale, size, peer, alerts, soak, serve. Each writes JSON with
    --json FILE.

    \b
    Example:
      soundflow bench latency --seconds 60 --json benchmarks/results/latency.json
    """


@bench.command()
@BUNDLE
@click.option("--seconds", type=float, default=60.0, show_default=True, help="Stream per mode.")
@click.option("--mode", default=None, help="Task prompt (default: the bundle's first).")
@click.option("--threshold", type=float, default=None, help="Decision threshold override.")
@click.option("--max-tokens", type=int, default=None, help="Max response tokens override.")
@click.option(
    "--input",
    "input_",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Stream this audio file (its first SECONDS, looped if shorter) instead of the "
    "synthetic tones and noise, e.g. speech for transcribe mode.",
)
@click.option(
    "--speech-gate/--no-speech-gate",
    default=True,
    show_default=True,
    help="Transcribe mode: skip the readings the bundle's speech gate heard no speech in.",
)
@click.option(
    "--caption-calls",
    type=click.IntRange(min=0),
    default=None,
    help="Transcribe mode: decoder calls per chunk a window reading may make (default: the "
    "manifest's; 0: no bound).",
)
@CAPTION_BUDGET
@INT8
@THREADS
@JSON
@PNG
def latency(
    bundle,
    seconds,
    mode,
    threshold,
    max_tokens,
    input_,
    speech_gate,
    caption_calls,
    caption_budget_ms,
    int8,
    threads,
    json_out,
    png,
):
    """Real-time-paced stream, FIFO then synchronous scheduling: decision and first-token
    latency, stalls, overruns, CPU and RSS. Takes 2 x SECONDS of wall time.

    \b
    Examples:
      soundflow bench latency --seconds 60 --json /tmp/latency.json
      soundflow bench latency --input soundflow/assets/demo.flac --mode transcribe
    """
    from soundflow.benchmarks import latency as lat

    opts = lat.LatencyOptions(
        seconds=seconds,
        mode=mode,
        variant="int8" if int8 else "fp32",
        threads=threads,
        threshold=threshold,
        max_response_tokens=max_tokens,
        input=str(input_) if input_ else None,
        speech_gate=speech_gate,
        caption_calls=caption_calls,
        caption_budget_ms=caption_budget_ms,
    )
    result = _finish(lat.strip(_run(lat.run, bundle, opts)), json_out, png, lat.plot)
    keys = ("decision_ms_p50", "decision_ms_p99", "first_token_ms_p50", "stall_rate", "overruns")
    for k in ("fifo", "sync"):
        click.echo(_row(k, result[k], (*keys, "cpu_percent", "rss_mb")))


@bench.command()
@BUNDLE
@click.option("--minutes", type=float, default=60.0, show_default=True, help="Stream length.")
@click.option("--mode", default=None, help="Task prompt (default: the bundle's first).")
@click.option(
    "--recompute-max-tokens",
    type=int,
    default=4096,
    show_default=True,
    help="Stop the recompute baseline beyond this context (its memory grows as tokens^2).",
)
@INT8
@THREADS
@JSON
@PNG
def scale(bundle, minutes, mode, recompute_max_tokens, int8, threads, json_out, png):
    """Per-chunk cost from the first minute to the last (fast mode): the cached runtime
    against recomputing the whole context every chunk, and two KV-cache layouts.

    \b
    Example:
      soundflow bench scale --minutes 60 --json /tmp/scale.json
    """
    from soundflow.benchmarks import scale as sc

    opts = sc.ScaleOptions(
        minutes=minutes,
        mode=mode,
        variant="int8" if int8 else "fp32",
        threads=threads,
        recompute_max_tokens=recompute_max_tokens,
    )
    result = _finish(_run(sc.run, bundle, opts), json_out, png, sc.plot)
    for k in ("cached", "recompute"):
        d = result[k]
        if "skipped" in d:
            click.echo(f"{k:9s} skipped: {d['skipped']}")
            continue
        first, last = (d["per_chunk_ms"] or [None])[0], (d["per_chunk_ms"] or [None])[-1]
        click.echo(
            f"{k:9s} {first} ms at {d['minutes'][0] if d['minutes'] else '-'} min -> {last} ms "
            f"at {d['minutes'][-1] if d['minutes'] else '-'} min (ratio {d['end_to_start_ratio']})"
        )


@bench.command()
@click.option(
    "--sizes", default="tiny,qwen2-0.5b", show_default=True, help="Comma-separated decoder sizes."
)
@click.option(
    "--work",
    type=click.Path(path_type=Path),
    default=Path("/tmp/soundflow-bench-size"),
    show_default=True,
    help="Where random-weight checkpoints and bundles are built (reused when present).",
)
@click.option("--vocab", type=int, default=32_768, show_default=True, help="Decoder vocabulary.")
@click.option("--seconds", type=float, default=20.0, show_default=True, help="Stream per variant.")
@click.option("--tokens", type=int, default=32, show_default=True, help="Decode steps timed.")
@click.option("--no-int8", is_flag=True, help="Skip the int8 variant.")
@THREADS
@JSON
def size(sizes, work, vocab, seconds, tokens, no_int8, threads, json_out):
    """Random-weight decoders of real sizes (a Qwen2-0.5B-sized one by default), exported
    and run through the runtime: tokens/s, decision latency, memory, runtime overhead.
    Needs the `train` extra (torch) to build the bundles.

    \b
    Example:
      soundflow bench size --sizes tiny,qwen2-0.5b --json /tmp/size.json
    """
    from soundflow.benchmarks import size as sz
    from soundflow.cli.extras import train_extra

    opts = sz.SizeOptions(
        sizes=tuple(s.strip() for s in sizes.split(",") if s.strip()),
        work=str(work),
        vocab=vocab,
        seconds=seconds,
        tokens=tokens,
        threads=threads,
        int8=not no_int8,
    )
    with train_extra("bench size"):  # torch builds the random-weight bundles
        result = _finish(_run(sz.run, opts, click.echo), json_out, False)
    keys = ("decode_tokens_per_s", "decision_ms_p50", "decision_ms_p99", "rss_mb_loaded")
    for name, entry in result["sizes"].items():
        for variant, d in entry["variants"].items():
            click.echo(_row(f"{name}/{variant}", d, (*keys, "overhead_percent")))


@bench.command()
@BUNDLE
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="Eval split from `soundflow data build --split eval` (the `eval` set).",
)
@click.option(
    "--sets",
    default=None,
    metavar="NAMES",
    help="Comma-separated sets: eval, tuxpaint, flite (default: all available; "
    "eval needs --data). A set whose source is missing is skipped with its reason.",
)
@click.option("--max-streams", type=int, default=None, help="Use only the first N streams per set.")
@click.option(
    "--whisper/--no-whisper",
    default=True,
    show_default=True,
    help="Also score Whisper tiny.en itself on whole utterances, offline (held-out sets; "
    "needs the train extra): the reference a streaming model built on it aims at.",
)
@click.option("--caption-hop", type=click.IntRange(1, 4), default=None, help=CAPTION_HOP_HELP)
@INT8
@THREADS
@JSON
def peer(bundle, data, sets, max_streams, whisper, caption_hop, int8, threads, json_out):
    """soundflow's transcribe mode against pocketsphinx on the same speech streams, per set:
    WER, utterances, words, real-time factor, per-chunk latency. Sets: `eval` (a synthetic
    eval split, --data), `tuxpaint` (real human speech: Tux Paint's English stamp
    descriptions) and `flite` (flite voices rms and awb); the last two are held out of
    training (train/heldout.py). Needs `pip install 'soundflow[bench]'`.

    \b
    Example:
      soundflow data build --recipe default --split eval --hours 0.2 --out /tmp/eval
      soundflow bench peer --data /tmp/eval --json /tmp/peer.json
      soundflow bench peer --sets tuxpaint,flite
    """
    from soundflow.benchmarks import peer as pr

    try:
        pr.selected_sets(sets)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--sets") from None
    opts = pr.PeerOptions(
        max_streams=max_streams,
        sets=sets,
        variant="int8" if int8 else "fp32",
        threads=threads,
        offline_whisper=whisper,
        caption_hop=caption_hop,
    )
    result = _finish(_run(pr.run, bundle, data, opts), json_out, False)
    for name, reason in result["skipped"].items():
        click.echo(f"skipped {name}: {reason}")
    if not result["table"]:
        raise click.ClickException("no set could be scored")
    head = ("set", "system", "WER", "utts", "words", "RTF(x)", "chunk_p50_ms", "chunk_p99_ms")
    click.echo(f"{head[0]:9s} {head[1]:15s} " + " ".join(f"{h:>12s}" for h in head[2:]))
    for row in result["table"]:
        cells = [row[k] for k in pr.TABLE_KEYS]
        cells[0] = f"{100 * cells[0]:.1f}%" if cells[0] is not None else "-"
        click.echo(
            f"{row['set']:9s} {row['system']:15s} "
            + " ".join(f"{'-' if c is None else c!s:>12s}" for c in cells)
        )


@bench.command()
@BUNDLE
@THREADS
@click.option(
    "--benign-minutes",
    type=float,
    default=60.0,
    show_default=True,
    help="Benign real audio to run (0: none).",
)
@click.option(
    "--deciders",
    default=None,
    help="Comma-separated, of audioset,tagger,protocol (default: every one the bundle has).",
)
@click.option(
    "--event-streams",
    type=int,
    default=None,
    help="Held-out event streams to run (default: all; 0: none).",
)
@click.option(
    "--tuxpaint-sounds",
    is_flag=True,
    help="The earlier report instead: Tux Paint's sounds, and transcribe mode on them.",
)
@JSON
def alerts(bundle, threads, benign_minutes, deciders, event_streams, tuxpaint_sounds, json_out):
    """False alerts per hour, per label and decider, on an hour of benign real audio held out
    of training (Widelands' music and sounds, Minetest's, Tux Paint's and flite's speech;
    scripts/setup-heldout.sh installs them); and per label, the held-out alert events named
    within two chunks of onset and the onset latency (benchmarks/alert_heads.py's set).

    \b
    Example:
      soundflow bench alerts --json benchmarks/results/alerts_benign_hour.json
      soundflow bench alerts --benign-minutes 1 --deciders tagger --event-streams 0
    """
    from soundflow.benchmarks import alerts as al
    from soundflow.benchmarks import soak as sk  # its rule: counts, not rates, under 10 min
    from soundflow.train.heldout import SetUnavailable

    if tuxpaint_sounds:
        return _tuxpaint_sounds(bundle, threads, json_out)
    names = [d.strip() for d in deciders.split(",") if d.strip()] if deciders else None
    unknown = [d for d in names or [] if d not in al.DECIDERS]
    if unknown:
        raise click.ClickException(f"--deciders: {unknown[0]!r}; use {','.join(al.DECIDERS)}")
    try:
        result = _run(al.benign_run, bundle, threads, benign_minutes, names, event_streams, _stderr)
    except SetUnavailable as e:
        raise click.ClickException(f"held-out audio missing: {e}") from None
    result = _finish(result, json_out, False)
    if result["benign"]:
        b = result["benign"]
        click.echo(
            f"benign audio: {b['minutes']} min in {b['streams']} streams {b['seconds_by_kind']}"
        )
    for row in result["deciders"]:
        if "benign" in row:
            b, seconds = row["benign"], result["benign"]["minutes"] * 60
            if seconds >= sk.MIN_RATE_S:
                click.echo(
                    f"{row['decider']:9s} false alerts {b['false_alerts']} "
                    f"({b['false_per_hour']}/h)  per label/h {b['false_per_hour_by_label']}"
                )
            else:  # a count, not a rate, as bench soak has it
                click.echo(
                    f"{row['decider']:9s} false alerts {b['false_alerts']} in {seconds:.0f} s"
                    f"  per label {b['false_by_label']} (too short for a per-hour rate: "
                    f"--benign-minutes {sk.MIN_RATE_S / 60:.0f} or more)"
                )
        if "events" in row:
            e = row["events"]
            click.echo(
                f"{row['decider']:9s} held-out events named {e['named']}/{e['events']}"
                f"  (false on their streams {e['false_alerts']})"
            )
            for label, v in e["per_label"].items():
                lat = e["latency_chunks"].get(label)
                click.echo(
                    f"    {label:15s} {v['named']}/{v['events']}"
                    + (f"  latency median {lat['median']} chunks" if lat else "")
                )


def _tuxpaint_sounds(bundle, threads, json_out) -> None:
    """The earlier `bench alerts`: Tux Paint's stamp and interface sounds (all benign but a
    fire truck's siren) by each alert path the bundle has: benign sounds alerted on, false
    alerts per hour, alert-worthy sounds named; and the words transcribe mode captions on
    the same speechless streams (speech gate on and off)."""
    from soundflow.benchmarks import alerts as al

    result = _finish(_run(al.run, bundle, threads, 0, _stderr), json_out, False)
    click.echo(f"{result['streams']} streams, {result['hours'] * 60:.1f} min")
    for row in result["table"]:
        click.echo(
            f"{row['path']:9s} benign sounds alerted {row['benign_alerted']}/{row['benign_sounds']}"
            f"  false alerts {row['false_alerts']} ({row['false_per_hour']}/h)"
            f"  alert sounds named {row['named']}/{row['alert_sounds']}"
        )
        for a in row["alerted"]:
            click.echo(f"    {a['sound']}: {a['alert']}")
    for row in result["captions"]:  # transcribe mode on the same speechless streams
        gate = {True: "speech gate on", False: "speech gate off", None: "no speech gate"}
        click.echo(
            f"transcribe ({gate[row['speech_gate']]}): {row['words']} words captioned "
            f"({row['words_per_hour']}/h) where nobody spoke"
        )


@bench.command()
@BUNDLE
@click.option("--hours", type=float, default=8.0, show_default=True, help="Stream length.")
@click.option("--mode", default="alert", show_default=True, help="Task prompt.")
@click.option(
    "--sample-every", type=float, default=60.0, show_default=True, help="Stream s per RSS sample."
)
@INT8
@THREADS
@JSON
@PNG
def soak(bundle, hours, mode, sample_every, int8, threads, json_out, png):
    """Hours of synthetic stream in fast mode through the full runtime: RSS growth, slow
    chunks, and alert quality in the last hour against the first.

    \b
    Example:
      soundflow bench soak --hours 8 --json /tmp/soak.json
    """
    from soundflow.benchmarks import soak as sk

    opts = sk.SoakOptions(
        hours=hours,
        mode=mode,
        variant="int8" if int8 else "fp32",
        threads=threads,
        sample_every_s=sample_every,
    )
    result = _finish(_run(sk.run, bundle, opts), json_out, png, sk.plot)
    click.echo(
        json.dumps(
            {
                k: result[k]
                for k in ("rss_growth_mb", "rss_growth_after_warmup_mb", "slow_chunks", "overruns")
            }
        )
    )
    for k in ("alert_first_window", "alert_last_window"):
        w = result[k]
        row = _row(k, w, ("precision", "recall", "false_alerts"))
        if w["false_alerts_per_hour"] is not None:
            click.echo(f"{row}  false_alerts_per_hour={w['false_alerts_per_hour']}")
        else:  # a count, not a rate: one false alert in seconds is not hundreds an hour
            least = math.ceil(2 * sk.MIN_RATE_S / 36) / 100  # hours, rounded up
            click.echo(
                f"{row} in {w['to_s'] - w['from_s']:.0f} s (too short for a per-hour rate: "
                f"windows of {sk.MIN_RATE_S:.0f} s need --hours {least:.2f} or more)"
            )


@bench.command("serve")
@BUNDLE
@click.option(
    "--streams", default="1,4,16,32", show_default=True, help="Stream counts, comma-separated."
)
@click.option(
    "--seconds",
    type=float,
    default=20.0,
    show_default=True,
    help="Audio per stream (real time); at least one whole repetition of the speech (~11 s).",
)
@click.option(
    "--batch",
    "batches",
    default="off,encoder,full",
    show_default=True,
    help="Server batch modes to compare.",
)
@click.option(
    "--workers",
    "workers",
    default="1",
    show_default=True,
    help="Server worker counts to compare, comma-separated (e.g. 1,2).",
)
@click.option(
    "--mode", default="transcribe", show_default=True, help="Task prompt of every stream."
)
@THREADS
@click.option(
    "--provider",
    type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]),
    default="auto",
    show_default=True,
)
@CAPTION_BUDGET
@click.option("--caption-hop", type=click.IntRange(1, 4), default=None, help=CAPTION_HOP_HELP)
@click.option(
    "--adaptive-hop/--fixed-hop",
    default=True,
    show_default=True,
    help="The server's --adaptive-hop (a busy worker reads every second chunk) or --fixed-hop.",
)
@click.option(
    "--alerts",
    type=click.Choice(["tagger", "protocol", "audioset"]),
    default=None,
    help="Alert mode's decider for every stream (a hello option; default: the bundle's). "
    "audioset decides from the PCM alone and skips the Whisper encoder.",
)
@JSON
def serve_(
    bundle, streams, seconds, batches, workers, mode, threads, provider, caption_budget_ms,
    caption_hop, adaptive_hop, alerts, json_out,
):  # fmt: skip
    """N real-time WebSocket streams against one `soundflow serve` process, per batch mode:
    streams held at real time, decision latency p50/p99, server CPU and RSS, and in
    transcribe mode the captions' WER (pooled over the streams, and the worst stream's).

    \b
    Example:
      soundflow bench serve --streams 1,4,16,32 --json benchmarks/results/serve.json
    """
    from soundflow.benchmarks import serve as sv

    try:  # the benchmark's clients and its server both speak WebSocket
        import websockets  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "soundflow bench serve needs the WebSocket library: pip install 'soundflow[serve]'"
        ) from None
    counts = [int(x) for x in streams.split(",") if x.strip()]
    modes = [x.strip() for x in batches.split(",") if x.strip()]
    result = _finish(
        _run(
            lambda: sv.run(
                bundle,
                counts,
                seconds,
                modes,
                mode,
                threads,
                provider,
                caption_budget_ms=caption_budget_ms,
                caption_hop=caption_hop,
                adaptive_hop=adaptive_hop,
                workers=[int(x) for x in workers.split(",") if x.strip()],
                alerts=alerts,
            )
        ),
        json_out,
        False,
    )
    click.echo(sv.table(result))
