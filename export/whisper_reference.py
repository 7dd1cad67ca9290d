"""The whisper-cross kind's part of parity (export/parity.py): the checkpoint in torch behind
CrossEngine's interface (`TorchCrossEngine`), what a run is compared on, and within what; the
streamed tokens are replayed through the training forward (whole segment, per-token memory
masks), which must give the same logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from soundflow.export.parity_kind import Plan, Trace
from soundflow.runtime.bundle import BundleSpec
from soundflow.runtime.options import RuntimeOptions
from soundflow.train.kinds.whisper.model import (
    CrossLayout,
    batch_masks,
    cross_layout,
    load_whisper_checkpoint,
)

# An int8 bundle's greedy token must equal fp32's on at least this share of the (teacher-forced)
# generation steps; the parity input is a tone in noise, where tokens are often near-ties.
MIN_INT8_AGREEMENT = 0.8
LOGIT_TOL = 5e-2  # fp32 ORT vs torch (logits ~30)
FULL_TOL = 5e-3  # the streamed calls vs the training forward
P_TOL = 0.1  # p(respond), ORT vs torch


class TorchCrossEngine:
    """The checkpoint in torch behind CrossEngine's interface (encode, bind, step)."""

    def __init__(self, model, spec: BundleSpec, options: RuntimeOptions | None = None):
        self.model, self.spec = model.eval(), spec
        self.options = options or RuntimeOptions()
        self.detokenizer = None
        # The decoder concatenates its tied table (Whisper's rows + the appended ones) on
        # every embedding and logits call: 80 MB copied twice a step, half a check's time.
        # The weights stay fixed here, so the model (in eval, as above) keeps one copy.
        table = model.decoder.table().detach()
        model.decoder.table = lambda: table

    def new_state(self):
        return {"history": np.zeros((1, 0), np.float32)}

    @torch.no_grad()
    def encode(self, audio: np.ndarray, state):
        frames, hist = self.model.encoder(
            torch.from_numpy(audio), torch.from_numpy(state["history"])
        )
        kv = self.model.decoder.cross_kv(frames)
        entry = np.stack([np.stack([k[0].numpy(), v[0].numpy()]) for k, v in kv])
        return entry, {"history": hist.numpy()}

    def bind(self, cache, memory, reading: bool = False):
        """As CrossEngine.bind; `reading` (a window reading's int8 logits) has no torch twin:
        the torch forward is the fp32 reference either way."""
        return cache, memory

    @torch.no_grad()
    def step(self, binding, ids, positions, mask, memory_mask):
        cache, memory = binding
        t = torch.from_numpy
        past = [(t(k), t(v)) for k, v in zip(cache.keys, cache.values, strict=True)]
        mem = [(t(k), t(v)) for k, v in zip(memory.keys, memory.values, strict=True)]
        d = self.model.decoder
        h, presents = d.hidden(t(ids), t(positions), t(mask), past, mem, t(memory_mask))
        logits = d.logits(h)[0].numpy()
        return logits, [(k.numpy(), v.numpy()) for k, v in presents]


