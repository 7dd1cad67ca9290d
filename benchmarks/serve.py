"""`soundflow bench serve`: N live streams against one `soundflow serve` process.

For each batch mode (off = one encoder and decoder call per stream, encoder = one encoder
call for every stream with a chunk ready, full = the decision steps batched too) a server
is started as its own process; for each N, N WebSocket clients send speech paced at real
time (400 ms every 400 ms, start phases spread over a chunk) for `seconds`, then end.
Reported per (mode, N): streams held at real time (no overruns, at most 2 % of chunks
decided later than a chunk length after their arrival), decision latency over all
streams (median of the streams' p50, worst stream's p99), the server's CPU (% of one
core) and peak RSS, from /proc. In transcribe mode each stream's captions are scored
against the words its audio spoke: WER pooled over the streams and the worst stream's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from soundflow.audio import SAMPLE_RATE

SPEECH = (
    "The kitchen lights are on. Please tell me the time. A closed surface with only one "
    "side. The quick brown fox jumps over the lazy dog. Turn the radio down a little."
)


RATE = SAMPLE_RATE
CHUNK = 6400  # samples a client sends at a time (400 ms)


def _espeak(text: str) -> np.ndarray:
    """`text` spoken by espeak-ng, 16 kHz float32, followed by 1 s of silence."""
    import soundfile as sf
    import soxr

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.wav"
        subprocess.run(["espeak-ng", "-w", str(p), text], check=True)
        pcm, rate = sf.read(str(p), dtype="float32")
    pcm = soxr.resample(pcm, rate, RATE).astype(np.float32)
    return np.concatenate([pcm, np.zeros(RATE, np.float32)])


def assemble(
    seconds: float, clip: np.ndarray, words: list[str], heads: list[tuple[np.ndarray, list[str]]]
) -> tuple[np.ndarray, list[str], int]:
    """(audio, the words it speaks, repetitions): `clip` repeated whole, at least once, then
    the longest of `heads` (starts of the clip, whole sentences) that fits, then silence.
    The length is `seconds` in whole chunks (what a client sends), more if one clip needs it.
    """
    n = max(1, int(seconds * RATE) // CHUNK) * CHUNK
    reps = max(1, n // len(clip))
    n = max(n, -(-reps * len(clip) // CHUNK) * CHUNK)
    parts, spoken = [clip] * reps, words * reps
    fit = [h for h in heads if len(h[0]) <= n - reps * len(clip)]
    if fit:
        pcm, head_words = max(fit, key=lambda h: len(h[0]))
        parts.append(pcm)
        spoken = spoken + head_words
    out = np.zeros(n, np.float32)
    body = np.concatenate(parts)
    out[: len(body)] = body
    return out, spoken, reps


def speech(seconds: float, text: str = SPEECH) -> tuple[np.ndarray, list[str] | None, int]:
    """(16 kHz float32 audio, the words it speaks, repetitions of `text`), see `assemble`.

    Only whole words are ever sent, so the reference is exact: `text` (espeak-ng, +1 s of
    silence) repeated whole, then the longest start of it in whole sentences (+1 s) that
    fits, then silence, rather than a repetition cut mid-word. Without espeak-ng: the
    procedural demo looped and cut at `seconds`, with no reference (None) to score.
    """
    if not shutil.which("espeak-ng"):
        from soundflow.runtime.demo import procedural_demo

        pcm = procedural_demo()
        n = max(1, int(seconds * RATE) // CHUNK) * CHUNK
        return np.tile(pcm, -(-n // len(pcm)))[:n], None, 0
    from soundflow.train.evaluate import normalize

    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    heads = [" ".join(sentences[:k]) for k in range(1, len(sentences))]
    return assemble(
        seconds,
        _espeak(text),
        normalize(text),
        [(_espeak(h), normalize(h)) for h in heads],
    )


def wer(references: list[list[str]], hypotheses: list[list[str]]) -> tuple[float, float]:
    """(pooled WER: all the streams' edits over all their reference words, worst stream's)."""
    from soundflow.train.evaluate import edit_distance

    edits = [edit_distance(r, h) for r, h in zip(references, hypotheses, strict=True)]
    words = [len(r) for r in references]
    return sum(edits) / sum(words), max(e / w for e, w in zip(edits, words, strict=True))


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    """Process `pid`'s resident memory in MiB, from /proc (0 where it has none)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _client(
    url: str, pcm: np.ndarray, phase: float, mode: str | None, t0: float, options: dict
) -> tuple[dict, list[str]]:
    """(the stream's summary, the text of every response it received)."""
    from websockets.asyncio.client import connect

    n = CHUNK
    async with connect(url, compression=None, max_size=None, open_timeout=60) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "hello",
                    "mode": mode,
                    "format": "f32le",
                    "realtime": True,
                    "options": {"stats_every_s": 0, **options},
                }
            )
        )
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"server refused a stream: {ready.get('text')}")
        summary: dict = {}
        texts: list[str] = []

        async def reader() -> None:
            async for msg in ws:
                ev = json.loads(msg)
                if ev["type"] == "response":
                    texts.append(ev["text"])
                if ev["type"] == "summary":
                    summary.update(ev)
                    return

        task = asyncio.ensure_future(reader())
        start = t0 + phase
        for i in range(len(pcm) // n):
            delay = start + (i + 1) * 0.4 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(pcm[i * n : (i + 1) * n].astype("<f4").tobytes())
        await ws.send(json.dumps({"type": "end"}))
        await asyncio.wait_for(task, 600)
        return summary, texts


async def run_streams(
    url: str, n: int, pcm: np.ndarray, mode: str | None, options: dict
) -> list[tuple[dict, list[str]]]:
    """`n` clients streaming `pcm` to `url` at once, phases 0.4 s / n apart (they start
    0.5 s from now); -> each one's (summary, response texts)."""
    t0 = time.monotonic() + 0.5
    phases = [0.4 * k / n for k in range(n)]
    return await asyncio.gather(*(_client(url, pcm, p, mode, t0, options) for p in phases))


def _start_server(
    bundle, batch: str, threads: int | None, provider: str, workers: int = 1, adaptive: bool = True
):
    cmd = [
        sys.executable,
        "-P",  # not the working folder's `soundflow` (a clone there) but the installed one
        "-m",
        "soundflow.cli",
        "serve",
        "--port",
        "0",
        "--quiet",
        "--batch",
        batch,
        "--max-streams",
        "256",
        "--provider",
        provider,
    ]
    if bundle:
        cmd += ["--bundle", str(bundle)]
    if threads:
        cmd += ["--threads", str(threads)]
    cmd += ["--workers", str(workers), "--adaptive-hop" if adaptive else "--fixed-hop"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"soundflow serve did not start: {proc.stderr.read()[-2000:]}")
    return proc, line.split()[-1]


def measure(
    url: str,
    pid: int,
    n: int,
    pcm: np.ndarray,
    mode: str | None,
    reference: list[str] | None,
    options: dict | None = None,
) -> dict:
    """One row: N streams of `pcm` against the server `pid`, each with the hello `options`;
    WER against `reference` (the words `pcm` speaks) where there is one, else None."""
    cpu0, w0 = proc_cpu_s(pid), time.monotonic()
    peak = [proc_rss_mb(pid)]

    async def main() -> list[tuple[dict, list[str]]]:
        async def sample() -> None:
            while True:
                peak.append(proc_rss_mb(pid))
                await asyncio.sleep(0.5)

        s = asyncio.ensure_future(sample())
        try:
            return await run_streams(url, n, pcm, mode, options or {})
        finally:
            s.cancel()

    streams = asyncio.run(main())
    wall = time.monotonic() - w0
    cpu = proc_cpu_s(pid) - cpu0
    return {
        **capacity(n, streams, reference),
        "cpu_pct": round(100 * cpu / wall, 1),
        "rss_mb": round(max(peak), 1),
        "wall_s": round(wall, 1),
    }


def capacity(n: int, streams: list, reference: list[str] | None) -> dict:
    """One row's streams (summary, response texts) -> how many were held at real time (no
    overrun, stalls in at most 2 % of chunks), their latency, counts and WER."""
    summaries = [s for s, _ in streams]
    held = sum(
        1 for s in summaries if s["overruns"] == 0 and s["stalls"] <= 0.02 * max(1, s["chunks"])
    )
    return {
        "streams": n,
        "held_realtime": held,
        "decision_p50_ms": round(float(np.median([s["decision_p50_ms"] for s in summaries])), 1),
        "decision_p99_ms": round(float(max(s["decision_p99_ms"] for s in summaries)), 1),
        "stalls": int(sum(s["stalls"] for s in summaries)),
        "overruns": int(sum(s["overruns"] for s in summaries)),
        "chunks": int(sum(s["chunks"] for s in summaries)),
        "responses": int(sum(s["responses"] for s in summaries)),
        **_lag(summaries),
        **_scores(reference, [texts for _, texts in streams]),
    }


def _lag(summaries: list[dict]) -> dict:
    """Caption lag over the streams (transcribe; None elsewhere): the median stream's p50,
    the worst stream's p95, and audio no reading ever read (should be 0)."""
    p50 = [s["caption_lag_p50_ms"] for s in summaries if s.get("caption_lag_p50_ms") is not None]
    p95 = [s["caption_lag_p95_ms"] for s in summaries if s.get("caption_lag_p95_ms") is not None]
    skipped = [s["captions_skipped"] for s in summaries if s.get("captions_skipped") is not None]
    deferred = [s["captions_deferred"] for s in summaries if s.get("captions_deferred") is not None]
    return {
        "caption_lag_p50_ms": round(float(np.median(p50)), 1) if p50 else None,
        "caption_lag_p95_ms": round(float(max(p95)), 1) if p95 else None,
        "captions_skipped": int(sum(skipped)) if skipped else None,
        # chunks a reader behind real time hopped over, unencoded: how hard the box was pushed
        "captions_deferred": int(sum(deferred)) if deferred else None,
    }


WER_SLACK = 1.2  # a stream count is held only if its WER stays within this of the fewest's


def capacities(rows: list[dict]) -> list[dict]:
    """Per server setting (workers, batch): the largest stream count held at real time (every
    stream held, no stall, WER within WER_SLACK of the fewest streams' where scored), and
    the per-stream cost: CPU % per stream, the RSS each added stream costs, and at 8 streams the CPU per stream as
    a fraction of the fewest streams' (batching pays where it is under 1)."""
    out = []
    for key in dict.fromkeys((r.get("workers", 1), r["batch"]) for r in rows):
        mine = sorted(
            (r for r in rows if (r.get("workers", 1), r["batch"]) == key),
            key=lambda r: r["streams"],
        )
        base = mine[0]
        held = [
            r["streams"]
            for r in mine
            if r["held_realtime"] == r["streams"]
            and r.get("stalls", 0) == 0
            and (
                r.get("wer") is None
                or base.get("wer") is None
                or r["wer"] <= WER_SLACK * base["wer"] + 1e-9
            )
        ]
        per_stream = {r["streams"]: r["cpu_pct"] / r["streams"] for r in mine}
        eight = per_stream.get(8)
        out.append(
            {
                "workers": key[0],
                "batch": key[1],
                "tried": [r["streams"] for r in mine],
                "largest_held": max(held) if held else 0,
                "cpu_pct_per_stream": {n: round(v, 2) for n, v in per_stream.items()},
                "rss_mb_fewest": base["rss_mb"],
                # what each stream beyond the fewest adds (the engine's weights are shared)
                "rss_mb_per_added_stream": {
                    r["streams"]: round(
                        (r["rss_mb"] - base["rss_mb"]) / (r["streams"] - base["streams"]), 1
                    )
                    for r in mine[1:]
                },
                "cpu_per_stream_8_vs_fewest": round(eight / per_stream[base["streams"]], 3)
                if eight is not None and base["streams"] < 8
                else None,
            }
        )
    return out


def _scores(reference: list[str] | None, texts: list[list[str]]) -> dict:
    """WER (pooled, worst stream) of each stream's responses, joined, against `reference`."""
    if reference is None:
        return {"wer": None, "wer_worst": None}
    from soundflow.train.evaluate import normalize

    hyps = [[w for t in stream for w in normalize(t)] for stream in texts]
    pooled, worst = wer([reference] * len(hyps), hyps)
    return {"wer": round(pooled, 4), "wer_worst": round(worst, 4)}


def run(
    bundle,
    streams: list[int],
    seconds: float,
    batches: list[str],
    mode: str | None,
    threads: int | None = None,
    provider: str = "auto",
    log=print,
    text: str = SPEECH,
    caption_budget_ms: float | None = None,
    alerts: str | None = None,
    workers: list[int] | None = None,
    caption_hop: int | None = None,
    adaptive_hop: bool = True,
) -> dict:
    """`caption_budget_ms`: every stream's reading deadline (a hello option; None: the
    bundle's, 0: none). `caption_hop`: chunks between its window readings (a hello option;
    None: the bundle's). `workers`: the server's worker counts to compare (default [1])."""
    pcm, words, repetitions = speech(seconds, text)
    # only captions are scored: alerts and assist answers are not the words spoken
    reference = words if mode == "transcribe" else None
    options = {} if caption_budget_ms is None else {"caption_budget_ms": caption_budget_ms}
    if alerts is not None:
        options["alerts"] = alerts
    if caption_hop is not None:
        options["caption_hop"] = caption_hop
    rows = []
    for batch, nw in [(b, w) for w in workers or [1] for b in batches]:
        proc, url = _start_server(bundle, batch, threads, provider, nw, adaptive_hop)
        try:
            for n in streams:
                row = {
                    "batch": batch,
                    "workers": nw,
                    **measure(url, proc.pid, n, pcm, mode, reference, options),
                }
                log(json.dumps(row))
                rows.append(row)
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {
        "bench": "serve",
        "bundle": str(bundle) if bundle else "embedded default",
        "seconds": seconds,
        "mode": mode,
        "caption_budget_ms": caption_budget_ms,  # None: the bundle's
        "caption_hop": caption_hop,  # None: the bundle's
        "adaptive_hop": adaptive_hop,  # the server's (serve --adaptive-hop / --fixed-hop)
        "alerts": alerts,  # alert mode's decider; None: the bundle's
        # what every stream sends: its length, whole repetitions of the text, and the
        # words spoken (the reference; None without espeak-ng)
        "sent_s": len(pcm) / RATE,
        "repetitions": repetitions,
        "reference_words": len(words) if words is not None else None,
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "load_avg_start": os.getloadavg()[0],
        "rows": rows,
        "capacity": capacities(rows),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table(result: dict) -> str:
    """The rows as Markdown; the WER columns only where some row was scored."""
    scored = any(r.get("wer") is not None for r in result["rows"])
    head = (
        "| workers | batch | streams | held at real time | decision p50 / p99 ms | server CPU % "
        "| RSS MB |"
    )
    lines = [head + (" WER | worst |" if scored else ""), "|---" * (9 if scored else 7) + "|"]
    for r in result["rows"]:
        line = (
            f"| {r.get('workers', 1)} | {r['batch']} | {r['streams']} | {r['held_realtime']} / {r['streams']} | "
            f"{r['decision_p50_ms']} / {r['decision_p99_ms']} | {r['cpu_pct']} | {r['rss_mb']} |"
        )
        if scored:
            line += f" {_pct(r.get('wer'))} | {_pct(r.get('wer_worst'))} |"
        lines.append(line)
    for c in result.get("capacity") or capacities(result["rows"]):
        ratio = c["cpu_per_stream_8_vs_fewest"]
        lines.append(
            f"\n{c['workers']} worker(s), batch {c['batch']}: held at real time up to "
            f"{c['largest_held']} of {c['tried']} streams"
            + (f"; CPU per stream at 8 streams {ratio:.2f}x that at the fewest" if ratio else "")
        )
    return "\n".join(lines)
