"""`soundflow bench alerts`: alert mode on real audio training never used, by each decider a
bundle has (the AudioSet head, the tagger, the decoder's own <respond> step).

- benign hour (issue #30, deliverable 5): an hour of real benign audio held out of training
  (train/heldout.py's HELD_OUT "widelands" and "minetest": Widelands' music, its workshop,
  animal and interface sounds, Minetest's water, fire, footsteps and doors; Tux Paint's spoken
  descriptions and flite's held-out voices), built on the fly, the same every run. Every alert
  on it is false: false alerts per hour, per label and in total, and what each fired on.
- held-out events: the streams of benchmarks/alert_heads.py's held-out set that hold an
  alert-worthy sound (Tux Paint's fire truck siren, each rendered three times, and its
  independent synthetic alarms): per label, events named within two chunks of onset
  (alert_heads.score) and the onset latency in chunks.
- `--tuxpaint-sounds`: the earlier report instead, on Tux Paint's stamp and interface sounds:
  the benign sounds that raised an alert, the siren named, and the words transcribe mode
  captions on those speechless streams (per speech-gate setting, where the tagger has a gate).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from soundflow.audio import CHUNK_SAMPLES, SAMPLE_RATE
from soundflow.benchmarks.common import bundle_name, machine


def run(bundle=None, threads: int | None = None, seed: int = 0, log=None) -> dict:
    """`log(line)`, where given, hears a progress line per stream."""
    from soundflow.runtime.kinds import open_engine
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.train import heldout
    from soundflow.train.evaluate import new_alert_tally, run_stream, score_alerts

    engine = open_engine(bundle, RuntimeOptions.from_flags(threads=threads))
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


# ------------------------------------------------------------------ benign hour (issue #30)
WIDELANDS_DIR = Path("/usr/share/games/widelands/data")
MINETEST_DIR = Path("/usr/share/games/minetest/games/minetest_game/mods")
# Sounds an alert would be right about, or might be (a military horn call, breaking glass, an
# explosion): not benign, left out of the benign set.
NOT_BENIGN = ("*/military/*", "*break_glass*", "*tnt_explode*")
MUSIC_PIECE_S = 60.0  # music between two blocks of sounds and speech
BLOCK_SOUNDS_S = 15.0  # game, UI and ambience sounds per block
BLOCK_SPEECH = 2  # held-out utterances per block
BENIGN_STREAM_S = 300.0  # the benign audio is cut into streams this long
BENIGN_SEED = 30_005
DECIDERS = ("audioset", "tagger", "protocol")
SETUP = "scripts/setup-heldout.sh (apt-get install widelands-data minetest-data)"


def _benign_files() -> tuple[list[Path], list[Path]]:
    """(music tracks, short sounds) of the held-out game packages, sorted; alert-like out."""
    import fnmatch

    music = sorted((WIDELANDS_DIR / "music").glob("*.ogg"))
    if not music:
        from soundflow.train.heldout import SetUnavailable

        raise SetUnavailable(f"no music under {WIDELANDS_DIR / 'music'}: run {SETUP}")
    sounds = sorted((WIDELANDS_DIR / "sound").rglob("*.ogg"))
    sounds += sorted(MINETEST_DIR.glob("*/sounds/*.ogg"))
    sounds = [p for p in sounds if not any(fnmatch.fnmatch(str(p), pat) for pat in NOT_BENIGN)]
    return music, sounds


def _speech() -> list[tuple[np.ndarray, str]]:
    """Held-out speech: Tux Paint's spoken descriptions (real voices), flite's rms and awb."""
    from soundflow.train import heldout

    out = []
    try:
        out += [(heldout.read_16k(p), str(p)) for p, _ in heldout.tuxpaint_clips()]
    except heldout.SetUnavailable:
        pass
    try:
        out += [(x, f"flite:{voice}") for x, _, voice in heldout.flite_utterances()]
    except (heldout.SetUnavailable, FileNotFoundError):
        pass
    return out


def benign_streams(minutes: float, seed: int = BENIGN_SEED) -> tuple[list[dict], dict]:
    """`minutes` of benign real audio, the same every run: blocks of game/UI/ambience sounds
    and speech, each followed by MUSIC_PIECE_S of a music track (the tracks in a shuffled
    order, each played on where the last piece stopped), cut into BENIGN_STREAM_S streams.
    Returns (streams, what each kind adds up to in seconds); each stream lists its parts
    (start, end, kind, file) to name what an alert fired on."""
    from soundflow.train import heldout

    music, sounds = _benign_files()
    rng = np.random.default_rng(seed)
    music = [music[i] for i in rng.permutation(len(music))]
    sounds = [sounds[i] for i in rng.permutation(len(sounds))]
    speech = _speech()
    speech = [speech[i] for i in rng.permutation(len(speech))]
    total = int(minutes * 60 * SAMPLE_RATE)
    parts: list[tuple[np.ndarray, str, str]] = []
    length, track, pos, k_sound, k_speech = 0, None, 0, 0, 0
    while length < total:
        block = 0
        while block < BLOCK_SOUNDS_S * SAMPLE_RATE and sounds:
            p = sounds[k_sound % len(sounds)]
            parts.append((heldout.read_16k(p), "sound", str(p)))
            block += len(parts[-1][0])
            k_sound += 1
        for _ in range(BLOCK_SPEECH if speech else 0):
            x, name = speech[k_speech % len(speech)]
            parts.append((x, "speech", name))
            k_speech += 1
        if track is None or pos >= len(track[0]):
            p = music[len({f for _, kind, f in parts if kind == "music"}) % len(music)]
            track, pos = (heldout.read_16k(p), str(p)), 0
        piece = track[0][pos : pos + int(MUSIC_PIECE_S * SAMPLE_RATE)]
        parts.append((piece, "music", track[1]))
        pos += len(piece)
        length = sum(len(x) for x, *_ in parts)
    audio = np.concatenate([x for x, *_ in parts])[:total]
    audio = audio[: len(audio) - len(audio) % CHUNK_SAMPLES]
    spans, at = [], 0
    for x, kind, f in parts:
        spans.append((at / SAMPLE_RATE, (at + len(x)) / SAMPLE_RATE, kind, f))
        at += len(x)
    n = int(BENIGN_STREAM_S * SAMPLE_RATE)
    streams = []
    for i in range(0, len(audio), n):
        x = audio[i : i + n]
        t0, t1 = i / SAMPLE_RATE, (i + len(x)) / SAMPLE_RATE
        streams.append(
            {
                "id": f"benign-{len(streams):02d}",
                "samples": x,
                "duration": len(x) / SAMPLE_RATE,
                "t0": t0,
                "parts": [(a - t0, b - t0, k, f) for a, b, k, f in spans if b > t0 and a < t1],
            }
        )
    end = len(audio) / SAMPLE_RATE
    kinds = {
        k: round(sum(min(b, end) - a for a, b, kk, _ in spans if kk == k and a < end), 1)
        for k in ("music", "sound", "speech")
    }
    return streams, kinds


def event_streams(limit: int | None = None) -> list[dict]:
    """alert_heads' held-out streams that hold an alert-worthy sound (the first `limit`)."""
    from soundflow.benchmarks.alert_heads import heldout_streams

    out = [s for s in heldout_streams() if any(e["label"] for e in s["events"])]
    return out[:limit] if limit is not None else out