class WhisperCross:
    """A whisper-cross checkpoint against its bundle: the same token feeds (the runtime's
    calls are the training layout), logits close, p(respond) within P_TOL, and the streamed
    calls == the training forward. An int8 bundle is judged on identical inputs (torch fed
    ORT's tokens) by how often torch's own greedy choice agreed instead of by logits."""

    # The protocol's own responses: transcribe-mode captions by agreement and assist by
    # grammar re-read the window through the same decoder graph (runtime/captions.py), so
    # forced responses every 7th chunk cover them.
    plan = Plan(respond_every=7, own_decisions=False, max_tokens=6)
    totals = (
        ("max_abs_logit_diff", "max_abs_logit_diff_ort_vs_torch"),
        ("max_abs_stream_vs_full", "max_abs_logit_diff_stream_vs_full"),
    )
    full_key, full_label = "max_abs_stream_vs_full", "streamed vs full"

    def load(self, checkpoint: Path | str):
        model, _, _ = load_whisper_checkpoint(checkpoint)
        return model

    def engine(self, model, spec: BundleSpec) -> TorchCrossEngine:
        return TorchCrossEngine(model, spec)

    def ort_options(self) -> None:
        return None

    def stream_options(self, mode: str, plan: Plan) -> RuntimeOptions:
        return RuntimeOptions.from_flags(
            mode=mode,
            max_response_tokens=plan.max_tokens,
            refractory_s=0.0,
            captions="protocol",
            assist="decoder",
        )

    def prepare(self, stream) -> None:
        stream.opens_with, stream.no_repeat = None, 0  # the model's own tokens: no policy guards

    def signal(self, spec: BundleSpec, chunks: int, seed: int) -> np.ndarray:
        """A gated 440 Hz tone in noise."""
        rng = np.random.default_rng(seed)
        n = chunks * spec.chunk_samples
        t = np.arange(n) / spec.sample_rate
        pcm = 0.1 * np.sin(2 * np.pi * 440 * t) * (t % 3 < 1) + 0.01 * rng.standard_normal(n)
        return pcm.astype(np.float32)

    def extras(self, spec: BundleSpec) -> dict:
        return {"quantized": _quantized(spec)}

    def feeds_reference(self, spec: BundleSpec) -> bool:
        return _quantized(spec)

    def measure(
        self, model, spec: BundleSpec, mode: str, pcm: np.ndarray, got: Trace, ref: Trace
    ) -> tuple[dict, bool]:
        a, b = got, ref
        ids_same = [x.tolist() for x in a.inputs] == [x.tolist() for x in b.inputs]
        agree = (
            float(np.mean([x == y for x, y in zip(a.own, b.own, strict=True)])) if a.own else 1.0
        )
        truncated = any(r is not None and len(r) >= self.plan.max_tokens for r in a.responses)
        lay = cross_layout(model.vocab, mode, a.responses)
        streamed = [i for ids in b.inputs for i in ids.tolist()]
        chunks = [c for ids, c in zip(b.inputs, b.chunks, strict=True) for _ in ids]
        layout_ok = truncated or (
            lay.ids[: len(streamed)] == streamed and lay.chunk[: len(chunks)] == chunks
        )
        diff = max(float(np.abs(x - y).max()) for x, y in zip(a.logits, b.logits, strict=False))
        full = _training_forward_diff(model, pcm, b)
        c = spec.control
        p_diff = max(
            abs(_p(x[-1], c) - _p(y[-1], c)) for x, y in zip(a.logits, b.logits, strict=False)
        )
        # int8 weights move logits by ~1 (out of a 50k vocabulary); what must hold is the
        # same tokens and decisions, so a quantized bundle is judged on those.
        ok = (
            ids_same
            and layout_ok
            and full < FULL_TOL
            and (diff < LOGIT_TOL if not _quantized(spec) else agree >= MIN_INT8_AGREEMENT)
            and p_diff < P_TOL
        )
        row = {
            "same_tokens": ids_same,
            "layout_is_runtime": layout_ok,
            "max_abs_logit_diff_ort_vs_torch": diff,
            "max_abs_p_diff": p_diff,
            "greedy_token_agreement": agree,
            "max_abs_logit_diff_stream_vs_full": full,
            "calls": len(a.logits),
        }
        return row, bool(ok)


def _quantized(spec: BundleSpec) -> bool:
    return bool(spec.manifest.get("export", {}).get("quantization"))


def _p(row: np.ndarray, control: dict) -> float:
    pair = row[[control["silence"], control["respond"]]].astype(np.float64)
    return float(np.exp(pair[1] - np.logaddexp(pair[0], pair[1])))


@torch.no_grad()
def _training_forward_diff(model, pcm: np.ndarray, trace: Trace) -> float:
    """Replay the streamed calls through the training path (one masked forward over the whole
    segment, each token seeing the memory of the chunk it was fed in) and compare logits."""
    ids = [i for call in trace.inputs for i in call.tolist()]
    chunks = [c for call, c in zip(trace.inputs, trace.chunks, strict=True) for _ in call]
    lay = CrossLayout(ids, chunks, [], [])
    lay.control = lay.lm = [-100] * len(lay.ids)
    windows, lengths = model.encoder.encode_offline(pcm)
    memory = torch.from_numpy(windows.reshape(1, -1, windows.shape[2]))
    ids, pos, self_mask, cross_mask, _, _ = batch_masks([lay], [lengths], windows.shape[1])
    d = model.decoder
    h, _ = d.hidden(ids, pos, self_mask, d.empty_past(1), d.cross_kv(memory), cross_mask)
    full = d.logits(h)[0].numpy()
    k, worst = 0, 0.0
    for call, logits in zip(trace.inputs, trace.logits, strict=True):
        q = len(call)
        worst = max(worst, float(np.abs(full[k : k + q] - logits).max()))
        k += q
    return worst
