"""Export parity of either model kind under one driver: the runtime's own stream (runtime/kinds/__init__.py)
runs the bundle on ONNX Runtime and its checkpoint on the kind's torch reference engine over
the same audio; the manifest's `kind` picks, through `REFERENCES`, what is compared and within
what (export/decoder_reference.py, export/whisper_reference.py). One report format for both.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from soundflow.export.parity_kind import Reference, Trace
from soundflow.manifest import BundleError
from soundflow.runtime.bundle import load_spec
from soundflow.runtime.kinds import KINDS, open_engine
from soundflow.runtime.kinds.decoder import EncoderStream
from soundflow.runtime.options import RuntimeOptions


def _decoder_only() -> Reference:
    from soundflow.export.decoder_reference import DecoderOnly

    return DecoderOnly()


def _whisper_cross() -> Reference:
    from soundflow.export.whisper_reference import WhisperCross

    return WhisperCross()


# manifest `decoder.kind` -> that kind's parity reference, imported when asked for
REFERENCES = {"decoder-only": _decoder_only, "whisper-cross": _whisper_cross}


def reference(kind: str) -> Reference:
    if kind not in REFERENCES:
        raise BundleError(
            f"decoder kind {kind!r} has no parity reference ({sorted(REFERENCES)}); "
            "upgrade soundflow or re-export the bundle"
        )
    return REFERENCES[kind]()


class Recording:
    """Over a kind's runtime stream: records every decoder call it makes. With `forced`
    (another run's `own`, in order) it feeds those tokens instead of its greedy choices, so
    two backends see identical inputs call for call; its own choices stay in `trace.own`."""

    forced: list[int] | None = None

    def reset(self) -> None:
        super().reset()
        self.trace, self.chunk = Trace(), -1

    def decide(self, audio_embeds, pcm=None, ready=None):
        self.chunk += 1
        return super().decide(audio_embeds, pcm, ready)

    def _run(self, x):
        logits = super()._run(x)
        fed = np.array(x)
        t = self.trace
        t.inputs.append(fed.astype(np.float32) if fed.dtype.kind == "f" else fed)
        t.logits.append(logits.copy())
        t.chunks.append(self.chunk)
        t.evictions.append(self.cache.evictions)
        return logits

    def _next_token(self, logits: np.ndarray) -> int:
        token = super()._next_token(logits)
        self.trace.own.append(token)
        if self.forced is None:
            return token
        token = self.forced[len(self.trace.own) - 1]
        # A stream that keeps its response (the cross kind's repeat guard, off under parity)
        # has appended its own choice: it must hold what was fed instead.
        response = getattr(self, "_response", None)
        if response:
            response[-1] = token
        return token


@functools.cache
def _recording(stream_cls: type) -> type:
    return type(f"Recording{stream_cls.__name__}", (Recording, stream_cls), {})


def drive(engine, pcm: np.ndarray, mode: str, forced: list[int] | None = None, **plan) -> Trace:
    """Stream `pcm` through the runtime's EncoderStream and the engine kind's stream, on
    `engine` (ONNX Runtime or the torch reference: one engine interface), under the kind's
    plan (`plan` changes its fields). A chunk responds every `respond_every`-th chunk whatever
    its p (so generation is exercised) and, with `own_decisions`, where the stream decides so;
    no refractory time. `forced`: generate these tokens instead of greedy ones."""
    spec = engine.spec
    ref = reference(spec.kind)
    p = replace(ref.plan, **plan)
    _, stream_cls = KINDS[spec.kind]()
    dec = _recording(stream_cls)(engine, ref.stream_options(mode, p))
    ref.prepare(dec)
    dec.forced = forced
    enc = EncoderStream(engine)
    n, chunk_s = spec.chunk_samples, spec.chunk_ms / 1000
    tr = dec.trace
    for c in range(len(pcm) // n):
        x = pcm[c * n : (c + 1) * n]
        audio_embeds = enc.encode(x)
        tr.audio_embeds.append(audio_embeds)
        d = dec.decide(audio_embeds, x)
        tr.p_respond.append(d.p)
        tr.decisions.append(d.respond)
        forced_now = bool(p.respond_every) and c % p.respond_every == p.respond_every - 1
        if forced_now and hasattr(dec, "force_respond"):
            dec.force_respond()  # a stream that checks p itself is told to respond anyway
        if forced_now or (p.own_decisions and d.respond):
            first = dec.begin_response(c * chunk_s)
            tr.responses.append([] if first is None else list(dec.continue_response(first)))
        else:
            tr.responses.append(None)
    return tr


def check(
    bundle: Path | str, checkpoint: Path | str, chunks: int = 30, seed: int = 0, model=None
) -> dict:
    """ONNX Runtime vs the torch reference over the same stream for every mode, and the
    streamed calls vs one full forward, as the bundle's kind measures them. `model`: the
    checkpoint already loaded (it is only read), else loaded from `checkpoint`."""
    spec = load_spec(bundle)
    ref = reference(spec.kind)
    ort_engine = open_engine(spec, ref.ort_options())
    if model is None:
        model = ref.load(checkpoint)
    torch_engine = ref.engine(model, ort_engine.spec)
    pcm = ref.signal(ort_engine.spec, chunks, seed)
    report = {"kind": spec.kind, "chunks": chunks, **ref.extras(spec), "modes": {}}
    ok = True
    for mode in spec.modes:
        got = drive(ort_engine, pcm, mode)
        # The torch run may be fed ONNX's tokens (where the kind says: a quantized bundle
        # may pick another of two near-tied tokens, and the streams would then diverge).
        forced = got.own if ref.feeds_reference(spec) else None
        torch_trace = drive(torch_engine, pcm, mode, forced)
        report["modes"][mode], passed = ref.measure(model, spec, mode, pcm, got, torch_trace)
        ok = ok and passed
    for key, row_key in ref.totals:
        report[key] = max(r[row_key] for r in report["modes"].values())
    report["ok"] = bool(ok)
    return report


def summary_line(report: dict) -> str:
    """The report's last line, as `soundflow export` prints it."""
    ref = reference(report["kind"])
    status = "ok" if report["ok"] else "FAILED"
    return (
        f"parity {status}: max |delta logit| onnxruntime vs torch = "
        f"{report['max_abs_logit_diff']:.3g}, {ref.full_label} = {report[ref.full_key]:.3g}"
    )


def format_report(report: dict) -> str:
    """The whole report as JSON, then its summary line."""
    return json.dumps(report, indent=2) + "\n" + summary_line(report)


def _ort(bundle: Path, variant: str = "fp32"):

    return open_engine(
        bundle, RuntimeOptions.from_flags(provider="cpu", threads=1), variant=variant
    )


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
