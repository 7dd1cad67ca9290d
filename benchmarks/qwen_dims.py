"""Qwen2.5-Omni-3B's thinker at its real dimensions (random weights) exported to a bundle and
run through the runtime on this CPU: per-chunk encoder time, decision time, decode tokens/s,
memory. Tells users what a Jetson or desktop GPU must deliver (400 ms chunks: < 400 ms/chunk).

    python benchmarks/qwen_dims.py --decoder-layers 1,3,6 --threads 1,2 --out /tmp/qwen_dims.json

fp32 3B does not fit a shared 24 GB machine twice (torch + exporter), so the decoder is
exported at a few layer counts and the per-layer and fixed (embedding, lm_head over 151936
tokens) costs are fitted and extrapolated to all 36 layers; the encoder runs whole (32 layers).
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

# Qwen2.5-Omni-3B thinker (config.json of the release): text and audio towers, a data file.
_OMNI_3B = json.loads((Path(__file__).with_name("qwen2_5_omni_3b.json")).read_text())
TEXT_3B, AUDIO_3B = _OMNI_3B["text"], _OMNI_3B["audio"]


def rss_gb() -> float:
    """Peak resident memory of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def current_rss_gb() -> float:
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    return kb / 1e6


def build_bundle(layers: int, workdir: Path, audio_layers: int) -> Path:
    """Random-weight thinker with `layers` text layers -> bundle (model freed afterwards)."""
    import torch

    from soundflow.export.hf_audio import export_hf_bundle
    from soundflow.train.kinds.decoder.hf_audio import source, tiny

    out = workdir / f"bundle{layers}"
    if (out / "manifest.json").is_file():  # kept from an earlier run with --workdir
        return out
    torch.manual_seed(0)
    model, tok = tiny.build(
        tiny.QWEN2_5_OMNI,
        text={**TEXT_3B, "num_hidden_layers": layers},
        audio={**AUDIO_3B, "encoder_layers": audio_layers},
    )
    ckpt = workdir / f"ckpt{layers}"
    ckpt.mkdir(parents=True, exist_ok=True)
    # config + tokenizer only: the weights go straight from memory into the bundle
    model.config.save_pretrained(ckpt)
    tok.save(str(ckpt / "tokenizer.json"))
    llm = source.split(model, tiny.QWEN2_5_OMNI)
    t0 = time.time()
    export_hf_bundle(ckpt, out, llm=llm, log=lambda *_: None)
    print(
        f"  exported {layers} decoder layers in {time.time() - t0:.0f}s (peak RSS {rss_gb():.1f} GB)"
    )
    del model, llm
    gc.collect()
    return out


def measure(bundle: Path, chunks: int, tokens: int, threads: int) -> dict:
    """Through the runtime's own engine and streams: encode, decide, generate."""
    from soundflow.runtime.kinds import open_engine, open_stream
    from soundflow.runtime.kinds.decoder import EncoderStream
    from soundflow.runtime.options import RuntimeOptions

    opts = RuntimeOptions.from_flags(
        threads=threads, provider="cpu", mode="assist", max_response_tokens=tokens
    )
    before = current_rss_gb()
    engine = open_engine(bundle, opts)
    enc, dec = EncoderStream(engine), open_stream(engine, opts)
    rng = np.random.default_rng(0)
    n = engine.spec.chunk_samples
    enc_s, decide_s, step_s = [], [], []
    # runtimes that run fallback bundles decide from the chunk's PCM as well
    takes_pcm = "pcm" in inspect.signature(dec.decide).parameters
    for _ in range(chunks):
        pcm = (0.1 * rng.standard_normal(n)).astype(np.float32)
        t = time.perf_counter()
        embeds = enc.encode(pcm)
        enc_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        dec.decide(embeds, pcm) if takes_pcm else dec.decide(embeds)
        decide_s.append(time.perf_counter() - t)
    # one response of `tokens` steps (q = 1 each) after the last chunk
    t = time.perf_counter()
    first = dec.begin_response(chunks * 0.4)
    for _ in dec.continue_response(first if first is not None else 0):
        step_s.append(time.perf_counter() - t)
        t = time.perf_counter()
    runtime_gb = current_rss_gb() - before
    del engine, enc, dec
    gc.collect()
    warm = slice(1, None)  # the first call pays ORT's allocations
    return {
        "runtime_rss_gb": runtime_gb,
        "encoder_ms_per_chunk": 1e3 * float(np.median(enc_s[warm])),
        "decide_ms_per_chunk": 1e3 * float(np.median(decide_s[warm])),
        "step_ms_per_token": 1e3 * float(np.median(step_s[1:] or step_s)),
        "tokens": len(step_s),
    }


