"""`soundflow bench soak`: hours of synthetic stream through the full runtime in fast mode:
RSS over time, slow chunks, cache evictions, and alert quality in the last hour against the
first (scored against the synthetic stream's ground truth, as `soundflow eval` scores).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import numpy as np

from soundflow.benchmarks.common import (
    bundle_name,
    make_source,
    pct,
    pyplot,
    rss_mb,
    run_probe,
    synthetic_events,
)


@dataclass(frozen=True)
class SoakOptions:
    hours: float = 8.0
    mode: str = "alert"
    variant: str = "fp32"
    threads: int | None = None
    sample_every_s: float = 60.0  # stream seconds between RSS samples
    window_s: float = 3600.0  # quality windows: the first and the last this many seconds
    seed: int = 20_000


# Shortest window given a false-alerts-per-hour rate: from seconds of stream, one false
# alert reads as hundreds an hour (`--hours 0.01`); shorter windows report the count only.
MIN_RATE_S = 600.0


def _alert_quality(responses, t0: float, t1: float, chunk_s: float, seed: int) -> dict:
    from soundflow.train.evaluate import new_alert_tally, score_alerts

    acc = new_alert_tally()
    record = {"events": synthetic_events(t0, t1, seed)}
    score_alerts(record, [r for r in responses if t0 <= r.t < t1 + chunk_s], chunk_s, acc)
    prec = acc["detected"] / acc["responses"] if acc["responses"] else 0.0
    rec = acc["detected"] / acc["events"] if acc["events"] else 0.0
    hours = (t1 - t0) / 3600
    return {
        "from_s": t0,
        "to_s": t1,
        "alert_events": acc["events"],
        "responses": acc["responses"],
        "precision": round(prec, 4),
        "recall": round(rec, 4),
        "trigger_accuracy": round(acc["correct"] / acc["events"], 4) if acc["events"] else None,
        "false_alerts": acc["false"],
        "false_alerts_per_hour": round(acc["false"] / hours, 2) if t1 - t0 >= MIN_RATE_S else None,
    }


def run(bundle, opts: SoakOptions) -> dict:
    from soundflow.runtime.kinds import open_engine
    from soundflow.runtime.options import RuntimeOptions

    runtime = RuntimeOptions.from_flags(
        mode=opts.mode, realtime=False, threads=opts.threads, stats_every_s=opts.sample_every_s
    )
    engine = open_engine(bundle, runtime, variant=opts.variant)
    chunk_s = engine.spec.chunk_ms / 1000
    seconds = opts.hours * 3600
    window = min(opts.window_s, seconds / 2)
    capacity = int(np.ceil(seconds / chunk_s)) + 2
    n_samples = int(seconds // opts.sample_every_s) + 2
    # Everything the run records is allocated before the first RSS sample.
    samples = np.full((n_samples, 4), np.nan)  # stream s, rss MB, evictions, chunks
    responses: list = []
    count = [0]

    def on_event(e) -> None:
        if e.type == "stats" and count[0] < n_samples:
            samples[count[0]] = (e.t, rss_mb(), e.cache_evictions, e.chunks)
            count[0] += 1
        elif e.type == "response" and (e.t <= window + chunk_s or e.t >= seconds - window):
            responses.append(e)

    rss_start = [0.0]

    def on_start() -> None:
        gc.collect()
        rss_start[0] = rss_mb()

    source = make_source(seconds, realtime=False, seed=opts.seed)
    summary, t, cpu, wall = run_probe(engine, source, runtime, capacity, on_event, on_start)
    rss_start = rss_start[0]
    rss_end = rss_mb()
    s = samples[: count[0]]
    n = t.n
    warm = s[min(len(s) - 1, max(0, len(s) // 10))] if len(s) else None  # after 10 % of the run
    first = _alert_quality(responses, 0.0, window, chunk_s, opts.seed)
    last = _alert_quality(responses, seconds - window, seconds, chunk_s, opts.seed)
    slow = int(np.sum(t.decision[:n] > chunk_s * 1e3))
    return {
        "bundle": str(bundle) if bundle else "embedded default",
        "model": bundle_name(engine),
        "hours": opts.hours,
        "stream_s": round(n * chunk_s, 1),
        "chunks": n,
        "wall_s": round(wall, 1),
        "realtime_factor": round(summary.realtime_factor, 1),
        "cpu_percent": round(cpu, 1),
        "rss_mb_start": rss_start,
        "rss_mb_end": rss_end,
        "rss_growth_mb": round(rss_end - rss_start, 2),
        # start-up (threads, ORT arenas, first buffers) is over by the first sample
        "rss_growth_after_first_sample_mb": round(rss_end - float(s[0, 1]), 2) if len(s) else None,
        "rss_growth_after_warmup_mb": round(rss_end - float(warm[1]), 2)
        if warm is not None
        else None,
        "rss_warmup_at_s": float(warm[0]) if warm is not None else None,
        "decision_ms_p50": pct(t.decision[:n], 50),
        "decision_ms_p99": pct(t.decision[:n], 99),
        "slow_chunks": slow,  # decided more than one chunk after the loop could take it
        "stalls": summary.stalls,  # counted at real time only; fast mode has no audio clock
        "overruns": summary.overruns,
        "responses": summary.responses,
        "cache_evictions": summary.cache_evictions,
        "alert_first_window": first,
        "alert_last_window": last,
        "series": {
            "stream_s": s[:, 0].round(1).tolist(),
            "rss_mb": s[:, 1].round(2).tolist(),
            "cache_evictions": s[:, 2].astype(int).tolist(),
        },
        "options": {k: getattr(opts, k) for k in opts.__dataclass_fields__},
    }


def plot(result: dict, path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    s = result["series"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(np.asarray(s["stream_s"]) / 3600, s["rss_mb"], lw=1)
    ax.set_xlabel("stream time (h)")
    ax.set_ylabel("RSS (MB)")
    ax.set_title(
        f"soak: RSS +{result.get('rss_growth_after_first_sample_mb')} MB after the first "
        f"sample, +{result['rss_growth_mb']} MB from start, {result['hours']} h"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
