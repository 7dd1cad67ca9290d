"""Zero-shot YAMNet as an alert tagger (issue #30's "zero-shot YAMNet" row): a hand-written
map from AudioSet classes to the project's alert labels, thresholded, on real sounds.

    python -m soundflow.benchmarks.yamnet_zeroshot [--bundle DIR] [--json OUT]

Each clip is streamed through the bundle's AudioSet branch (runtime/audioset.py) in 400 ms
chunks after a second of silence; a label fires where any of its classes' scores reaches
THRESHOLD at any chunk. Two sets, reported apart (design.md: training and evaluation
sources stay separate): `library`, the training-allowed package clips the curated label
table covers (train/data/library.py), and `heldout`, Tux Paint's stamp and interface
sounds (train/heldout.py), which training never uses. Neither the map nor the threshold
was tuned on either set: the map is written from the class names alone.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from soundflow.audio import CHUNK_SAMPLES, SAMPLE_RATE
from soundflow.runtime.audioset import AudiosetEngine

THRESHOLD = 0.3  # set by hand before the first run; not tuned
LEAD_IN_S = 1.0  # silence before each clip, as a stream would have
# Alert label (the manifest's tagger labels) -> YAMNet display names (its class map).
# co_alarm has no AudioSet class of its own: a CO alarm's beeps read as a smoke alarm's.
CLASSES = {
    "smoke_alarm": ("Smoke detector, smoke alarm", "Fire alarm"),
    "co_alarm": (),
    "siren": (
        "Siren",
        "Civil defense siren",
        "Police car (siren)",
        "Ambulance (siren)",
        "Fire engine, fire truck (siren)",
        "Emergency vehicle",
    ),
    "car_horn": ("Vehicle horn, car horn, honking", "Air horn, truck horn", "Car alarm"),
    "doorbell": ("Doorbell", "Ding-dong"),
    "phone_ring": ("Telephone bell ringing", "Ringtone", "Telephone"),
    "alarm": ("Alarm", "Alarm clock", "Buzzer"),
    "baby_cry": ("Baby cry, infant cry",),
    "glass_break": ("Shatter", "Glass"),
    "crash": ("Smash, crash",),
    "explosion": ("Explosion", "Gunshot, gunfire", "Boom"),
    "kettle_whistle": ("Whistle", "Steam whistle"),
    "shout_for_help": ("Shout", "Yell", "Screaming", "Children shouting"),
}
# Library labels (train/data/sources/labels.csv) that are alert-worthy under another name.
LIBRARY_ALIASES = {"alarm_clock": "alarm", "level_crossing": "alarm"}


def column_map(classes: tuple[str, ...]) -> dict[str, list[int]]:
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({c for cs in CLASSES.values() for c in cs} - set(index))
    if unknown:
        raise ValueError(f"not YAMNet classes: {unknown}")
    return {label: [index[c] for c in cs] for label, cs in CLASSES.items()}


def fired(engine: AudiosetEngine, audio: np.ndarray, columns) -> dict[str, float]:
    """Label -> its highest mapped score over the clip's chunks, for labels that fire."""
    audio = np.concatenate([np.zeros(int(LEAD_IN_S * SAMPLE_RATE), np.float32), audio])
    audio = np.pad(audio, (0, -len(audio) % CHUNK_SAMPLES))
    state, best = engine.new_state(), Counter()
    for i in range(0, len(audio), CHUNK_SAMPLES):
        s = engine.step(state, audio[i : i + CHUNK_SAMPLES]).scores
        for label, cols in columns.items():
            if cols:
                best[label] = max(best[label], float(s[cols].max()))
    return {k: round(v, 3) for k, v in best.items() if v >= THRESHOLD}


def clip_sets() -> dict[str, list[tuple[str, str | None]]]:
    """Set name -> (file, expected alert label or None for a benign sound)."""
    from soundflow.train import heldout
    from soundflow.train.data.library import package_clips

    clips, _ = package_clips()
    library = []
    for c in clips:
        if "#" in (c.path or ""):  # entries inside a game's sound container: not a file
            continue
        label = LIBRARY_ALIASES.get(c.label, c.label) if c.alert else None
        library.append((c.path, label))
    sets = {"library": library}
    try:
        sets["heldout"] = [(str(p), label) for p, label in heldout.tuxpaint_sound_clips()]
    except heldout.SetUnavailable as e:
        print(f"heldout: skipped ({e})")
    return sets


def score(engine: AudiosetEngine, clips, columns) -> dict:
    from soundflow.export.yamnet import load_clip

    per_label = {k: {"events": 0, "hits": 0, "false": 0} for k in CLASSES}
    benign, quiet, rows = 0, 0, []
    for path, want in clips:
        got = fired(engine, load_clip(path), columns)
        rows.append({"file": path.split("/share/")[-1], "label": want, "fired": got})
        if want is None:
            benign += 1
            quiet += not got
        elif want in per_label:
            per_label[want]["events"] += 1
            per_label[want]["hits"] += want in got
        for label in got:
            if label != want:
                per_label[label]["false"] += 1
    return {"per_label": per_label, "benign": benign, "benign_quiet": quiet, "clips": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    engine = AudiosetEngine.from_bundle(args.bundle)
    columns = column_map(engine.classes)
    report = {"threshold": THRESHOLD, "classes": CLASSES, "sets": {}}
    for name, clips in clip_sets().items():
        r = score(engine, clips, columns)
        report["sets"][name] = r
        events = sum(v["events"] for v in r["per_label"].values())
        hits = sum(v["hits"] for v in r["per_label"].values())
        print(
            f"\n{name}: {len(clips)} clips; alert events named {hits}/{events}; benign "
            f"sounds quiet {r['benign_quiet']}/{r['benign']}"
        )
        print(f"  {'label':16s} events  hits  false")
        for label, v in r["per_label"].items():
            if v["events"] or v["false"]:
                print(f"  {label:16s} {v['events']:6d} {v['hits']:5d} {v['false']:6d}")
        for row in r["clips"]:
            if row["fired"] and set(row["fired"]) != {row["label"]}:
                print(f"    {row['file']} ({row['label'] or 'benign'}): {row['fired']}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