def deciders_of(engine) -> list[str]:
    """The alert deciders a bundle has, in DECIDERS' order."""
    spec = engine.spec
    has = {
        "audioset": spec.audioset is not None and spec.audioset.head is not None,
        "tagger": getattr(spec, "tagger", None) is not None,
        "protocol": True,
    }
    return [d for d in DECIDERS if has[d]]


def _alerts(engine, stream: dict, decider: str) -> list[tuple[float, str]]:
    from soundflow.train.evaluate import run_stream

    responses, summary = run_stream(engine, stream["samples"], "alert", alerts=decider)
    if summary.error is not None:
        raise RuntimeError(f"{stream['id']}: {summary.error}")
    return [(r.t, r.alert or "?") for r in responses]


def _source(stream: dict, t: float) -> dict:
    """The part of the benign audio an alert at `t` heard: the last one begun by then."""
    a, _, kind, f = max((p for p in stream["parts"] if p[0] <= t), key=lambda p: p[0])
    return {"t": round(stream["t0"] + t, 1), "kind": kind, "file": f.split("/share/")[-1]}


def latency(streams: list[dict], alerts_by_stream: dict, labels) -> dict:
    """Per label: chunks from the chunk holding an event's onset to the chunk whose end
    brought the first alert with its label (0: that same chunk), for events alerted within
    train/evaluate.py's window (ALERT_WINDOW_S after onset, plus a chunk)."""
    from soundflow.benchmarks.alert_heads import CHUNK_S
    from soundflow.train.evaluate import ALERT_WINDOW_S

    per: dict[str, list[int]] = {k: [] for k in labels}
    for s in streams:
        for ev in s["events"]:
            if ev["label"] not in per:
                continue
            hit = [
                t
                for t, lab in alerts_by_stream[s["id"]]
                if lab == ev["label"] and ev["start"] <= t <= ev["start"] + ALERT_WINDOW_S + CHUNK_S
            ]
            if hit:
                per[ev["label"]].append(round(min(hit) / CHUNK_S) - 1 - int(ev["start"] // CHUNK_S))
    return {
        k: {"alerted": len(v), "median": float(np.median(v)), "max": max(v)}
        for k, v in per.items()
        if v
    }


def benign_run(
    bundle=None,
    threads: int | None = None,
    minutes: float = 60.0,
    deciders: list[str] | None = None,
    event_limit: int | None = None,
    log=None,
) -> dict:
    """The benign hour and the held-out events through each decider (`deciders`: None = all
    the bundle has); `minutes` 0 leaves the benign part out, `event_limit` 0 the events."""
    from soundflow.benchmarks.alert_heads import score
    from soundflow.runtime.kinds import open_engine
    from soundflow.runtime.options import RuntimeOptions

    engine = open_engine(bundle, RuntimeOptions.from_flags(threads=threads))
    if "alert" not in engine.spec.tasks:
        raise ValueError(f"{engine.spec.path} has no alert mode")
    has = deciders_of(engine)
    deciders = list(deciders) if deciders else has
    missing = [d for d in deciders if d not in has]
    if missing:
        raise ValueError(f"{engine.spec.path} has no {missing[0]} decider; it has {', '.join(has)}")
    t0 = time.perf_counter()
    benign, kinds = benign_streams(minutes) if minutes > 0 else ([], {})
    events = event_streams(event_limit) if event_limit != 0 else []
    if log is not None:
        log(f"sets built in {time.perf_counter() - t0:.0f} s")
    hours = sum(s["duration"] for s in benign) / 3600
    labels = sorted({e["label"] for s in events for e in s["events"] if e["label"]})
    rows = []
    for decider in deciders:
        row: dict = {"decider": decider}
        t1, fired = time.perf_counter(), []
        for i, s in enumerate(benign):
            _progress(log, f"benign audio ({decider})", i, benign, t1)
            fired += [(label, _source(s, t)) for t, label in _alerts(engine, s, decider)]
        if benign:
            by_label: dict[str, int] = {}
            for label, _ in fired:
                by_label[label] = by_label.get(label, 0) + 1
            row["benign"] = {
                "false_alerts": len(fired),
                "false_per_hour": round(len(fired) / hours, 2),
                "false_by_label": dict(sorted(by_label.items())),
                "false_per_hour_by_label": {
                    k: round(v / hours, 2) for k, v in sorted(by_label.items())
                },
                "by_kind": {k: sum(src["kind"] == k for _, src in fired) for k in kinds},
                "alerts": [{"label": label, **src} for label, src in fired],
                "seconds": round(time.perf_counter() - t1, 1),
            }
        t1 = time.perf_counter()
        alerts = {}
        for i, s in enumerate(events):
            _progress(log, f"held-out events ({decider})", i, events, t1)
            alerts[s["id"]] = _alerts(engine, s, decider)
        if events:
            row["events"] = {
                **score(events, alerts, labels),
                "latency_chunks": latency(events, alerts, labels),
                "seconds": round(time.perf_counter() - t1, 1),
            }
        rows.append(row)
    return {
        "benchmark": "alerts_benign",
        "bundle": bundle_name(engine),
        "machine": machine(),
        "chunk_s": engine.spec.chunk_ms / 1000,
        "benign": {
            "set": "widelands music and sounds, minetest sounds, Tux Paint and flite speech "
            "(held out of training: train/heldout.py)",
            "left_out": list(NOT_BENIGN),
            "minutes": round(hours * 60, 2),
            "hours": round(hours, 4),
            "streams": len(benign),
            "seconds_by_kind": kinds,
        }
        if benign
        else None,
        "events": {
            "set": "benchmarks/alert_heads.py's held-out streams holding an alert-worthy sound",
            "streams": len(events),
            "hours": round(sum(s["duration"] for s in events) / 3600, 4),
            "alert_events": sum(1 for s in events for e in s["events"] if e["label"]),
            "named": "an alert with the label by the end of the onset's chunk + 2 chunks",
        }
        if events
        else None,
        "deciders": rows,
    }
