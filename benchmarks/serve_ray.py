"""`soundflow serve --ray` under load: N live streams through Ray's proxy to R replicas, and
the single-box server with as many workers on the same machine in the same run.

    python -m soundflow.benchmarks.serve_ray --streams 8,12 --replicas 2 \
        --json benchmarks/results/serve_ray.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from soundflow.benchmarks import serve as sv


def _tree(pid: int) -> list[int]:
    """`pid` and every process below it (Ray's raylet, GCS, proxy and replicas)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _cpu_s(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        try:
            total += sv.proc_cpu_s(p)
        except OSError:  # gone since
            pass
    return total


def _rss_mb(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        try:
            total += sv.proc_rss_mb(p)
        except OSError:
            pass
    return total


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-P", "-m", "soundflow.cli", "serve", "--port", "0", "--quiet", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()  # the address, once every replica is up (or EOF)
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"soundflow serve {' '.join(args)} did not start")
    return proc, line.split()[-1]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()


def measure(url: str, pid: int, n: int, pcm, mode, reference) -> dict:
    """One row, as `bench serve`'s, with CPU and RSS summed over the server's process tree."""
    pids = _tree(pid)  # settled: every replica is up before the banner
    cpu0, w0 = _cpu_s(pids), time.monotonic()
    peak = [_rss_mb(pids)]

    async def main():
        async def sample() -> None:
            while True:
                peak.append(_rss_mb(pids))
                await asyncio.sleep(0.5)

        s = asyncio.ensure_future(sample())
        try:
            return await sv.run_streams(url, n, pcm, mode, {})
        finally:
            s.cancel()

    streams = asyncio.run(main())
    wall = time.monotonic() - w0
    return {
        **sv.capacity(n, streams, reference),
        "cpu_pct": round(100 * (_cpu_s(pids) - cpu0) / wall, 1),
        "rss_mb": round(max(peak), 1),
        "wall_s": round(wall, 1),
    }


def run(streams: list[int], replicas: int, seconds: float, mode: str, log=print) -> dict:
    pcm, words, repetitions = sv.speech(seconds)
    reference = words if mode == "transcribe" else None
    rows = []
    for server, args in (
        ("ray", ["--ray", "--replicas", str(replicas)]),
        ("single", ["--workers", str(replicas)]),
    ):
        t0 = time.monotonic()
        proc, url = _start(args)
        started = round(time.monotonic() - t0, 1)
        try:
            for n in streams:
                row = {"server": server, "replicas_or_workers": replicas, "start_s": started}
                row.update(measure(url, proc.pid, n, pcm, mode, reference))
                log(json.dumps(row))
                rows.append(row)
        finally:
            _stop(proc)
    return {
        "bench": "serve_ray",
        "bundle": "embedded default",
        "mode": mode,
        "seconds": seconds,
        "repetitions": repetitions,
        "cores": len(os.sched_getaffinity(0)),
        "load_avg_start": os.getloadavg()[0],
        "rows": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", default="8,12")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--seconds", type=float, default=24.0)
    p.add_argument("--mode", default="transcribe")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    result = run([int(x) for x in a.streams.split(",")], a.replicas, a.seconds, a.mode)
    result["command"] = "python -m soundflow.benchmarks.serve_ray " + " ".join(sys.argv[1:])
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
