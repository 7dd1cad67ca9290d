"""Decision calibration on a dev split (neither train nor eval): one threshold per alert label,
chosen to hold false alerts down, written into the bundle's manifest as defaults that
`--threshold` overrides. Torch-free: it runs the bundle through the runtime.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from soundflow.manifest import MANIFEST_NAME, write_manifest
from soundflow.train.evaluate import ALERT_WINDOW_S, run_stream

GRID = tuple(round(x, 2) for x in np.arange(0.3, 0.97, 0.05))


def _label_of(response, record, chunk_s: float) -> str:
    """'hit' if the response names an ongoing alert event right, 'wrong' if it fires on one
    with another label, 'false' outside every alert event."""
    for ev in record["events"]:
        if not ev.get("alert"):
            continue
        end = max(ev["end"], ev["start"] + ALERT_WINDOW_S) + chunk_s
        if ev["start"] <= response.t <= end:
            return "hit" if response.alert in (ev["label"], ev.get("alert_label")) else "wrong"
    return "false"


def calibrate(bundle: Path | str, dev: Path | str, floor: float = 0.2,
              false_per_hour: float = 0.5, max_streams: int | None = None) -> dict:  # fmt: skip
    """Run alert mode on `dev` with a low threshold; for each label pick the lowest grid
    threshold whose false alerts per hour stay within `false_per_hour` (summed over labels,
    the stream-wide budget is labels x that)."""
    from soundflow.runtime.engine import OrtEngine
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.train.data.shards import iter_streams

    engine = OrtEngine(bundle, RuntimeOptions(realtime=False))
    chunk_s = engine.spec.chunk_ms / 1000
    seen: dict[str, list[tuple[float, str]]] = defaultdict(list)  # label -> (p, outcome)
    hours = 0.0
    for n, record in enumerate(iter_streams(dev)):
        if max_streams is not None and n >= max_streams:
            break
        hours += record["duration"] / 3600
        responses, _ = run_stream(engine, record["samples"], "alert", threshold=floor)
        for r in responses:
            if r.alert:
                seen[r.alert].append((r.probability, _label_of(r, record, chunk_s)))
    thresholds, table = {}, {}
    for label, rows in sorted(seen.items()):
        p = np.array([x for x, _ in rows])
        outcome = np.array([o for _, o in rows])
        choice = GRID[-1]
        for thr in GRID:
            if ((p >= thr) & (outcome != "hit")).sum() / max(hours, 1e-9) <= false_per_hour:
                choice = thr
                break
        kept = p >= choice
        thresholds[f"<alert:{label}>"] = float(choice)
        table[label] = {"threshold": choice, "responses": len(rows),
                        "hits_kept": int((kept & (outcome == "hit")).sum()),
                        "hits": int((outcome == "hit").sum()),
                        "false_kept": int((kept & (outcome != "hit")).sum()),
                        "false": int((outcome != "hit").sum())}  # fmt: skip
    return {"dev": str(dev), "hours": round(hours, 3), "floor": floor,
            "false_per_hour_per_label": false_per_hour, "thresholds": thresholds, "labels": table}  # fmt: skip


def write_thresholds(bundle: Path | str, report: dict, mode: str = "alert") -> None:
    """Store the thresholds in the manifest (`decision.thresholds[mode]`) and rehash it."""
    bundle = Path(bundle)
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    manifest["decision"].setdefault("thresholds", {})[mode] = report["thresholds"]
    manifest["decision"]["calibration"] = {k: report[k] for k in ("dev", "hours", "floor",
                                           "false_per_hour_per_label")}  # fmt: skip
    manifest.pop("files", None)
    write_manifest(bundle, manifest)
