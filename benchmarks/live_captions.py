"""Live captions at real time, measured: WER and each word's caption lag on held-out speech
(flite voices training never heard), in fast mode, paced at real time, under `stress-ng`, and
through a real microphone path (a PulseAudio null sink's monitor), in one run.

    python -m soundflow.benchmarks.live_captions [--seconds 60] [--json F] [--no-mic]

Fast mode is also run with the speech PHASES seconds later in its 400 ms chunks: where the
windows cut the speech moves a 60 s stream's WER by up to 15 points, and a microphone's
phase is chance, so compare a live row with the phases' mean and range, not one phase.

A word's lag is the moment its caption was written (the event's stream time plus its latency)
minus the end of the word, estimated by spreading each sentence's duration over its words by
their letters. Words are matched to the reference by the edit-distance alignment.
"""

from __future__ import annotations

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
from soundflow.benchmarks.common import machine

RATE = SAMPLE_RATE
VOICES = ("rms", "awb")  # flite's; never a training source (train/heldout.py)
PHASES = (0.1, 0.2, 0.3)  # s of silence before the speech: other chunk phases, fast mode


def _sentences(seconds: float, seed: int = 5) -> list[str]:
    path = Path("/usr/share/games/fortunes/cookie")
    raw = path.read_text(encoding="latin1").split("\n%\n")
    cands = [" ".join(f.split()) for f in raw]
    cands = [c for c in cands if re.fullmatch(r"[A-Za-z ,.'?!]+", c) and 6 <= len(c.split()) <= 22]
    rng = np.random.default_rng(seed)
    rng.shuffle(cands)
    return cands[: max(1, int(seconds / 4))]  # ~4 s a sentence


