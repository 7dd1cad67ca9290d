"""Parity of an HF-derived bundle: ONNX Runtime against the torch graphs over a streamed run
(the runtime's own stream on both backends, under export/parity.py's driver), the chunked
encoder against the full transformers encoder on the same audio, and cached decoding against
one full forward of the checkpoint's own text model (the decoder-only kind's measures).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from soundflow.audio import SAMPLE_RATE
from soundflow.export.decoder_reference import TOL, cached_vs_full, compare
from soundflow.export.graphs import CachedDecoder
from soundflow.export.parity import drive
from soundflow.export.torch_engine import TorchEngine
from soundflow.manifest import read_manifest
from soundflow.runtime.bundle import load_spec
from soundflow.runtime.kinds import open_engine, open_stream
from soundflow.runtime.options import RuntimeOptions
from soundflow.train.kinds.decoder.hf_audio import reference, source
from soundflow.train.kinds.decoder.hf_audio.encoder import StreamingAudioEncoder
from soundflow.train.kinds.decoder.hf_audio.frontend import MelConfig


def test_signal(seconds: float, seed: int = 0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Noise, a gated 440 Hz tone, a chirp and an early click (so the running log-mel peak
    is the whole clip's peak from the first chunk on)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.03 * rng.standard_normal(len(t))
    x += 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 0.7 * t) > 0)
    x += 0.2 * np.sin(2 * np.pi * (300 + 400 * t) * t) * (t % 1.5 < 0.5)
    x[1000:1040] += 0.9
    return x.astype(np.float32)


def torch_engine(llm: source.AudioLLM, bundle, mel: MelConfig) -> TorchEngine:
    """The exported torch modules behind the runtime's engine interface (export/torch_engine.py)."""
    spec = load_spec(bundle)
    enc = spec.manifest["encoder"]
    left = next(s for s in enc["state"] if s["input"] == "cache_frames")["shape"][1]
    encoder = StreamingAudioEncoder(llm, spec.chunk_samples, mel, left)
    return TorchEngine(spec, encoder, CachedDecoder(llm.text))


def encoder_vs_reference(chunked: list[np.ndarray], ref: np.ndarray, window_embeds: int) -> dict:
    """Chunked embeds (per chunk, delayed one embed) vs the full encoder's: aligned stats."""
    got = np.concatenate(chunked)[1:]  # drop the pre-roll: embed k+1 of the stream is ref k
    n = min(len(got), len(ref))
    got, ref = got[:n], ref[:n]
    diff = np.abs(got - ref)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    # Embeds that end a reference window saw the whole window in both: the closest pair.
    ends = np.arange(window_embeds - 1, n, window_embeds)
    return {
        "embeds": int(n),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "relative_l2": float(np.linalg.norm(got - ref) / np.linalg.norm(ref)),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "max_abs_diff_at_window_ends": float(diff[ends].max()) if len(ends) else None,
        "ref_max_abs": float(np.abs(ref).max()),
    }


def check(
    bundle: Path | str,
    checkpoint_dir: Path | str,
    chunks: int = 12,
    seed: int = 0,
    llm: source.AudioLLM | None = None,
) -> dict:
    """ORT vs torch (decisions, tokens, logits, embeds), cached vs full forward, and the
    chunked encoder vs the full transformers encoder; `ok` covers the exact checks only."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    llm = llm or source.load(checkpoint_dir)
    mel = MelConfig.from_checkpoint(checkpoint_dir, llm.audio_config.num_mel_bins)
    chunk = manifest["audio"]["chunk_samples"]
    pcm = test_signal(chunks * chunk / mel.sample_rate, seed)
    task = next(iter(manifest["tasks"]))
    ref = drive(torch_engine(llm, bundle, mel), pcm, task)
    got = drive(
        open_engine(bundle, RuntimeOptions.from_flags(provider="cpu", threads=1)), pcm, task
    )

    @torch.no_grad()
    def full(x: np.ndarray) -> np.ndarray:  # the whole fed sequence, through transformers itself
        hidden = llm.text.model(inputs_embeds=torch.from_numpy(x[None])).last_hidden_state
        return llm.text.lm_head(hidden)[0].numpy()

    enc_window = manifest["source"]["encoder_window_frames"] // 2
    report = {
        "architecture": llm.architecture,
        "task": task,
        "chunks": chunks,
        **compare(ref, got),
        "max_abs_cached_vs_full_diff": cached_vs_full(ref, full),
        "encoder_vs_full": encoder_vs_reference(
            got.audio_embeds, reference.audio_embeds(llm, pcm, mel), enc_window
        ),
    }
    report["ok"] = bool(
        report["decisions_equal"]
        and report["tokens_equal"]
        and report["max_abs_logit_diff"] < TOL
        and report["max_abs_embed_diff"] < TOL
        and report["max_abs_cached_vs_full_diff"] < TOL
    )
    return report


def incremental_logits(engine, pieces: list[np.ndarray]) -> np.ndarray:
    """Feed embedding pieces (each (t, hidden)) one decoder call each through a fresh runtime
    stream's cache; -> the logits of every fed position, (sum t, vocab)."""
    stream = open_stream(engine)
    return np.concatenate([stream.feed_embeds(x) for x in pieces])


def summary_line(report: dict) -> str:
    """One line for the export CLI, exact checks first, the by-design encoder gap last."""
    e = report["encoder_vs_full"]
    head = "parity ok" if report["ok"] else "PARITY FAILED"
    return (
        f"{head}: max |delta logit| ORT vs torch = {report['max_abs_logit_diff']:.2e}, "
        f"cached vs full forward = {report['max_abs_cached_vs_full_diff']:.2e}; "
        f"chunked vs full encoder (by design, ARCHITECTURE.md 3b): relative L2 "
        f"{e['relative_l2']:.3f}, min cosine {e['min_cosine']:.4f}"
    )
