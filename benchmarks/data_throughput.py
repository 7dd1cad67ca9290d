"""Data construction throughput: hours of stream built per CPU-minute (`soundflow data build`).

CPU time counts this process and every stream worker it forked (getrusage children), so the
figure does not depend on --workers; wall time is printed too.

    python benchmarks/data_throughput.py --hours 0.5 --recipe default --workers 2
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

from soundflow.train.data import report, shards
from soundflow.train.data.recipe import load_recipe


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=0.5)
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="keep the build here (default: a temp dir)")
    args = ap.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="sf-bench-"))
    recipe = load_recipe(args.recipe)
    shards.library_for("train", recipe)  # index packages before the clock starts
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    shards.build(out, recipe, args.hours, args.seed, workers=args.workers)
    cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
    st = report.statistics(out)
    result = {
        "recipe": args.recipe,
        "workers": args.workers,
        "hours_built": round(st["hours"], 3),
        "streams": st["streams"],
        "cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1),
        "hours_per_cpu_minute": round(st["hours"] / (cpu / 60), 3),
        "hours_per_wall_minute": round(st["hours"] / (wall / 60), 3),
    }
    print(json.dumps(result, indent=1))
    print(report.format_statistics(st))
    if not args.out:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
