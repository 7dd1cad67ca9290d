"""`soundflow bench size`: random-weight decoders of real sizes, exported to bundles (fp32 and
int8) and run through the same runtime: decode tokens/s, decision latency, memory, and the
runtime's overhead over bare ONNX Runtime calls.

Each variant is measured in a fresh process, so its RSS is its own.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundflow.benchmarks.common import make_source, pct, rss_mb, run_probe, synthetic_blocks

# Decoder sizes (transformers Qwen2 configs), a data file beside this module.
SIZES = {
    k: v
    for k, v in json.loads((Path(__file__).with_name("sizes.json")).read_text()).items()
    if not k.startswith("_")
}


CHUNK_REPS = 12  # chunks timed through the runtime and bare, interleaved


@dataclass(frozen=True)
class SizeOptions:
    sizes: tuple[str, ...] = ("tiny", "qwen2-0.5b")
    work: str = "/tmp/soundflow-bench-size"  # checkpoints and bundles are built here (kept)
    vocab: int = 32_768  # decoder vocabulary (a trained BPE, padded with unused ids)
    seconds: float = 20.0  # stream per variant for decision latency (fast mode, sync)
    tokens: int = 32  # decode steps timed for tokens/s
    cache_capacity: int = 1024
    threads: int | None = None
    int8: bool = True


def _tokenizer(vocab: int):
    """A byte-level BPE (soundflow's tokenizer) trained on this repository's own docs."""
    from soundflow.train.tokenizer import train_tokenizer

    root = Path(__file__).resolve().parent.parent
    texts = []
    for name in ("README.md", "ARCHITECTURE.md"):
        if (root / name).is_file():
            texts += (root / name).read_text().splitlines()
    texts += ["a smoke alarm is going off", "that was a dog barking"]
    return train_tokenizer(texts, vocab_size=min(vocab, 2048))


def build(size: str, opts: SizeOptions) -> Path:
    """Random-weight checkpoint -> fp32 (+ int8) bundle under opts.work; reused if present."""
    bundle = Path(opts.work) / f"{size}-v{opts.vocab}" / "bundle"
    if (bundle / "manifest.json").is_file():
        m = json.loads((bundle / "manifest.json").read_text())
        if not opts.int8 or "int8" in m.get("variants", {}):
            return bundle
    import torch

    from soundflow.export.onnx_export import export_bundle
    from soundflow.train.checkpoint import save_checkpoint
    from soundflow.train.config import ModelConfig, tiny_decoder
    from soundflow.train.kinds.decoder.model import SoundFlowModel

    torch.manual_seed(0)
    tok = _tokenizer(opts.vocab)
    dec = {**tiny_decoder(), **SIZES[size], "vocab_size": max(opts.vocab, tok.get_vocab_size())}
    model = SoundFlowModel(ModelConfig(decoder=dec)).eval()
    ck = bundle.parent / "checkpoint"
    save_checkpoint(model, tok, ck, extra={"recipe": f"random-{size}", "step": 0})
    del model
    export_bundle(ck, bundle, cache_capacity=opts.cache_capacity, log=lambda *_: None)
    if opts.int8:  # no fp32 agreement report: the weights are random
        from soundflow.export.quantize import quantize_int8

        quantize_int8(bundle)
    return bundle


def measure(bundle: str, variant: str, opts: SizeOptions) -> dict:
    """In a fresh process: load, decide on a stream, generate, and time bare ORT calls."""
    from soundflow.runtime.kinds import open_engine, open_stream
    from soundflow.runtime.options import RuntimeOptions

    rss0 = rss_mb()
    t = time.perf_counter()
    # threshold 1.0: decide every chunk, never respond (random weights respond at random);
    # generation is timed apart, token by token.
    runtime = RuntimeOptions.from_flags(
        realtime=False, asynchronous=False, threads=opts.threads, threshold=1.0, stats_every_s=0
    )
    engine = open_engine(bundle, runtime, variant=variant)
    load_s = time.perf_counter() - t
    rss_loaded = rss_mb()
    spec = engine.spec
    chunk_s = spec.chunk_ms / 1000
    cap = int(np.ceil(opts.seconds / chunk_s)) + 2
    summary, times, cpu, wall = run_probe(
        engine, make_source(opts.seconds, realtime=False), runtime, cap
    )
    n = times.n
    runtime_chunk_ms = wall / max(n, 1) * 1e3

    # Tokens/s through the runtime's stream (KVCache + IO binding), one token per call.
    from soundflow.runtime.kinds.decoder import EncoderStream

    q = spec.embeds_per_chunk + 1
    tokens = open_stream(engine, runtime)
    live = _live(engine, tokens)  # the cache arrays, for bare calls interleaved with the stream's
    x = engine.embed([1])
    token_ms, bare_ms = [], []
    for _ in range(opts.tokens):
        t = time.perf_counter()
        logits = tokens.feed_embeds(x)
        x = engine.embed([int(np.argmax(logits[-1]))])
        token_ms.append((time.perf_counter() - t) * 1e3)
        if not tokens.cache.needs_room(1):  # the same call, bare, right after (same contention)
            mask, pos = tokens.cache.inputs(1)
            f = engine.decoder_feeds(x, mask, pos, live)
            t = time.perf_counter()
            engine.decoder.run(None, f)
            bare_ms.append((time.perf_counter() - t) * 1e3)
    runtime_token = float(np.median(token_ms[1:] or token_ms))
    bare_token = float(np.median(bare_ms[1:] or bare_ms))

    # Per chunk, interleaved (same contention): the runtime's EncoderStream.encode +
    # DecoderStream.decide (embedding lookup, mask, IO binding, cache write), then the
    # same two calls made bare (`session.run`) on the same audio, state, embeddings and
    # cache arrays.
    enc, dec = EncoderStream(engine), open_stream(engine, runtime)
    pcm = np.concatenate(list(synthetic_blocks(CHUNK_REPS * chunk_s)))
    chunks = pcm[: CHUNK_REPS * spec.chunk_samples].reshape(CHUNK_REPS, -1)
    dec.decide(enc.encode(chunks[0]))  # the prompt goes in with the first chunk
    live = _live(engine, dec)
    run_ms, bare_ms = [], []
    for chunk in chunks[1:]:
        state = enc.state
        t = time.perf_counter()
        embeds = enc.encode(chunk)
        dec.decide(embeds)
        run_ms.append((time.perf_counter() - t) * 1e3)
        if dec.cache.needs_room(q):
            continue
        x = np.concatenate([engine.embed(dec.pending), embeds])
        mask, pos = dec.cache.inputs(len(x))
        feeds_e = {engine.audio_name: chunk[None], **state}
        feeds_d = engine.decoder_feeds(x, mask, pos, live)
        t = time.perf_counter()
        engine.encoder.run(None, feeds_e)
        engine.decoder.run(None, feeds_d)
        bare_ms.append((time.perf_counter() - t) * 1e3)
    runtime_work = float(np.median(run_ms))
    bare_chunk = float(np.median(bare_ms))
    return {
        "variant": variant,
        "load_s": round(load_s, 2),
        "rss_mb_loaded": round(rss_loaded - rss0, 1),
        "rss_mb_peak_run": rss_mb(),
        "decode_tokens_per_s": round(1e3 / runtime_token, 2),
        "token_ms_p50": round(runtime_token, 3),
        "bare_token_ms": round(bare_token, 3),
        "token_overhead_percent": round(100 * (runtime_token / bare_token - 1), 1),
        "decision_ms_p50": pct(times.decision[:n], 50),
        "decision_ms_p99": pct(times.decision[:n], 99),
        "encode_ms_p50": pct(times.encode[:n], 50),
        "decide_ms_p50": pct(times.decide[:n], 50),
        "runtime_chunk_ms_p50": round(runtime_work, 3),
        "bare_chunk_ms": round(bare_chunk, 3),
        "overhead_percent": round(100 * (runtime_work / bare_chunk - 1), 1),
        "loop_wall_ms_per_chunk": round(runtime_chunk_ms, 3),  # incl. synthetic audio generation
        "realtime_factor": round(summary.realtime_factor, 2),
        "cpu_percent": round(cpu, 1),
        "chunks": n,
    }


def _live(engine, stream) -> list[np.ndarray]:
    """A stream's cache arrays, (key, value) per layer: the past of a bare `session.run`."""
    return [a for k, v in zip(stream.cache.keys, stream.cache.values, strict=True) for a in (k, v)]


def _measure_fresh(bundle: Path, variant: str, opts: SizeOptions) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(measure, (str(bundle), variant, opts))


def run(opts: SizeOptions, log=print) -> dict:
    out: dict = {"sizes": {}, "options": {k: getattr(opts, k) for k in opts.__dataclass_fields__}}
    for size in opts.sizes:
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r}: use {sorted(SIZES)}")
        t = time.perf_counter()
        bundle = build(size, opts)
        build_s = time.perf_counter() - t
        m = json.loads((bundle / "manifest.json").read_text())
        params = m["model"]["parameters"]
        entry = {
            "config": SIZES[size],
            "vocab": m["decoder"]["vocab_size"],
            "tokenizer_tokens": len(
                json.loads((bundle / "tokenizer.json").read_text())["model"]["vocab"]
            ),
            "parameters": params,
            "bundle": str(bundle),
            "build_s": round(build_s, 1),
            "files_mb": {
                p.name: round(p.stat().st_size / 1e6, 1) for p in sorted(bundle.glob("*.onnx"))
            },
            "variants": {},
        }
        for variant in ("fp32", "int8") if opts.int8 else ("fp32",):
            log(f"size {size}: measuring {variant}")
            entry["variants"][variant] = _measure_fresh(bundle, variant, opts)
        out["sizes"][size] = entry
    return out
