"""`soundflow bench serve`: N live streams against one `soundflow serve` process.

For each batch mode (off = one encoder and decoder call per stream, encoder = one encoder
call for every stream with a chunk ready, full = the decision steps batched too) a server
is started as its own process; for each N, N WebSocket clients send speech paced at real
time (400 ms every 400 ms, start phases spread over a chunk) for `seconds`, then end.
Reported per (mode, N): streams held at real time (no overruns, at most 2 % of chunks
decided later than a chunk length after their arrival), decision latency over all
streams (median of the streams' p50, worst stream's p99), the server's CPU (% of one
core) and peak RSS, from /proc.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPEECH = (
    "The kitchen lights are on. Please tell me the time. A closed surface with only one "
    "side. The quick brown fox jumps over the lazy dog. Turn the radio down a little."
)


def speech(seconds: float) -> np.ndarray:
    """16 kHz float32 speech (espeak-ng, looped), or the procedural demo without it."""
    import soundfile as sf
    import soxr

    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "s.wav"
            subprocess.run(["espeak-ng", "-w", str(p), SPEECH], check=True)
            pcm, rate = sf.read(str(p), dtype="float32")
        pcm = soxr.resample(pcm, rate, 16000).astype(np.float32)
        pcm = np.concatenate([pcm, np.zeros(16000, np.float32)])
    else:
        from soundflow.runtime.demo import procedural_demo

        pcm = procedural_demo()
    reps = int(np.ceil(seconds * 16000 / len(pcm)))
    return np.tile(pcm, reps)[: int(seconds * 16000)]


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _client(url: str, pcm: np.ndarray, phase: float, mode: str | None, t0: float) -> dict:
    from websockets.asyncio.client import connect

    n = 6400
    async with connect(url, compression=None, max_size=None, open_timeout=60) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "hello",
                    "mode": mode,
                    "format": "f32le",
                    "realtime": True,
                    "options": {"stats_every_s": 0},
                }
            )
        )
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"server refused a stream: {ready.get('text')}")
        summary: dict = {}

        async def reader() -> None:
            async for msg in ws:
                ev = json.loads(msg)
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
        return summary


async def _streams(url: str, n: int, pcm: np.ndarray, mode: str | None) -> list[dict]:
    t0 = time.monotonic() + 0.5
    phases = [0.4 * k / n for k in range(n)]
    return await asyncio.gather(*(_client(url, pcm, p, mode, t0) for p in phases))


def _start_server(bundle, batch: str, threads: int | None, provider: str):
    cmd = [
        sys.executable,
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
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"soundflow serve did not start: {proc.stderr.read()[-2000:]}")
    return proc, line.split()[-1]


def measure(url: str, pid: int, n: int, pcm: np.ndarray, mode: str | None) -> dict:
    cpu0, w0 = _proc_cpu_s(pid), time.monotonic()
    peak = [_proc_rss_mb(pid)]

    async def main() -> list[dict]:
        async def sample() -> None:
            while True:
                peak.append(_proc_rss_mb(pid))
                await asyncio.sleep(0.5)

        s = asyncio.ensure_future(sample())
        try:
            return await _streams(url, n, pcm, mode)
        finally:
            s.cancel()

    summaries = asyncio.run(main())
    wall = time.monotonic() - w0
    cpu = _proc_cpu_s(pid) - cpu0
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
        "cpu_pct": round(100 * cpu / wall, 1),
        "rss_mb": round(max(peak), 1),
        "wall_s": round(wall, 1),
    }


def run(
    bundle,
    streams: list[int],
    seconds: float,
    batches: list[str],
    mode: str | None,
    threads: int | None = None,
    provider: str = "auto",
    log=print,
) -> dict:
    pcm = speech(seconds)
    rows = []
    for batch in batches:
        proc, url = _start_server(bundle, batch, threads, provider)
        try:
            for n in streams:
                row = {"batch": batch, **measure(url, proc.pid, n, pcm, mode)}
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
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "load_avg_start": os.getloadavg()[0],
        "rows": rows,
    }


def table(result: dict) -> str:
    lines = [
        "| batch | streams | held at real time | decision p50 / p99 ms | server CPU % | RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['batch']} | {r['streams']} | {r['held_realtime']} / {r['streams']} | "
            f"{r['decision_p50_ms']} / {r['decision_p99_ms']} | {r['cpu_pct']} | {r['rss_mb']} |"
        )
    return "\n".join(lines)