def weight_bytes(layers: int) -> dict:
    t, a = TEXT_3B, AUDIO_3B
    h, f, kv = t["hidden_size"], t["intermediate_size"], t["num_key_value_heads"] * 128
    per_layer = h * h * 2 + h * kv * 2 + (h + kv * 2) + 3 * h * f + 2 * h
    d, af = a["d_model"], a["encoder_ffn_dim"]
    enc = a["encoder_layers"] * (4 * d * d + 3 * d + 2 * d * af + af + d + 4 * d)
    enc += 3 * a["num_mel_bins"] * d + 3 * d * d + d * h  # conv1, conv2, projection
    return {
        "decoder_layers_gb": 4 * per_layer * layers / 1e9,
        "embed_and_lm_head_gb": 4 * 2 * t["vocab_size"] * h / 1e9,
        "encoder_gb": 4 * enc / 1e9,
        "kv_cache_mb_per_1024_slots": 4 * 2 * layers * kv * 1024 / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decoder-layers", default="1,3,6", help="layer counts to measure and fit")
    ap.add_argument("--encoder-layers", type=int, default=AUDIO_3B["encoder_layers"])
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=12)
    ap.add_argument("--threads", default="1,2", help="ORT intra-op thread counts to measure")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = ap.parse_args()
    counts = [int(x) for x in args.decoder_layers.split(",")]
    threads = [int(x) for x in str(args.threads).split(",")]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="qwen_dims_"))
    rows: dict[int, dict[int, dict]] = {t: {} for t in threads}
    try:
        for i, layers in enumerate(counts):
            # the whole encoder once; later bundles carry a 1-layer one (only the decoder varies)
            enc_layers = args.encoder_layers if i == 0 else 1
            print(f"decoder layers {layers}, encoder layers {enc_layers}:")
            bundle = build_bundle(layers, work, enc_layers)
            size = sum(p.stat().st_size for p in bundle.iterdir()) / 1e9
            for t in threads:
                row = measure(bundle, args.chunks, args.tokens, t)
                if i:
                    del row["encoder_ms_per_chunk"]
                rows[t][layers] = {**row, "bundle_gb": size}
                print(f"  threads {t}: " + json.dumps(rows[t][layers]))
            shutil.rmtree(bundle)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    full = TEXT_3B["num_hidden_layers"]
    per_threads = {}
    for t in threads:
        fit = {}
        for key in ("decide_ms_per_chunk", "step_ms_per_token"):
            xs, ys = np.array(counts, float), np.array([rows[t][c][key] for c in counts])
            slope, icpt = np.polyfit(xs, ys, 1) if len(xs) > 1 else (ys[0] / xs[0], 0.0)
            fit[key] = {
                "per_layer_ms": float(slope),
                "fixed_ms": float(icpt),
                "at_36_layers_ms": float(icpt + slope * full),
            }
        enc_ms = rows[t][counts[0]]["encoder_ms_per_chunk"]
        step36 = fit["step_ms_per_token"]["at_36_layers_ms"]
        per_threads[t] = {
            "measured": rows[t],
            "extrapolated_36_layers": fit,
            "encoder_ms_per_chunk_32_layers": enc_ms,
            "decode_tokens_per_s_36_layers": 1e3 / step36,
            "silent_chunk_ms_36_layers": enc_ms + fit["decide_ms_per_chunk"]["at_36_layers_ms"],
        }
    report = {
        "model": "Qwen2.5-Omni-3B thinker dims, random fp32 weights, ONNX Runtime CPU",
        "by_threads": per_threads,
        "realtime_budget_ms_per_chunk": 400,
        "memory_fp32": weight_bytes(full),
        "peak_rss_gb_this_run": rss_gb(),
        "load_average_at_end": os.getloadavg(),  # the CPU is shared: context for the timings
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
