"""`soundflow bench alerts`: alert mode on real recordings training never used (train/heldout.py:
Tux Paint's stamp and interface sounds), with each of a bundle's alert paths on the same
streams: the tagger (where the bundle has one) and the decoder's own <respond> step.

Reports, per path, the benign sounds that raised an alert (and which label), false alerts
per hour, and the alert-worthy sounds named with the right label in time. The same streams
in transcribe mode hold no speech: every word captioned there is one nobody said (per
speech-gate setting, where the bundle's tagger has a gate).
"""

from __future__ import annotations

import time

from soundflow.benchmarks.common import bundle_name, machine


def run(bundle=None, threads: int | None = None, seed: int = 0, log=None) -> dict:
    """`log(line)`, where given, hears a progress line per stream."""
    from soundflow.runtime.kinds import open_engine
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.train import heldout
    from soundflow.train.evaluate import new_alert_tally, run_stream, score_alerts

    engine = open_engine(bundle, RuntimeOptions(threads=threads))
    if "alert" not in engine.spec.tasks:
        raise ValueError(f"{engine.spec.path} has no alert mode")
    streams = heldout.sound_streams(heldout.tuxpaint_sound_clips(), "tuxpaint-sounds", seed)
    paths = ["tagger", "protocol"] if getattr(engine.spec, "tagger", None) else ["protocol"]
    hours = sum(s["duration"] for s in streams) / 3600
    benign = sum(not e["alert"] for s in streams for e in s["events"])
    table = []
    for path in paths:
        acc, alerted, t0 = new_alert_tally(), [], time.perf_counter()
        for i, s in enumerate(streams):
            _progress(log, f"alert mode ({path})", i, streams, t0)
            responses, summary = run_stream(engine, s["samples"], "alert", alerts=path)
            if summary.error is not None:
                raise RuntimeError(f"{s['id']}: {summary.error}")
            score_alerts(s, responses, engine.spec.chunk_ms / 1000, acc)
            for r in responses:
                ev = next((e for e in s["events"] if e["start"] <= r.t <= e["end"] + 2.0), None)
                if ev is not None and not ev["alert"]:
                    alerted.append({"sound": ev["file"].split("/share/")[-1], "alert": r.alert})
        table.append(
            {
                "path": path,
                "benign_sounds": benign,
                "benign_alerted": len({a["sound"] for a in alerted}),
                "false_alerts": acc["false"],
                "false_per_hour": round(acc["false"] / hours, 1),
                "alert_sounds": acc["events"],
                "named": acc["correct"],
                "seconds": round(time.perf_counter() - t0, 1),
                "alerted": alerted,
            }
        )
    return {
        "benchmark": "alerts",
        "captions": captions_on_sound(engine, streams, hours, log),
        "bundle": bundle_name(engine),
        "set": "tuxpaint-sounds (held out of training: train/heldout.py)",
        "streams": len(streams),
        "hours": round(hours, 3),
        "machine": machine(),
        "table": table,
    }


def _progress(log, what: str, i: int, streams: list[dict], t0: float) -> None:
    if log is not None:
        done = sum(s["duration"] for s in streams[:i]) / 60
        total = sum(s["duration"] for s in streams) / 60
        log(
            f"{what}: stream {i + 1}/{len(streams)}, {done:.1f} of {total:.1f} min of audio "
            f"done, {time.perf_counter() - t0:.0f} s"
        )


def captions_on_sound(engine, streams, hours: float, log=None) -> list[dict]:
    """Transcribe mode on speechless streams: the words it captions anyway, per setting of
    the speech gate (on and off where the bundle has one)."""
    from soundflow.train.evaluate import normalize, run_stream

    if "transcribe" not in engine.spec.tasks:
        return []
    tagger = getattr(engine.spec, "tagger", None)
    gates = [True, False] if tagger is not None and tagger.speech is not None else [None]
    rows = []
    for gate in gates:
        words: list[str] = []
        t0 = time.perf_counter()
        for i, s in enumerate(streams):
            gated = {None: "", True: ", speech gate on", False: ", speech gate off"}[gate]
            _progress(log, f"transcribe mode{gated}", i, streams, t0)
            opts = {} if gate is None else {"speech_gate": gate}
            responses, summary = run_stream(engine, s["samples"], "transcribe", **opts)
            if summary.error is not None:
                raise RuntimeError(f"{s['id']}: {summary.error}")
            words += [w for r in responses for w in normalize(r.text)]
        rows.append(
            {
                "speech_gate": gate,
                "words": len(words),
                "words_per_hour": round(len(words) / hours, 1),
                "seconds": round(time.perf_counter() - t0, 1),
                "text": " ".join(words)[:2000],
            }
        )
    return rows
