"""Parity of a whisper-cross bundle with its checkpoint, under one driver: the runtime's own
`CrossDecoderStream` runs once on ONNX Runtime and once on a torch backend with the same
engine interface, and the token sequence it produced is replayed through the training
forward (whole segment, per-token memory masks), which must give the same logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from soundflow.runtime.bundle import BundleSpec
from soundflow.runtime.cross import CrossDecoderStream, CrossEngine
from soundflow.runtime.options import RuntimeOptions
from soundflow.runtime.stream import EncoderStream
from soundflow.train.whisper_model import (
    CrossLayout,
    batch_masks,
    cross_layout,
    load_whisper_checkpoint,
)

# An int8 bundle's greedy token must equal fp32's on at least this share of the (teacher-forced)
# generation steps; the parity input is a tone in noise, where tokens are often near-ties.
MIN_INT8_AGREEMENT = 0.8


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


class _Recorder(CrossDecoderStream):
    """Records every call's ids and logits (for comparing backends and the training path).
    With `forced` (another run's generated tokens, in order) it feeds those instead of its
    own greedy choices, so both backends see identical inputs call for call; its own choices
    are kept in `own` for the agreement count."""

    forced: list[int] | None = None

    def _next_token(self, logits: np.ndarray) -> int:
        token = super()._next_token(logits)
        self.own.append(token)
        if self.forced is None:
            return token
        # drive() turns the repeat guard off, so the parent appended `token` to the response:
        # the response holds what was fed instead.
        self._response[-1] = self.forced[len(self.own) - 1]
        return self._response[-1]

    def _run(self, ids):
        logits = super()._run(ids)
        self.trace.append((list(ids), logits.copy(), self.chunk))
        return logits

    def decide(self, audio_embeds, pcm=None):
        self.chunk += 1
        return super().decide(audio_embeds, pcm)

    def reset(self) -> None:
        super().reset()
        self.trace, self.chunk, self.own = [], -1, []


def drive(
    engine,
    pcm: np.ndarray,
    mode: str,
    respond_every: int = 7,
    max_tokens: int = 6,
    forced: list[int] | None = None,
):
    """Stream `pcm`; respond on every `respond_every`-th chunk regardless of p (forced, so
    generation is exercised). Returns the recorder (its trace) and per-chunk responses.
    `forced`: generate these tokens (another backend's `own`) instead of greedy ones."""
    # The protocol's own responses: transcribe-mode captions by agreement and assist by
    # grammar re-read the window through the same decoder graph (runtime/captions.py), so
    # these calls cover them.
    opts = RuntimeOptions(
        mode=mode,
        max_response_tokens=max_tokens,
        refractory_s=0.0,
        captions="protocol",
        assist="decoder",
    )
    enc = EncoderStream(engine)
    dec = _Recorder(engine, opts)
    dec.forced = forced
    dec.opens_with, dec.no_repeat = None, 0  # the model's own tokens: no policy guards
    s = engine.spec.chunk_samples
    responses: list[list[int] | None] = []
    for c in range(len(pcm) // s):
        dec.decide(enc.encode(pcm[c * s : (c + 1) * s]))
        if c % respond_every == respond_every - 1:
            dec.force_respond()  # whatever the model's p, this chunk responds
            first = dec.begin_response(c * 0.4)
            toks = [] if first is None else list(dec.continue_response(first))
            responses.append(toks)
        else:
            responses.append(None)
    return dec, responses


def check(
    bundle: Path | str, checkpoint: Path | str, seconds: float = 12.0, seed: int = 0, model=None
) -> dict:
    """ORT vs torch under the runtime's driver, and the runtime vs the training forward.
    `model`: the checkpoint already loaded (it is only read), else loaded from `checkpoint`."""
    if model is None:
        model, _, _ = load_whisper_checkpoint(checkpoint)
    ort_engine = CrossEngine(bundle)
    spec = ort_engine.spec
    torch_engine = TorchCrossEngine(model, spec)
    rng = np.random.default_rng(seed)
    n = int(seconds * spec.sample_rate) // spec.chunk_samples * spec.chunk_samples
    t = np.arange(n) / spec.sample_rate
    pcm = 0.1 * np.sin(2 * np.pi * 440 * t) * (t % 3 < 1) + 0.01 * rng.standard_normal(n)
    quantized = bool(spec.manifest.get("export", {}).get("quantization"))
    report = {"ok": True, "modes": {}, "quantized": quantized}
    for mode in spec.modes:
        a, resp = drive(ort_engine, pcm.astype(np.float32), mode)
        # An int8 bundle may pick another token where two are nearly tied, and the streams
        # then diverge, so torch is fed ORT's tokens: every call compared on the same inputs,
        # and how often torch's own greedy choice agreed is counted instead.
        b, _ = drive(
            torch_engine, pcm.astype(np.float32), mode, forced=a.own if quantized else None
        )
        ids_same = [x[0] for x in a.trace] == [x[0] for x in b.trace]
        agree = (
            float(np.mean([x == y for x, y in zip(a.own, b.own, strict=True)])) if a.own else 1.0
        )
        truncated = any(r is not None and len(r) >= 6 for r in resp)
        lay = cross_layout(model.vocab, mode, resp)
        streamed = [i for ids, _, _ in b.trace for i in ids]
        chunks = [c for ids, _, c in b.trace for _ in ids]
        layout_ok = truncated or (
            lay.ids[: len(streamed)] == streamed and lay.chunk[: len(chunks)] == chunks
        )
        diff = max(float(np.abs(x[1] - y[1]).max()) for x, y in zip(a.trace, b.trace, strict=False))
        full = _training_forward_diff(model, pcm.astype(np.float32), b.trace)
        c = spec.control
        p_diff = max(
            abs(_p(x[1][-1], c) - _p(y[1][-1], c)) for x, y in zip(a.trace, b.trace, strict=False)
        )
        # int8 weights move logits by ~1 (out of a 50k vocabulary); what must hold is the
        # same tokens and decisions, so a quantized bundle is judged on those.
        ok = (
            ids_same
            and layout_ok
            and full < 5e-3
            and (diff < 5e-2 if not quantized else agree >= MIN_INT8_AGREEMENT)
            and p_diff < 0.1
        )
        report["modes"][mode] = {
            "same_tokens": ids_same,
            "layout_is_runtime": layout_ok,
            "max_abs_logit_diff_ort_vs_torch": diff,
            "max_abs_p_diff": p_diff,
            "greedy_token_agreement": agree,
            "max_abs_logit_diff_stream_vs_full": full,
            "calls": len(a.trace),
        }
        report["ok"] &= ok
    report["max_abs_logit_diff"] = max(
        m["max_abs_logit_diff_ort_vs_torch"] for m in report["modes"].values()
    )
    report["max_abs_stream_vs_full"] = max(
        m["max_abs_logit_diff_stream_vs_full"] for m in report["modes"].values()
    )
    return report


def _p(row: np.ndarray, control: dict) -> float:
    pair = row[[control["silence"], control["respond"]]].astype(np.float64)
    return float(np.exp(pair[1] - np.logaddexp(pair[0], pair[1])))


@torch.no_grad()
def _training_forward_diff(model, pcm, trace) -> float:
    """Replay the streamed calls through the training path (one masked forward over the whole
    segment, each token seeing the memory of the chunk it was fed in) and compare logits."""
    lay = CrossLayout(
        [i for ids, _, _ in trace for i in ids], [c for ids, _, c in trace for _ in ids], [], []
    )
    lay.control = lay.lm = [-100] * len(lay.ids)
    windows, lengths = model.encoder.encode_offline(pcm)
    memory = torch.from_numpy(windows.reshape(1, -1, windows.shape[2]))
    ids, pos, self_mask, cross_mask, _, _ = batch_masks([lay], [lengths], windows.shape[1])
    d = model.decoder
    h, _ = d.hidden(ids, pos, self_mask, d.empty_past(1), d.cross_kv(memory), cross_mask)
    full = d.logits(h)[0].numpy()
    k, worst = 0, 0.0
    for ids_call, logits, _ in trace:
        q = len(ids_call)
        worst = max(worst, float(np.abs(full[k : k + q] - logits).max()))
        k += q
    return worst
