"""Captions in noise: held-out speech over held-out real noise beds at fixed SNRs, the
streaming captions (fast mode) against offline Whisper tiny.en on the very same utterances.

    ./scripts/setup-heldout.sh      # the beds: apt widelands-data, minetest-data
    python -m soundflow.benchmarks.noisy_captions --json benchmarks/results/noisy_captions.json

Speech: train/heldout.py's `flite` (voices training never hears) and `asterisk` (real
recorded prompts) sets. Beds (train/heldout.py HELD_OUT, never trained on): running water,
a tavern's crowd, a workshop's machines, music. Each stream gets its own stretch of the bed,
scaled so that the speech's power over the bed's is the SNR (speech measured over its
utterances only). Offline Whisper hears each noisy utterance whole (benchmarks/peer.py).
Also counted: repeated fragments ("the the", "is side is side") the hypothesis has beyond
the reference's own, the error a window join makes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from soundflow.benchmarks.common import bundle_name, machine

WIDELANDS = Path("/usr/share/games/widelands/data")
MINETEST = Path("/usr/share/games/minetest/games/minetest_game/mods")
BEDS = {  # name -> glob patterns of its recordings
    "water": (str(MINETEST / "env_sounds/sounds/env_sounds_water.*.ogg"),),
    "tavern": (str(WIDELANDS / "sound/barbarians/taverns/*.ogg"),),
    "workshop": tuple(str(WIDELANDS / f"sound/{d}/*.ogg") for d in ("mill", "sawmill", "smiths")),
    "music": (str(WIDELANDS / "music/ingame_0[0-2].ogg"),),
}
SNRS_DB = (10.0, 5.0)
SETS = ("flite", "asterisk")
MAX_NGRAM = 3  # repeated fragments counted up to this many words


def bed_files(name: str) -> list[str]:
    import glob

    return sorted(f for pattern in BEDS[name] for f in glob.glob(pattern))


def bed(name: str, n: int, seed: int) -> np.ndarray:
    """`n` samples of bed `name`: its recordings joined, looped, from a seeded offset."""
    from soundflow.train.heldout import read_16k

    files = bed_files(name)
    if not files:
        raise FileNotFoundError(f"bed {name!r}: none of {BEDS[name]}; run scripts/setup-heldout.sh")
    x = np.concatenate([read_16k(f) for f in files])
    x = np.tile(x, int(np.ceil(n / len(x))) + 1)
    start = int(np.random.default_rng(seed).integers(0, len(x) - n))
    return x[start : start + n]


def mix(samples: np.ndarray, spans, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Speech plus noise at `snr_db` (speech power over its spans), kept below full scale."""
    speech = np.concatenate([samples[a:b] for a, b in spans]) if spans else samples
    gain = np.sqrt(np.mean(speech**2) / ((np.mean(noise**2) + 1e-12) * 10 ** (snr_db / 10)))
    y = samples + gain * noise
    peak = float(np.abs(y).max())
    return (y * (0.99 / peak) if peak > 0.99 else y).astype(np.float32)


def repeats(words: list[str]) -> int:
    """Places where a fragment of 1..MAX_NGRAM words comes twice in a row."""
    return sum(
        words[i : i + n] == words[i + n : i + 2 * n]
        for n in range(1, MAX_NGRAM + 1)
        for i in range(len(words) - 2 * n + 1)
    )


def score(engine, offline, streams, bed_name: str | None, snr: float | None) -> dict:
    """One (set, bed, SNR) cell: both systems' WER, and the repeated fragments."""
    from soundflow.train.evaluate import edit_distance, normalize, run_stream

    edits = ref_words = extra_repeats = offline_edits = 0
    example = None
    for k, s in enumerate(streams):
        x = s.samples
        if bed_name is not None:
            x = mix(x, s.spans, bed(bed_name, len(x), seed=k), snr)
        responses, summary = run_stream(engine, x, "transcribe")
        if summary.error:
            raise RuntimeError(f"{s.id}: {summary.error}")
        hyp = [w for r in responses for w in normalize(r.text)]
        edits += edit_distance(s.reference, hyp)
        ref_words += len(s.reference)
        extra_repeats += max(0, repeats(hyp) - repeats(s.reference))
        if offline is not None:
            said = [w for a, b in s.spans for w in normalize(offline.transcribe(x[a:b]))]
            offline_edits += edit_distance(s.reference, said)
        if example is None:
            example = {"reference": " ".join(s.reference[:24]), "soundflow": " ".join(hyp[:24])}
    wer = edits / ref_words
    off = offline_edits / ref_words if offline is not None else None
    return {
        "bed": bed_name or "clean",
        "snr_db": snr,
        "words": ref_words,
        "wer": round(wer, 4),
        "offline_wer": None if off is None else round(off, 4),
        "ratio": None if not off else round(wer / off, 2),
        "repeated_fragments": extra_repeats,
        "example": example,
    }


def run(bundle=None, sets=SETS, beds=tuple(BEDS), snrs=SNRS_DB, offline=True, log=print) -> dict:
    from soundflow.benchmarks.peer import offline_whisper
    from soundflow.runtime.kinds import open_engine
    from soundflow.train.heldout import load_set

    engine = open_engine(bundle)
    reference, why = offline_whisper() if offline else (None, "not asked for")
    rows = []
    for name in sets:
        streams = load_set(name)
        for bed_name, snr in [(None, None)] + [(b, s) for b in beds for s in snrs]:
            t0 = time.perf_counter()
            row = {"set": name, **score(engine, reference, streams, bed_name, snr)}
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            log(
                f"{name:9s} {row['bed']:9s} {snr or '-':>5} dB  WER {row['wer']:.3f}  "
                f"offline {row['offline_wer']}  ratio {row['ratio']}  "
                f"repeats {row['repeated_fragments']}"
            )
    return {
        "benchmark": "noisy_captions",
        "bundle": bundle_name(engine),
        "mode": "transcribe, fast (every reading on schedule: the policy, not the machine)",
        "offline": "Whisper tiny.en, whole utterances, greedy" if reference else why,
        "beds": {b: [Path(f).name for f in bed_files(b)] for b in beds},
        "machine": machine(),
        "table": rows,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--beds", default=",".join(BEDS))
    ap.add_argument("--snr", default=",".join(str(s) for s in SNRS_DB), help="dB, comma-separated")
    ap.add_argument("--no-offline", action="store_true", help="skip offline Whisper")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    from soundflow.train.heldout import SETS as KNOWN

    bad = [n for n in a.sets.split(",") if n not in KNOWN]
    if bad:
        ap.error(f"unknown set {bad[0]!r}; sets: {', '.join(KNOWN)}")
    unknown = [b for b in a.beds.split(",") if b not in BEDS]
    if unknown:
        ap.error(f"unknown bed {unknown[0]!r}; beds: {', '.join(BEDS)}")
    missing = [b for b in a.beds.split(",") if not bed_files(b)]
    if missing:  # before minutes of clean rows
        raise SystemExit(
            f"noisy_captions: no recordings of bed {missing[0]!r}; run scripts/setup-heldout.sh"
        )
    from soundflow.train.heldout import SetUnavailable

    try:
        result = run(
            a.bundle,
            tuple(a.sets.split(",")),
            tuple(a.beds.split(",")),
            tuple(float(s) for s in a.snr.split(",")),
            offline=not a.no_offline,
        )
    except (FileNotFoundError, SetUnavailable) as e:
        why = str(e) or "a set is missing"
        if "setup-heldout" not in why:
            why += "; run scripts/setup-heldout.sh"
        raise SystemExit(f"noisy_captions: {why}") from None
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
