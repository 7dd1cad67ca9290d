"""The decoder-only kind's part of parity (export/parity.py): the exported torch modules as its
reference engine (export/torch_engine.py), what a run is compared on, and within what.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from soundflow.export.parity_kind import Plan, Trace
from soundflow.runtime.bundle import BundleSpec
from soundflow.runtime.options import RuntimeOptions

TOL = 1e-3  # ORT vs torch, and cached vs full forward: float32 reordering only


def compare(ref: Trace, got: Trace) -> dict:
    """Two backends' traces under the same driver: decisions, tokens, logits, embeds."""
    return {
        "decoder_calls": len(ref.logits),
        "generated_tokens": len(ref.tokens),
        "model_responds": int(sum(ref.decisions)),
        "decisions_equal": ref.decisions == got.decisions and len(ref.logits) == len(got.logits),
        "tokens_equal": ref.tokens == got.tokens,
        "max_abs_embed_diff": max(
            float(np.abs(a - b).max())
            for a, b in zip(ref.audio_embeds, got.audio_embeds, strict=True)
        ),
        "max_abs_logit_diff": max(
            float(np.abs(a - b).max()) for a, b in zip(ref.logits, got.logits, strict=False)
        ),
    }


def cached_vs_full(trace: Trace, full_logits) -> float:
    """max |cached - full| over the calls before the first eviction; `full_logits(x)` runs
    the fed embeddings x (T, hidden) as one sequence -> (T, vocab)."""
    k = trace.unevicted()
    if k == 0:
        raise ValueError("the parity stream evicted on its first call: raise cache_capacity")
    return float(
        np.abs(
            np.concatenate(trace.logits[:k]) - full_logits(np.concatenate(trace.inputs[:k]))
        ).max()
    )


class DecoderOnly:
    """A soundflow checkpoint (train/kinds/decoder/model.py) against its decoder-only bundle: the same
    decisions and tokens, logits within TOL, and cached decoding == one transformers forward."""

    plan = Plan(respond_every=3, own_decisions=True, max_tokens=8, threshold=0.5)
    totals = (
        ("max_abs_logit_diff", "max_abs_logit_diff"),
        ("max_abs_cached_vs_full_diff", "max_abs_cached_vs_full_diff"),
    )
    full_key, full_label = "max_abs_cached_vs_full_diff", "cached vs full"

    def load(self, checkpoint: Path | str):
        from soundflow.train.checkpoint import load_checkpoint

        model, _, _ = load_checkpoint(checkpoint)
        return model

    def engine(self, model, spec: BundleSpec):
        from soundflow.export.torch_engine import TorchEngine

        return TorchEngine.from_model(model, spec)

    def ort_options(self) -> RuntimeOptions:
        return RuntimeOptions.from_flags(provider="cpu", threads=1)

    def stream_options(self, mode: str, plan: Plan) -> RuntimeOptions:
        return RuntimeOptions.from_flags(
            mode=mode,
            threshold=plan.threshold,
            max_response_tokens=plan.max_tokens,
            refractory_s=0.0,
        )

    def prepare(self, stream) -> None:
        pass  # the stream runs as the runtime runs it

    def signal(self, spec: BundleSpec, chunks: int, seed: int) -> np.ndarray:
        from soundflow.train.smoke import toy_stream

        pcm, _ = toy_stream(seed, seconds=chunks * spec.chunk_ms / 1000)
        return pcm[: chunks * spec.chunk_samples]

    def extras(self, spec: BundleSpec) -> dict:
        return {}

    def feeds_reference(self, spec: BundleSpec) -> bool:
        return False

    def measure(
        self, model, spec: BundleSpec, mode: str, pcm: np.ndarray, got: Trace, ref: Trace
    ) -> tuple[dict, bool]:
        import torch

        @torch.no_grad()
        def full(x: np.ndarray) -> np.ndarray:  # the fed sequence, through transformers itself
            return model.decoder(inputs_embeds=torch.from_numpy(x[None])).logits[0].numpy()

        row = {**compare(ref, got), "max_abs_cached_vs_full_diff": cached_vs_full(ref, full)}
        ok = (
            row["decisions_equal"]
            and row["tokens_equal"]
            and row["max_abs_logit_diff"] < TOL
            and row["max_abs_cached_vs_full_diff"] < TOL
        )
        return row, bool(ok)
