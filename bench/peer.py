"""`soundflow bench peer`: soundflow's transcribe mode against pocketsphinx (CMU, its own
English model) on the same speech streams: WER, real-time factor and per-chunk latency.

Both get each stream as 16 kHz mono in 400 ms chunks; pocketsphinx gets int16 samples,
cuts utterances with its own endpointer and is scored on their final hypotheses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from soundflow.bench.common import bundle_name, pct

INSTALL_HINT = "pip install 'soundflow[bench]' (pocketsphinx, with its English model)"


@dataclass(frozen=True)
class PeerOptions:
    max_streams: int | None = None  # score only the first N streams of the split
    variant: str = "fp32"
    threads: int | None = None


def pocketsphinx_decoder():
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise RuntimeError(f"pocketsphinx is not installed: {INSTALL_HINT}") from None
    return Decoder(samprate=16000, loglevel="FATAL")


def run_pocketsphinx(decoder, samples: np.ndarray, chunk: int) -> tuple[str, list[float], float]:
    """-> (hypothesis, per-chunk ms, wall s) for one stream. Utterances are cut by
    pocketsphinx's own endpointer (VAD), as its streaming examples do."""
    from pocketsphinx import Endpointer

    ep = Endpointer(sample_rate=16000)
    frame = ep.frame_bytes // 2  # samples per VAD frame
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % frame, np.int16)])
    per_chunk, words = [], []
    t0 = time.perf_counter()
    done = 0  # samples handed to the endpointer (whole frames only; the rest waits)
    for i in range(0, len(pcm), chunk):
        t = time.perf_counter()
        end = min(len(pcm), i + chunk)
        for j in range(done, end - frame + 1, frame):
            done = j + frame
            was = ep.in_speech
            speech = ep.process(pcm[j : j + frame].tobytes())
            if speech is None:
                continue
            if not was:
                decoder.start_utt()
            decoder.process_raw(speech, False, False)
            if not ep.in_speech:
                decoder.end_utt()
                hyp = decoder.hyp()
                words.append(hyp.hypstr if hyp is not None else "")
        per_chunk.append((time.perf_counter() - t) * 1e3)
    if ep.in_speech:  # the stream ended mid-utterance
        speech = ep.end_stream(np.zeros(frame, np.int16).tobytes())
        if speech is not None:
            decoder.process_raw(speech, False, False)
        decoder.end_utt()
        hyp = decoder.hyp()
        words.append(hyp.hypstr if hyp is not None else "")
    return " ".join(words), per_chunk, time.perf_counter() - t0


def run(bundle, data, opts: PeerOptions) -> dict:
    from soundflow.runtime.engine import OrtEngine
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.train.data.shards import iter_streams
    from soundflow.train.evaluate import edit_distance, normalize, run_stream

    decoder = pocketsphinx_decoder()
    engine = OrtEngine(
        bundle, RuntimeOptions(realtime=False, threads=opts.threads), variant=opts.variant
    )
    if "transcribe" not in engine.spec.modes:
        raise RuntimeError(f"the bundle has no transcribe mode (modes: {engine.spec.modes})")
    chunk = engine.spec.chunk_samples
    acc = {
        name: {"edits": 0, "wall": 0.0, "chunk_ms": [], "latency_ms": []}
        for name in ("soundflow", "pocketsphinx")
    }
    words = streams = 0
    seconds = 0.0
    examples = []
    for record in iter_streams(data):
        if opts.max_streams is not None and streams >= opts.max_streams:
            break
        streams += 1
        samples = record["samples"]
        seconds += len(samples) / 16000
        ref = [w for word in record["words"] for w in normalize(word["word"])]
        words += len(ref)

        t = time.perf_counter()
        responses, summary = run_stream(engine, samples, "transcribe")
        sf = acc["soundflow"]
        sf["wall"] += time.perf_counter() - t
        hyp_sf = [w for r in responses for w in normalize(r.text)]
        sf["edits"] += edit_distance(ref, hyp_sf)
        sf["chunk_ms"].append(summary.decision_p50_ms)
        sf["latency_ms"] += [r.latency_ms for r in responses]

        text, per_chunk, wall = run_pocketsphinx(decoder, samples, chunk)
        ps = acc["pocketsphinx"]
        ps["wall"] += wall
        hyp_ps = normalize(text)
        ps["edits"] += edit_distance(ref, hyp_ps)
        ps["chunk_ms"] += per_chunk
        if len(examples) < 2:
            examples.append(
                {
                    "id": record["id"],
                    "reference": " ".join(ref[:30]),
                    "soundflow": " ".join(hyp_sf[:30]),
                    "pocketsphinx": " ".join(hyp_ps[:30]),
                }
            )

    def summary_of(name: str) -> dict:
        a = acc[name]
        return {
            "wer": round(a["edits"] / words, 4) if words else None,
            "realtime_factor": round(seconds / a["wall"], 2) if a["wall"] else None,
            "chunk_ms_p50": pct(a["chunk_ms"], 50),
            "chunk_ms_p99": pct(a["chunk_ms"], 99),
        }

    sf, ps = summary_of("soundflow"), summary_of("pocketsphinx")
    sf["chunk_ms_note"] = "median over streams of each stream's decision latency p50 (fast mode)"
    sf["response_latency_ms_p50"] = pct(acc["soundflow"]["latency_ms"], 50)
    ps["chunk_ms_note"] = "process_raw time per 400 ms chunk"
    from importlib.metadata import PackageNotFoundError, version

    try:
        ps_version = version("pocketsphinx")
    except PackageNotFoundError:
        ps_version = "unknown"
    return {
        "bundle": str(bundle) if bundle else "embedded default",
        "model": bundle_name(engine),
        "data": str(data),
        "streams": streams,
        "hours": round(seconds / 3600, 4),
        "reference_words": words,
        "soundflow": sf,
        "pocketsphinx": {
            **ps,
            "version": ps_version,
            "model": "en-us (bundled with the pip package), default LM and dictionary",
        },
        "examples": examples,
        "options": {k: getattr(opts, k) for k in opts.__dataclass_fields__},
    }