def _speech(seconds: float, tmp: Path) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """(pcm, [(sentence, start s, end s)]): sentences in turn by two flite voices, 0.4 s apart."""
    import soundfile as sf
    import soxr

    pcm, spans, t = [np.zeros(RATE // 2, np.float32)], [], 0.5
    for i, text in enumerate(_sentences(seconds)):
        wav = tmp / f"s{i}.wav"
        subprocess.run(["flite", "-voice", VOICES[i % 2], "-t", text, "-o", str(wav)], check=True)
        x, sr = sf.read(wav, dtype="float32")
        x = soxr.resample(x, sr, RATE).astype(np.float32)
        spans.append((text, t, t + len(x) / RATE))
        pcm += [x, np.zeros(int(0.4 * RATE), np.float32)]
        t += len(x) / RATE + 0.4
    pcm.append(np.zeros(RATE * 2, np.float32))
    return np.concatenate(pcm), spans


def _word_ends(spans) -> tuple[list[str], list[float]]:
    from soundflow.train.evaluate import normalize

    words, ends = [], []
    for text, a, b in spans:
        ws = normalize(text)
        weights = np.cumsum([len(w) + 1 for w in ws])
        words += ws
        ends += list(a + (b - a) * weights / weights[-1])
    return words, ends


def _align(ref: list[str], hyp: list[str]) -> list[tuple[int, int]]:
    """(ref index, hyp index) of the words the edit-distance alignment matches."""
    n, m = len(ref), len(hyp)
    d = np.zeros((n + 1, m + 1), np.int32)
    d[:, 0], d[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(
                d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1])
            )
    pairs, i, j = [], n, m
    while i and j:
        if ref[i - 1] == hyp[j - 1] and d[i, j] == d[i - 1, j - 1]:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif d[i, j] == d[i - 1, j] + 1:
            i -= 1
        elif d[i, j] == d[i, j - 1] + 1:
            j -= 1
        else:
            i, j = i - 1, j - 1
    return pairs[::-1]


def score(events: list[dict], spans, timed: bool = True) -> dict:
    """`timed`: the run was at real time (in fast mode a word's lag means nothing)."""
    from soundflow.train.evaluate import edit_distance, normalize

    ref, ends = _word_ends(spans)
    hyp, said = [], []
    for e in events:
        if e["type"] == "response":
            for w in normalize(e["text"]):
                hyp.append(w)
                said.append(e["t"] + e["latency_ms"] / 1000)
    lags = [said[j] - ends[i] for i, j in _align(ref, hyp)] if timed else []
    summary = next((e for e in reversed(events) if e["type"] == "summary"), {})
    pct = (lambda q: round(float(np.percentile(lags, q)), 2)) if lags else (lambda q: None)
    return {
        "words": len(hyp),
        "reference_words": len(ref),
        "wer": round(edit_distance(ref, hyp) / len(ref), 4),
        "word_lag_p50_s": pct(50),
        "word_lag_p95_s": pct(95),
        **{
            k: summary.get(k)
            for k in (
                "caption_lag_p50_ms",
                "caption_lag_p95_ms",
                "caption_lag_max_ms",
                "captions_late",
                "captions_skipped",
                "decision_p99_ms",
                "stalls",
                "overruns",
            )
        },
    }


def _listen(args: list[str], env=None, after_start=None) -> list[dict]:
    cmd = [sys.executable, "-P", "-m", "soundflow.cli", "listen", "--mode", "transcribe"]
    cmd += ["--jsonl", "--stats", "0", *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if after_start is not None:
        while "listening" not in (line := p.stderr.readline()):
            if not line and p.poll() is not None:
                raise RuntimeError(p.stderr.read())
        after_start(p)
    out, err = p.communicate(timeout=900)
    if p.returncode != 0:
        raise RuntimeError(err[-500:])
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


class _Stress:
    def __init__(self, cpus: int) -> None:
        self.cpus, self.p = cpus, None

    def __enter__(self):
        if self.cpus:
            if not shutil.which("stress-ng"):
                raise SystemExit("stress-ng is missing: apt install stress-ng")
            self.p = subprocess.Popen(["stress-ng", "--cpu", str(self.cpus), "--quiet"])
            time.sleep(1.0)
        return self

    def __exit__(self, *exc) -> None:
        if self.p is not None:
            self.p.terminate()
            self.p.wait()


def offset_of(pcm: np.ndarray, recorded: np.ndarray, search_s: float = 30.0) -> float:
    """Seconds into `recorded` at which `pcm` begins: the peak of their cross-correlation
    over the first `search_s` seconds (a microphone's copy is late by the player's start
    and the sound server's buffers, which the stream clock must not count as caption lag)."""
    n = round(search_s * RATE)
    a, b = recorded[:n].astype(np.float64), pcm[: n // 2].astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    return int(np.argmax(corr[: len(a)])) / RATE


def _mic(wav: Path, duration: float) -> tuple[list[dict], float] | None:
    """`listen --device pulse` while `paplay` plays the file into a fresh null sink; event
    times are moved to the speech's own clock by where it lies in `listen --record`'s file.
    -> (events, seconds into the stream the speech began)."""
    import soundfile as sf

    if not (shutil.which("pulseaudio") and shutil.which("paplay") and shutil.which("pactl")):
        return None
    if subprocess.run(["pactl", "info"], capture_output=True).returncode != 0:
        subprocess.run(["pulseaudio", "--start", "--exit-idle-time=-1"], capture_output=True)
        time.sleep(1.0)
    sink = f"sf_bench_{os.getpid()}"
    module = subprocess.run(
        ["pactl", "load-module", "module-null-sink", f"sink_name={sink}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = {**os.environ, "PULSE_SOURCE": f"{sink}.monitor"}
    recorded = wav.with_name(wav.stem + "_mic.wav")

    def play(p):
        time.sleep(0.5)
        subprocess.run(["paplay", "-d", sink, str(wav)], check=True, timeout=duration + 60)
        time.sleep(3.0)  # the last readings
        p.send_signal(2)

    try:
        args = ["--device", "pulse", "--record", str(recorded)]
        events = _listen(args, env=env, after_start=play)
    finally:
        subprocess.run(["pactl", "unload-module", module], capture_output=True)
    lead = offset_of(sf.read(wav, dtype="float32")[0], sf.read(recorded, dtype="float32")[0])
    for e in events:  # the speech began `lead` seconds into the stream
        if e["type"] == "response":
            e["t"] -= lead
    return events, lead


def main(argv: list[str] | None = None) -> dict:
    import argparse

    import soundfile as sf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--stress", type=int, default=2, help="stress-ng --cpu N for the loaded rows")
    ap.add_argument("--no-mic", action="store_true")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if not shutil.which("flite"):
        raise SystemExit("flite is missing: apt install flite")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        pcm, spans = _speech(a.seconds, Path(tmp))
        wav = Path(tmp) / "speech.wav"
        sf.write(wav, pcm, RATE)
        print(f"{len(pcm) / RATE:.1f} s of held-out speech", file=sys.stderr)
        runs = [
            ("fast", ["--fast"], 0),
            ("realtime", [], 0),
            (f"realtime, stress-ng --cpu {a.stress}", [], a.stress),
            ("realtime, 60 ms deadline (old default)", ["--caption-budget-ms", "60"], a.stress),
        ]
        for name, args, cpus in runs:
            with _Stress(cpus):
                rows[name] = score(_listen(["--input", str(wav), *args]), spans, name != "fast")
            print(name, rows[name], file=sys.stderr)
        phases = {0.0: rows["fast"]["wer"]}
        for lead in PHASES:
            shifted = Path(tmp) / f"speech_{lead}.wav"
            sf.write(shifted, np.concatenate([np.zeros(round(lead * RATE), np.float32), pcm]), RATE)
            phases[lead] = score(_listen(["--input", str(shifted), "--fast"]), spans, False)["wer"]
        wers = list(phases.values())
        by_phase = {
            "wer_by_lead_s": phases,
            "wer_mean": round(float(np.mean(wers)), 4),
            "wer_min": min(wers),
            "wer_max": max(wers),
        }
        print("fast, by chunk phase", by_phase, file=sys.stderr)
        if not a.no_mic:
            for name, cpus in (
                ("microphone", 0),
                (f"microphone, stress-ng --cpu {a.stress}", a.stress),
            ):
                with _Stress(cpus):
                    heard = _mic(wav, len(pcm) / RATE)
                if heard is None:
                    print("PulseAudio is missing: the microphone rows are skipped", file=sys.stderr)
                    break
                events, lead = heard
                rows[name] = {**score(events, spans), "speech_starts_s": lead}
                print(name, rows[name], file=sys.stderr)
    fast = rows["fast"]["words"]
    for r in rows.values():
        r["words_vs_fast"] = round(r["words"] / fast, 3) if fast else None
    report = {
        "benchmark": "live_captions",
        "seconds": round(len(pcm) / RATE, 1),
        "machine": machine(),
        "rows": rows,
        "fast_by_phase": by_phase,
    }
    if a.json:
        a.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
