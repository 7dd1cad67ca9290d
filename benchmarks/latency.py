"""`soundflow bench latency`: real-time-paced streams through the full runtime, FIFO
(perceive + respond threads) against synchronous scheduling, in one run.

Latencies are measured on the audio clock: chunk i's audio ended at source start +
(i + 1) x chunk length, whenever the loop got round to reading it. A stall is a decision
that lands after the next chunk's audio has ended.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from soundflow.benchmarks.common import bundle_name, make_source, pct, pyplot, rss_mb, run_probe


@dataclass(frozen=True)
class LatencyOptions:
    seconds: float = 60.0  # stream length per scheduling mode (real time: this is wall time)
    mode: str | None = None  # task prompt; None = the bundle's first
    variant: str = "fp32"  # "fp32" | "int8"
    threads: int | None = None  # ORT intra-op threads per session; None = runtime default
    threshold: float | None = None  # decision threshold; None = the manifest's
    max_response_tokens: int | None = None  # None = the manifest's
    seed: int = 20_000  # first toy segment of the synthetic stream
    input: str | None = None  # an audio file to stream instead (looped to `seconds`)
    speech_gate: bool = True  # transcribe: skip readings the speech gate heard no speech in
    caption_calls: int | None = None  # transcribe: decoder calls per chunk (None: manifest's)
    caption_budget_ms: float | None = None  # transcribe: decoder ms per chunk (None: manifest's)


def file_pcm(path: str, seconds: float) -> np.ndarray:
    """The file at 16 kHz mono, looped or cut to `seconds` (a real-time run needs them all)."""
    from soundflow import audio
    from soundflow.train.heldout import read_16k

    x = read_16k(path)
    if not len(x):
        raise ValueError(f"{path}: no audio")
    n = int(seconds * audio.SAMPLE_RATE)
    return np.ascontiguousarray(np.resize(x, n), dtype=np.float32)


def measure(engine, opts: LatencyOptions, asynchronous: bool, pcm=None) -> dict:
    """One real-time run (of `pcm`, else the synthetic stream); -> the mode's figures."""
    from soundflow.runtime.options import RuntimeOptions

    runtime = RuntimeOptions.from_flags(
        mode=opts.mode,
        realtime=True,
        asynchronous=asynchronous,
        threads=opts.threads,
        threshold=opts.threshold,
        max_response_tokens=opts.max_response_tokens,
        stats_every_s=0,
        speech_gate=opts.speech_gate,
        caption_calls=opts.caption_calls,
        caption_budget_ms=opts.caption_budget_ms,
    )
    chunk_s = engine.spec.chunk_ms / 1000
    capacity = int(np.ceil(opts.seconds / chunk_s)) + 2
    source = make_source(opts.seconds, realtime=True, seed=opts.seed, pcm=pcm)
    summary, t, cpu, wall = run_probe(engine, source, runtime, capacity)
    n = t.n
    decision = t.decision[:n]
    stalls = int(np.sum(decision > chunk_s * 1e3))
    return {
        "scheduling": summary.scheduling,
        "chunks": n,
        "stream_s": round(n * chunk_s, 2),
        "decision_ms_p50": pct(decision, 50),
        "decision_ms_p99": pct(decision, 99),
        "decision_ms_max": pct(decision, 100),
        "first_chunk_decision_ms": round(float(decision[0]), 3) if n else None,
        "first_token_ms_p50": pct(t.first_token[:n], 50),
        "first_token_ms_p99": pct(t.first_token[:n], 99),
        "completion_ms_p50": pct(t.done[:n], 50),
        "completion_ms_p99": pct(t.done[:n], 99),
        "encode_ms_p50": pct(t.encode[:n], 50),
        "decide_call_ms_p50": pct(t.decide[:n], 50),
        "responses": summary.responses,
        "stalls": stalls,
        "stall_rate": round(stalls / n, 5) if n else None,
        "overruns": summary.overruns,
        "overrun_samples": summary.overrun_samples,
        "cpu_percent": round(cpu, 1),  # process CPU time / wall, 100 = one core
        "rss_mb": rss_mb(),
        "wall_s": round(wall, 2),
        "threads_per_session": summary.extra.get("threads"),
        "runtime_summary": {  # the loop's own figures (reference: when it read the chunk)
            "decision_p50_ms": round(summary.decision_p50_ms, 3),
            "decision_p99_ms": round(summary.decision_p99_ms, 3),
            "first_token_p50_ms": round(summary.first_token_p50_ms, 3),
            "stalls": summary.stalls,
        },
        "_decision_ms": decision.tolist(),
    }


def run(bundle, opts: LatencyOptions) -> dict:
    """FIFO then sync on the same synthetic stream -> {"fifo": {...}, "sync": {...}}."""
    from soundflow.runtime.kinds import open_engine
    from soundflow.runtime.options import RuntimeOptions

    result: dict = {"bundle": str(bundle) if bundle else "embedded default"}
    pcm = file_pcm(opts.input, opts.seconds) if opts.input else None
    for key, asynchronous in (("fifo", True), ("sync", False)):
        # One engine per mode: session threads differ (async splits the cores in two).
        engine = open_engine(
            bundle,
            RuntimeOptions.from_flags(asynchronous=asynchronous, threads=opts.threads),
            variant=opts.variant,
        )
        result["model"] = bundle_name(engine)
        result[key] = measure(engine, opts, asynchronous, pcm)
    result["options"] = {
        "seconds": opts.seconds,
        "mode": opts.mode,
        "variant": opts.variant,
        "threads": opts.threads,
        "threshold": opts.threshold,
        "max_response_tokens": opts.max_response_tokens,
        "speech_gate": opts.speech_gate,
        "source": f"{opts.input}, looped to {opts.seconds:g} s, paced at real time"
        if opts.input
        else "synthetic toy stream (tones, chirps, noise), paced at real time",
    }
    return result


def plot(result: dict, path) -> bool:
    """Decision latency of every chunk, FIFO and sync, from the stripped (JSON) result."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for key in ("fifo", "sync"):
        d = np.asarray(result["series"][key]["decision_ms"])
        ax.plot(
            np.arange(len(d)) * 0.4,
            d,
            lw=0.8,
            label=f"{key} (p99 {result[key]['decision_ms_p99']} ms)",
        )
    ax.set_xlabel("stream time (s)")
    ax.set_ylabel("decision latency (ms)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("decision latency, real-time paced")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def strip(result: dict) -> dict:
    """The JSON form: per-chunk series moved out of the headline dicts."""
    out = {k: v for k, v in result.items()}
    for key in ("fifo", "sync"):
        d = dict(out[key])
        out.setdefault("series", {})[key] = {
            "decision_ms": [round(x, 3) for x in d.pop("_decision_ms")]
        }
        out[key] = d
    return out
