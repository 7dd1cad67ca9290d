"""`soundflow eval`: score a bundle on an eval split by running it through the real runtime
(fast mode), so what is scored is what users get. numpy + onnxruntime only, no torch.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from soundflow import audio

CATEGORIES = ("Human", "Daily", "Equipment", "Traffic", "Nature", "Music")
ALERT_WINDOW_S = 3.0  # an alert may come this long after its event starts (plus one chunk)
ASSIST_WINDOW_S = 2.0  # an answer may come this long after the instruction ends


def normalize(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def run_stream(engine, samples: np.ndarray, mode: str, threshold: float | None = None, **overrides):
    """(responses, summary) of one stream through the runtime, as fast as possible;
    `threshold` overrides the bundle's decision thresholds, `overrides` other run-time
    options (flat RuntimeOptions names, e.g. alerts="protocol")."""
    from soundflow.runtime.listener import Listener

    responses = []
    listener = Listener(
        engine,
        mode=mode,
        input=samples,
        sample_rate=audio.SAMPLE_RATE,
        realtime=False,
        stats_every_s=0,
        threshold=threshold,
        on_event=lambda e: responses.append(e) if e.type == "response" else None,
        **overrides,
    )
    summary = listener.run()
    return responses, summary


def new_alert_tally() -> dict:
    """The counters `score_alerts` adds to, over any number of streams."""
    return {
        "events": 0,
        "detected": 0,
        "correct": 0,
        "responses": 0,
        "false": 0,
        "repeats": 0,
        "delays": [],
        "per_category": defaultdict(lambda: [0, 0]),
    }


def score_alerts(record: dict, responses: list, chunk_s: float, acc: dict) -> None:
    events = sorted((e for e in record["events"] if e.get("alert")), key=lambda e: e["start"])
    used = set()
    for ev in events:
        window_end = min(ev["end"], ev["start"] + ALERT_WINDOW_S) + chunk_s
        hit = next(
            (
                i
                for i, r in enumerate(responses)
                if i not in used and ev["start"] <= r.t <= window_end
            ),
            None,
        )
        cat = ev.get("category", "?")
        acc["events"] += 1
        acc["per_category"][cat][1] += 1
        if hit is None:
            continue
        used.add(hit)
        r = responses[hit]
        acc["detected"] += 1
        acc["per_category"][cat][0] += 1
        acc["delays"].append(r.t - ev["start"])
        if r.tags.get("alert") == ev["label"] or r.tags.get("alert") == ev.get("alert_label"):
            acc["correct"] += 1
        # later responses inside the same ongoing event are repeats, not false alerts
        for i, other in enumerate(responses):
            if i not in used and ev["start"] <= other.t <= ev["end"] + chunk_s:
                used.add(i)
                acc["repeats"] += 1
    acc["responses"] += len(responses)
    acc["false"] += len(responses) - len(used)


def score_assist(record: dict, responses: list, chunk_s: float, acc: dict) -> None:
    used = set()
    for target in record["targets"].get("assist", []):
        acc["targets"] += 1
        hit = next(
            (
                i
                for i, r in enumerate(responses)
                if i not in used
                and target["t"] - 1e-6 <= r.t <= target["t"] + ASSIST_WINDOW_S + chunk_s
            ),
            None,
        )
        if hit is None:
            continue
        used.add(hit)
        acc["answered"] += 1
        acc["exact"] += normalize(responses[hit].raw.replace("<", " <")) == normalize(
            target["text"].replace("<", " <")
        )
    acc["unprompted"] += len(responses) - len(used)


def evaluate_bundle(
    bundle: str | Path | None,
    data: str | Path,
    max_streams: int | None = None,
    variant: str = "fp32",
    progress=None,
    tasks: list[str] | None = None,
) -> dict:
    """Every stream of `data` through the runtime once per task (`tasks`: a subset of the
    bundle's; None = all) -> the report `soundflow eval` prints."""
    from soundflow.manifest import BundleError
    from soundflow.runtime.kinds import open_engine
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.train.data.shards import iter_streams

    engine = open_engine(bundle, RuntimeOptions.from_flags(realtime=False), variant=variant)
    known = list(engine.spec.manifest["tasks"])
    unknown = [t for t in tasks or [] if t not in known]
    if unknown:
        raise BundleError(f"task {unknown[0]!r} is not one of this bundle's: {', '.join(known)}")
    tasks = list(tasks) if tasks else known
    chunk_s = engine.spec.manifest["audio"]["chunk_ms"] / 1000
    hours, n = 0.0, 0
    wer_edits = wer_words = 0
    alert = new_alert_tally()
    assist = {"targets": 0, "answered": 0, "exact": 0, "unprompted": 0}
    decision_ms, rtf = [], []
    for record in iter_streams(data):
        if max_streams is not None and n >= max_streams:
            break
        n += 1
        hours += record["duration"] / 3600
        for task in tasks:
            responses, summary = run_stream(engine, record["samples"], task)
            decision_ms.append((summary.decision_p50_ms, summary.decision_p99_ms))
            rtf.append(summary.realtime_factor)
            if task == "transcribe":
                ref = [w for word in record["words"] for w in normalize(word["word"])]
                hyp = [w for r in responses for w in normalize(r.text)]
                wer_edits += edit_distance(ref, hyp)
                wer_words += len(ref)
            elif task == "alert":
                score_alerts(record, responses, chunk_s, alert)
            elif task == "assist":
                score_assist(record, responses, chunk_s, assist)
        if progress:
            progress(n)
    prec = alert["detected"] / alert["responses"] if alert["responses"] else 0.0
    rec = alert["detected"] / alert["events"] if alert["events"] else 0.0
    report = {
        "bundle": str(bundle) if bundle else "embedded default",
        "data": str(data),
        "streams": n,
        "hours": round(hours, 3),
        "tasks": tasks,
        "wer": round(wer_edits / wer_words, 4) if wer_words else None,
        "trigger_accuracy": round(alert["correct"] / alert["events"], 4)
        if alert["events"]
        else None,
        "false_alerts_per_hour": round(alert["false"] / hours, 2)
        if hours and "alert" in tasks
        else None,
        "assist_exact_match": round(assist["exact"] / assist["targets"], 4)
        if assist["targets"]
        else None,
        "alert": {
            "events": alert["events"],
            "precision": round(prec, 4),
            "recall": round(rec, 4),
            "f1": round(2 * prec * rec / (prec + rec), 4) if prec + rec else 0.0,
            "trigger_delay_s_median": round(float(np.median(alert["delays"])), 3)
            if alert["delays"]
            else None,
            "false_alerts": alert["false"],
            "repeat_alerts": alert["repeats"],
            "recall_per_category": {
                c: round(h / t, 4) if t else None
                for c, (h, t) in sorted(alert["per_category"].items())
            },
        },
        "assist": {
            **assist,
            "answer_rate": round(assist["answered"] / assist["targets"], 4)
            if assist["targets"]
            else None,
            "unprompted_per_hour": round(assist["unprompted"] / hours, 2) if hours else None,
        },
        "runtime": {
            "decision_ms_p50": round(float(np.median([d[0] for d in decision_ms])), 2)
            if decision_ms
            else None,
            "decision_ms_p99": round(float(np.max([d[1] for d in decision_ms])), 2)
            if decision_ms
            else None,
            "realtime_factor_median": round(float(np.median(rtf)), 1) if rtf else None,
        },
    }
    return report


def format_table(report: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f} %"

    a = report["alert"]
    rows = [
        ("streams / hours", f"{report['streams']} / {report['hours']}"),
        ("transcribe WER", pct(report["wer"])),
        ("alert trigger accuracy", pct(report["trigger_accuracy"])),
        (
            "alert precision / recall / F1",
            f"{pct(a['precision'])} / {pct(a['recall'])} / {pct(a['f1'])}",
        ),
        (
            "alert median trigger delay",
            "-" if a["trigger_delay_s_median"] is None else f"{a['trigger_delay_s_median']:.2f} s",
        ),
        (
            "false alerts per hour",
            "-"
            if report["false_alerts_per_hour"] is None
            else str(report["false_alerts_per_hour"]),
        ),
        ("assist exact match", pct(report["assist_exact_match"])),
        (
            "decision latency p50 / p99",
            f"{report['runtime']['decision_ms_p50']} / {report['runtime']['decision_ms_p99']} ms",
        ),
    ]
    rows += [(f"  recall {cat}", pct(v)) for cat, v in a["recall_per_category"].items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
