"""Cut the `soundflow listen --demo` clip from an eval split: the window of a stream with
the most alert and assist targets, so the demo shows all three tasks on unseen voices.

    python scripts/make_demo.py runs/data/eval soundflow/assets/demo.flac --seconds 90
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import soundfile as sf


def best_window(record: dict, seconds: float) -> float:
    events = [t["t"] for task in ("alert", "assist") for t in record["targets"].get(task, [])]
    starts = [max(0.0, min(t - 5.0, record["duration"] - seconds)) for t in events] or [0.0]
    return max(starts, key=lambda s: sum(s <= t < s + seconds for t in events))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seconds", type=float, default=90.0)
    args = ap.parse_args()
    records = [json.loads(x) for x in (args.split / "streams.jsonl").read_text().splitlines() if x]

    def score(r):
        s = best_window(r, args.seconds)
        return sum(
            s <= t["t"] < s + args.seconds for k in ("alert", "assist") for t in r["targets"][k]
        )

    record = max(records, key=score)
    start = best_window(record, args.seconds)
    pcm, rate = sf.read(args.split / record["audio"], dtype="float32")
    clip = pcm[int(start * rate) : int((start + args.seconds) * rate)]
    sf.write(args.out, clip, rate, subtype="PCM_16")
    print(
        f"{args.out}: {len(clip) / rate:.1f} s of {record['id']} from {start:.1f} s "
        f"({score(record)} alert/assist targets)"
    )


if __name__ == "__main__":
    main()
