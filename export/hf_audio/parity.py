"""Parity of an HF-derived bundle: ONNX Runtime against the torch graphs over a streamed run
(export.parity's driver), the chunked encoder against the full transformers encoder on the
same audio, and cached decoding against one full forward of the checkpoint's own text model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from soundflow.export.graphs import CachedDecoder
from soundflow.export.parity import MASKED, OrtBackend, ReferenceDriver
from soundflow.manifest import read_manifest
from soundflow.train.hf_audio import reference, source
from soundflow.train.hf_audio.encoder import StreamingAudioEncoder
from soundflow.train.hf_audio.frontend import MelConfig

ORT_TOL = 1e-3  # ORT vs torch, and cached vs full forward: float32 reordering only


def test_signal(seconds: float, seed: int = 0, sr: int = 16_000) -> np.ndarray:
    """Noise, a gated 440 Hz tone, a chirp and an early click (so the running log-mel peak
    is the whole clip's peak from the first chunk on)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.03 * rng.standard_normal(len(t))
    x += 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 0.7 * t) > 0)
    x += 0.2 * np.sin(2 * np.pi * (300 + 400 * t) * t) * (t % 1.5 < 0.5)
    x[1000:1040] += 0.9
    return x.astype(np.float32)


class HFTorchBackend:
    """The exported torch modules, driven like the ORT sessions (export.parity's interface)."""

    def __init__(self, llm: source.AudioLLM, manifest: dict, mel: MelConfig):
        enc = manifest["encoder"]
        left = next(s for s in enc["state"] if s["input"] == "cache_frames")["shape"][1]
        self.enc = StreamingAudioEncoder(llm, manifest["audio"]["chunk_samples"], mel, left).eval()
        self.dec = CachedDecoder(llm.text).eval()

    @torch.no_grad()
    def encode(self, feeds):
        return [o.numpy() for o in self.enc(*(torch.from_numpy(v) for v in feeds.values()))]

    @torch.no_grad()
    def decode(self, feeds):
        return [o.numpy() for o in self.dec(*(torch.from_numpy(v) for v in feeds.values()))]


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


def check(bundle: Path | str, checkpoint_dir: Path | str, chunks: int = 12, seed: int = 0,
          llm: source.AudioLLM | None = None) -> dict:  # fmt: skip
    """ORT vs torch (decisions, tokens, logits, embeds), cached vs full forward, and the
    chunked encoder vs the full transformers encoder; `ok` covers the exact checks only."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    llm = llm or source.load(checkpoint_dir)
    mel = MelConfig.from_checkpoint(checkpoint_dir, llm.audio_config.num_mel_bins)
    embed = np.load(bundle / manifest["embeddings"]["file"])
    chunk = manifest["audio"]["chunk_samples"]
    pcm = test_signal(chunks * chunk / mel.sample_rate, seed)
    task = next(iter(manifest["tasks"]))
    ref = ReferenceDriver(HFTorchBackend(llm, manifest, mel), manifest, embed).run(pcm, task)
    got = ReferenceDriver(OrtBackend(bundle), manifest, embed).run(pcm, task)
    with torch.no_grad():  # the whole fed sequence at once, through transformers itself
        seq = torch.from_numpy(np.concatenate(ref.embeds)[None])
        hidden = llm.text.model(inputs_embeds=seq).last_hidden_state
        full = llm.text.lm_head(hidden)[0].numpy()
    enc_window = manifest["source"]["encoder_window_frames"] // 2
    report = {
        "architecture": llm.architecture,
        "task": task,
        "chunks": chunks,
        "decoder_calls": len(ref.logits),
        "generated_tokens": len(ref.tokens),
        "decisions_equal": ref.decisions == got.decisions,
        "tokens_equal": ref.tokens == got.tokens,
        "max_abs_logit_diff": max(
            float(np.abs(a - b).max()) for a, b in zip(ref.logits, got.logits, strict=False)
        ),
        "max_abs_embed_diff": max(
            float(np.abs(a - b).max())
            for a, b in zip(ref.audio_embeds, got.audio_embeds, strict=True)
        ),
        "max_abs_cached_vs_full_diff": float(np.abs(np.concatenate(ref.logits) - full).max()),
        "encoder_vs_full": encoder_vs_reference(
            got.audio_embeds, reference.audio_embeds(llm, pcm, mel), enc_window
        ),
    }
    report["ok"] = bool(
        report["decisions_equal"]
        and report["tokens_equal"]
        and report["max_abs_logit_diff"] < ORT_TOL
        and report["max_abs_embed_diff"] < ORT_TOL
        and report["max_abs_cached_vs_full_diff"] < ORT_TOL
    )
    return report


def incremental_logits(backend, manifest: dict, pieces: list[np.ndarray]) -> np.ndarray:
    """Feed embedding pieces (each (t, hidden)) one decoder call each, onto a fresh cache
    filled in order; -> the logits of every fed position, (sum t, vocab)."""
    dec = manifest["decoder"]
    layers, cap = dec["num_layers"], dec["cache_capacity"]
    past = [
        np.zeros((1, dec["num_kv_heads"], cap, dec["head_dim"]), np.float32)
        for _ in range(2 * layers)
    ]
    used, out = 0, []
    for x in pieces:
        t = len(x)
        mask = np.full((1, 1, t, cap + t), MASKED, np.float32)
        mask[..., :used] = 0.0
        mask[0, 0, :, cap:] = np.triu(np.full((t, t), MASKED, np.float32), 1)
        pos = np.concatenate([np.arange(cap), np.arange(used, used + t)])[None]
        feeds = {"inputs_embeds": x[None].astype(np.float32), "attention_mask": mask,
                 "position_ids": pos}  # fmt: skip
        for i in range(layers):
            feeds[f"past_key_values.{i}.key"] = past[2 * i]
            feeds[f"past_key_values.{i}.value"] = past[2 * i + 1]
        logits, *new = backend.decode(feeds)
        for j, arr in enumerate(new):
            past[j][:, :, used : used + t] = arr
        used += t
        out.append(logits[0])
    return np.concatenate(out)


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
