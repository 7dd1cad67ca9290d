"""Print the README's results table from benchmarks/results/*.json, so the README quotes
exactly what the commands wrote.

    python benchmarks/table.py [RESULTS_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(d: Path, name: str) -> dict | None:
    p = d / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _load_note(r: dict) -> str:
    m = r["meta"]["machine"]
    return f"{m['cores']} cores, load {m['loadavg'][0]}"


def rows(d: Path) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, command + load) rows."""
    out = []
    for name in ("latency", "latency_load6", "latency_small"):
        lat = _load(d, name)
        if not lat:
            continue
        c, load = lat["meta"]["command"], _load_note(lat)
        model = {"latency": "default bundle", "latency_load6": "default bundle, load 6"}.get(
            name, lat["model"]["recipe"]
        )
        for k in ("fifo", "sync"):
            r = lat[k]
            k = f"{k}, {model}"
            out += [
                (
                    f"decision latency p50 / p99, {k}",
                    f"{r['decision_ms_p50']} / {r['decision_ms_p99']} ms",
                    "p99 <= 20 ms" if k == "fifo, default bundle" else "",
                    f"`{c}` ({load})",
                ),
                (
                    f"first-chunk decision, {k}",
                    f"{r['first_chunk_decision_ms']} ms",
                    "",
                    "same run",
                ),
                (
                    f"first token p50, completion p50, {k}",
                    f"{r['first_token_ms_p50']} ms, {r['completion_ms_p50']} ms ({r['responses']} responses)",
                    "",
                    "same run",
                ),
                (
                    f"stall rate, overruns, {k}",
                    f"{100 * r['stall_rate']:.1f} %, {r['overruns']} ({r['chunks']} chunks)",
                    "0, 0" if name == "latency" else "",
                    "same run",
                ),
                (
                    f"CPU, RSS, {k}",
                    f"{r['cpu_percent']} % of a core, {r['rss_mb']} MB",
                    "",
                    "same run",
                ),
            ]
    sc = _load(d, "scale")
    if sc:
        c, load = sc["meta"]["command"], _load_note(sc)
        ca, rc, lay = sc["cached"], sc["recompute"], sc["layouts"]
        p10 = ca.get("per_chunk_ms_p10") or [None]
        out += [
            (
                "per-chunk cost, cached, 1 min -> 60 min (median)",
                f"{ca['per_chunk_ms'][0]} -> {ca['per_chunk_ms'][-1]} ms (x{ca['end_to_start_ratio']})",
                "within 10 %",
                f"`{c}` ({load})",
            ),
            (
                "per-chunk cost, cached, 1 min -> 60 min (p10)",
                f"{p10[0]} -> {p10[-1]} ms (x{ca.get('end_to_start_ratio_p10')})",
                "within 10 %",
                "same run",
            ),
            (
                f"per-chunk cost, recompute, {rc['minutes'][0]} -> {rc['minutes'][-1]} min",
                f"{rc['per_chunk_ms'][0]} -> {rc['per_chunk_ms'][-1]} ms (x{rc['end_to_start_ratio']}; capped: {rc['cap_reason']})",
                "",
                "same run",
            ),
            (
                f"decoder step, fixed in place, {lay['cache_tokens'][0]} -> {lay['cache_tokens'][-1]} cache tokens",
                f"{lay['fixed_inplace_ms'][0]} -> {lay['fixed_inplace_ms'][-1]} ms",
                "",
                "same run",
            ),
            (
                f"decoder step, growing copied, {lay['cache_tokens'][0]} -> {lay['cache_tokens'][-1]} cache tokens",
                f"{lay['growing_copy_ms'][0]} -> {lay['growing_copy_ms'][-1]} ms",
                "",
                "same run",
            ),
        ]
    sz = _load(d, "size")
    if sz:
        c, load = sz["meta"]["command"], _load_note(sz)
        for name, e in sz["sizes"].items():
            for v, r in e["variants"].items():
                out.append(
                    (
                        f"{name} {v} ({e['parameters']['total'] / 1e6:.1f} M params, vocab {e['vocab']})",
                        f"{r['decode_tokens_per_s']} tok/s; decision p50/p99 {r['decision_ms_p50']} / {r['decision_ms_p99']} ms; "
                        f"RSS +{r['rss_mb_loaded']} MB loaded; overhead {r['token_overhead_percent']} % per token, {r['overhead_percent']} % per chunk",
                        "overhead <= 10 %",
                        f"`{c}` ({load})",
                    )
                )
    pe = _load(d, "peer")
    if pe:
        c, load = pe["meta"]["command"], _load_note(pe)
        for k in ("soundflow", "pocketsphinx"):
            r = pe[k]
            out.append(
                (
                    f"{k} on {pe['streams']} eval streams ({pe['hours']} h, {pe['reference_words']} words)",
                    f"WER {100 * r['wer']:.1f} %, RTF {r['realtime_factor']}, per-chunk p50/p99 {r['chunk_ms_p50']} / {r['chunk_ms_p99']} ms",
                    "soundflow WER <= pocketsphinx" if k == "soundflow" else "",
                    f"`{c}` ({load})",
                )
            )
    so = _load(d, "soak")
    if so:
        c, load = so["meta"]["command"], _load_note(so)
        a, b = so["alert_first_window"], so["alert_last_window"]
        out += [
            (
                "soak RSS growth (after first minute; from start)",
                f"{so.get('rss_growth_after_first_sample_mb')} MB; {so['rss_growth_mb']} MB ({so['rss_mb_start']} -> {so['rss_mb_end']} MB)",
                "< 5 MB",
                f"`{c}` ({load})",
            ),
            (
                "soak slow chunks, overruns, evictions",
                f"{so['slow_chunks']}, {so['overruns']}, {so['cache_evictions']} ({so['chunks']} chunks, RTF {so['realtime_factor']})",
                "0",
                "same run",
            ),
            (
                "soak alert precision / recall / false per h, first h",
                f"{a['precision']} / {a['recall']} / {a['false_alerts_per_hour']}",
                "",
                "same run",
            ),
            (
                "soak alert precision / recall / false per h, last h",
                f"{b['precision']} / {b['recall']} / {b['false_alerts_per_hour']}",
                "same as first",
                "same run",
            ),
        ]
    return out


def main() -> None:
    d = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results")
    print("| figure | measured | target | command (machine load) |")
    print("|---|---|---|---|")
    last = None
    for r in rows(d):
        cmd = r[3]
        if cmd == last:
            r = (*r[:3], "same run")
        elif cmd != "same run":
            last = cmd
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
