"""Export parity under one driver: the runtime's own streams (runtime/stream.py) run a
bundle on ONNX Runtime and its checkpoint on the torch backend (export/torch_engine.py)
over the same audio, with real generation; the calls they made are then replayed as one
full-sequence `transformers` forward, which must give the same logits (cached == full).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from soundflow.runtime.kinds import open_engine
from soundflow.runtime.options import RuntimeOptions
from soundflow.runtime.stream import DecoderStream, EncoderStream


@dataclass
class Trace:
    logits: list[np.ndarray] = field(default_factory=list)  # per decoder call, (T, V)
    embeds: list[np.ndarray] = field(default_factory=list)  # per decoder call, what was fed
    evictions: list[int] = field(default_factory=list)  # per call: the cache's evictions so far
    audio_embeds: list[np.ndarray] = field(default_factory=list)  # per chunk
    p_respond: list[float] = field(default_factory=list)  # per chunk
    decisions: list[bool] = field(default_factory=list)  # the model's own, per chunk
    tokens: list[int] = field(default_factory=list)  # every generated token

    def unevicted(self) -> int:
        """Calls made before the cache first evicted: a full forward replays exactly these."""
        return next((i for i, e in enumerate(self.evictions) if e), len(self.evictions))


class RecordingStream(DecoderStream):
    """The runtime's DecoderStream, recording every decoder call it makes."""

    def reset(self) -> None:
        super().reset()
        self.trace = Trace()

    def _run(self, x: np.ndarray) -> np.ndarray:
        logits = super()._run(x)
        self.trace.logits.append(logits.copy())
        self.trace.embeds.append(np.array(x, np.float32))
        self.trace.evictions.append(self.cache.evictions)
        return logits


def drive(
    engine,
    pcm: np.ndarray,
    task: str,
    force_every: int = 3,
    max_tokens: int = 8,
    threshold: float | None = 0.5,
) -> Trace:
    """Stream `pcm` through the runtime's EncoderStream and DecoderStream on `engine` (any
    backend of the engine interface). A chunk responds when the stream decides so or, every
    `force_every`-th chunk, regardless (so generation is exercised); no refractory time."""
    opts = RuntimeOptions(
        mode=task, threshold=threshold, max_response_tokens=max_tokens, refractory_s=0.0
    )
    enc, dec = EncoderStream(engine), RecordingStream(engine, opts)
    n, chunk_s = engine.spec.chunk_samples, engine.spec.chunk_ms / 1000
    tr = dec.trace
    for c in range(len(pcm) // n):
        x = pcm[c * n : (c + 1) * n]
        audio_embeds = enc.encode(x)
        tr.audio_embeds.append(audio_embeds)
        d = dec.decide(audio_embeds, x)
        tr.p_respond.append(d.p)
        tr.decisions.append(d.respond)
        if d.respond or (force_every and c % force_every == force_every - 1):
            first = dec.begin_response(c * chunk_s)
            if first is not None:
                tr.tokens += list(dec.continue_response(first))
    return tr


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
            np.concatenate(trace.logits[:k]) - full_logits(np.concatenate(trace.embeds[:k]))
        ).max()
    )


def _ort(bundle: Path, variant: str = "fp32"):

    return open_engine(bundle, RuntimeOptions(provider="cpu", threads=1), variant=variant)


def check(bundle: Path | str, checkpoint: Path | str, chunks: int = 30, seed: int = 0) -> dict:
    """Run torch and ORT over the same stream for every task; compare decisions, tokens, logits."""
    import torch

    from soundflow.export.torch_engine import TorchEngine
    from soundflow.train.checkpoint import load_checkpoint
    from soundflow.train.smoke import toy_stream

    bundle = Path(bundle)
    model, _, cfg = load_checkpoint(checkpoint)
    ort_engine = _ort(bundle)
    torch_engine = TorchEngine.from_model(model, ort_engine.spec)
    pcm, _ = toy_stream(seed, seconds=chunks * cfg.chunk_ms / 1000)
    pcm = pcm[: chunks * cfg.chunk_samples]

    @torch.no_grad()
    def full(x: np.ndarray) -> np.ndarray:  # the whole fed sequence, through transformers itself
        return model.decoder(inputs_embeds=torch.from_numpy(x[None])).logits[0].numpy()

    report = {"chunks": chunks, "tasks": {}}
    for task in ort_engine.spec.modes:
        ref = drive(torch_engine, pcm, task)
        got = drive(ort_engine, pcm, task)
        report["tasks"][task] = {
            **compare(ref, got),
            "max_abs_cached_vs_full_diff": cached_vs_full(ref, full),
        }  # noqa: E501
    rows = report["tasks"].values()
    report["max_abs_logit_diff"] = max(r["max_abs_logit_diff"] for r in rows)
    report["max_abs_cached_vs_full_diff"] = max(r["max_abs_cached_vs_full_diff"] for r in rows)
    report["ok"] = bool(
        all(r["decisions_equal"] and r["tokens_equal"] for r in rows)
        and report["max_abs_logit_diff"] < 1e-3
        and report["max_abs_cached_vs_full_diff"] < 1e-3
    )
    return report


def agreement(bundle: Path | str, variant: str = "int8", chunks: int = 30, seed: int = 0) -> dict:
    """How often a variant (e.g. int8) agrees with the fp32 bundle: reported, not asserted."""
    from soundflow.train.smoke import toy_stream

    bundle = Path(bundle)
    fp32, other = _ort(bundle), _ort(bundle, variant)
    pcm, _ = toy_stream(seed, seconds=chunks * fp32.spec.chunk_ms / 1000)
    out = {}
    for task in fp32.spec.modes:
        a, b = drive(fp32, pcm, task), drive(other, pcm, task)
        n = min(len(a.tokens), len(b.tokens))
        out[task] = {
            "decision_agreement": float(np.mean(np.equal(a.decisions, b.decisions))),
            "token_agreement": float(np.mean(np.equal(a.tokens[:n], b.tokens[:n]))) if n else 1.0,
            "max_abs_p_respond_diff": float(np.abs(np.subtract(a.p_respond, b.p_respond)).max()),
        }
    return out


def format_report(report: dict) -> str:
    return json.dumps(report, indent=2)
