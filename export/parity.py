"""Export parity: ONNX Runtime against torch over a streamed run with real generation,
and cached chunk-by-chunk decoding against one full-sequence `transformers` forward.

One small numpy driver runs the protocol over either backend, so both see the same calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MASKED = -1e4


class TorchBackend:
    def __init__(self, model):
        import torch

        from soundflow.export.graphs import CachedDecoder, EncoderGraph

        self.torch = torch
        self.enc, self.dec = EncoderGraph(model).eval(), CachedDecoder(model.decoder).eval()

    def encode(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        t = self.torch
        with t.no_grad():
            return [o.numpy() for o in self.enc(*(t.from_numpy(v) for v in feeds.values()))]

    def decode(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        t = self.torch
        with t.no_grad():
            return [o.numpy() for o in self.dec(*(t.from_numpy(v) for v in feeds.values()))]


class OrtBackend:
    def __init__(
        self,
        bundle: Path,
        encoder_file: str = "encoder.onnx",
        decoder_file: str = "decoder.onnx",
        threads: int = 1,
    ):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.enc = ort.InferenceSession(
            str(bundle / encoder_file), opts, providers=["CPUExecutionProvider"]
        )
        self.dec = ort.InferenceSession(
            str(bundle / decoder_file), opts, providers=["CPUExecutionProvider"]
        )

    def encode(self, feeds):
        return self.enc.run(None, feeds)

    def decode(self, feeds):
        return self.dec.run(None, feeds)


@dataclass
class Trace:
    logits: list[np.ndarray] = field(default_factory=list)  # per decoder call, (T, V)
    embeds: list[np.ndarray] = field(default_factory=list)  # every embedding fed, in order
    audio_embeds: list[np.ndarray] = field(default_factory=list)  # per chunk
    p_respond: list[float] = field(default_factory=list)  # per chunk
    decisions: list[bool] = field(default_factory=list)  # the model's own, per chunk
    tokens: list[int] = field(default_factory=list)  # every generated token


class ReferenceDriver:
    """The protocol over a fixed-capacity cache without eviction (capacity must suffice)."""

    def __init__(self, backend, manifest: dict, embed_table: np.ndarray):
        self.b, self.m, self.embed = backend, manifest, embed_table
        dec = manifest["decoder"]
        self.layers, self.capacity = dec["num_layers"], dec["cache_capacity"]
        self.kv_shape = (1, dec["num_kv_heads"], self.capacity, dec["head_dim"])

    def run(
        self,
        pcm: np.ndarray,
        task: str,
        force_every: int = 3,
        max_tokens: int = 8,
        threshold: float = 0.5,
    ) -> Trace:
        ctrl = self.m["control_ids"]
        chunk = self.m["audio"]["chunk_samples"]
        states = {
            s["input"]: np.zeros(
                [1 if isinstance(d, str) else d for d in s["shape"]], dtype=s["dtype"]
            )
            for s in self.m["encoder"]["state"]
        }
        past = [np.zeros(self.kv_shape, np.float32) for _ in range(2 * self.layers)]
        valid = np.zeros(self.capacity, bool)
        slot_pos = np.zeros(self.capacity, np.int64)
        used = 0
        tr = Trace()

        def feed(x: np.ndarray) -> np.ndarray:
            nonlocal used
            t = len(x)
            if used + t > self.capacity:
                raise ValueError("parity stream overflows the cache capacity")
            mask = np.full((1, 1, t, self.capacity + t), MASKED, np.float32)
            mask[..., : self.capacity][..., valid] = 0.0
            mask[0, 0, :, self.capacity :] = np.triu(np.full((t, t), MASKED, np.float32), 1)
            pos = np.concatenate([slot_pos, np.arange(used, used + t)])[None]
            feeds = {
                "inputs_embeds": x[None].astype(np.float32),
                "attention_mask": mask,
                "position_ids": pos,
            }
            for i in range(self.layers):
                feeds[f"past_key_values.{i}.key"] = past[2 * i]
                feeds[f"past_key_values.{i}.value"] = past[2 * i + 1]
            logits, *new = self.b.decode(feeds)
            for j, arr in enumerate(new):  # in place, at the next free slots
                past[j][:, :, used : used + t] = arr
            valid[used : used + t] = True
            slot_pos[used : used + t] = np.arange(used, used + t)
            used += t
            tr.logits.append(logits[0])
            tr.embeds.append(x)
            return logits[0]

        pending = self.embed[self.m["tasks"][task]["prompt_ids"]]
        for c in range(len(pcm) // chunk):
            outs = self.b.encode({"audio": pcm[None, c * chunk : (c + 1) * chunk], **states})
            audio_embeds = outs[0][0]
            states = dict(zip(states, outs[1:], strict=True))
            tr.audio_embeds.append(audio_embeds)
            last = feed(np.concatenate([pending, audio_embeds]))[-1]
            pair = last[[ctrl["silence"], ctrl["respond"]]]
            p = float(np.exp(pair[1] - np.logaddexp(pair[0], pair[1])))
            tr.p_respond.append(p)
            tr.decisions.append(p >= threshold)
            if not (p >= threshold or (force_every and c % force_every == force_every - 1)):
                pending = self.embed[[ctrl["silence"]]]
                continue
            token = ctrl["respond"]
            for _ in range(max_tokens):
                token = int(np.argmax(feed(self.embed[[token]])[-1]))
                tr.tokens.append(token)
                if token == ctrl["eos"]:
                    break
            pending = self.embed[[ctrl["eos"]]]
        return tr


def check(bundle: Path | str, checkpoint: Path | str, chunks: int = 30, seed: int = 0) -> dict:
    """Run torch and ORT over the same stream for every task; compare decisions, tokens, logits."""
    import torch

    from soundflow.manifest import read_manifest
    from soundflow.train.checkpoint import load_checkpoint
    from soundflow.train.smoke import toy_stream

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    model, _, cfg = load_checkpoint(checkpoint)
    embed = np.load(bundle / manifest["embeddings"]["file"])
    pcm, _ = toy_stream(seed, seconds=chunks * cfg.chunk_ms / 1000)
    pcm = pcm[: chunks * cfg.chunk_samples]
    report = {"chunks": chunks, "tasks": {}}
    for task in manifest["tasks"]:
        ref = ReferenceDriver(TorchBackend(model), manifest, embed).run(pcm, task)
        got = ReferenceDriver(OrtBackend(bundle), manifest, embed).run(pcm, task)
        same_calls = len(ref.logits) == len(got.logits)
        logit_diff = max(
            float(np.abs(a - b).max()) for a, b in zip(ref.logits, got.logits, strict=False)
        )
        embed_diff = max(
            float(np.abs(a - b).max())
            for a, b in zip(ref.audio_embeds, got.audio_embeds, strict=True)
        )
        with torch.no_grad():  # the whole fed sequence at once, through transformers itself
            full = model.decoder(inputs_embeds=torch.from_numpy(np.concatenate(ref.embeds)[None]))
        cached_full = float(np.abs(np.concatenate(ref.logits) - full.logits[0].numpy()).max())
        report["tasks"][task] = {
            "decoder_calls": len(ref.logits),
            "generated_tokens": len(ref.tokens),
            "model_responds": int(sum(ref.decisions)),
            "decisions_equal": ref.decisions == got.decisions and same_calls,
            "tokens_equal": ref.tokens == got.tokens,
            "max_abs_embed_diff": embed_diff,
            "max_abs_logit_diff": logit_diff,
            "max_abs_cached_vs_full_diff": cached_full,
        }
    rows = report["tasks"].values()
    report["max_abs_logit_diff"] = max(r["max_abs_logit_diff"] for r in rows)
    report["max_abs_cached_vs_full_diff"] = max(r["max_abs_cached_vs_full_diff"] for r in rows)
    report["ok"] = bool(
        all(r["decisions_equal"] and r["tokens_equal"] for r in rows)
        and report["max_abs_logit_diff"] < 1e-3
        and report["max_abs_cached_vs_full_diff"] < 1e-3
    )
    return report


def agreement(
    bundle: Path | str, encoder_file: str, decoder_file: str, chunks: int = 30, seed: int = 0
) -> dict:
    """How often a variant (e.g. int8) agrees with the fp32 bundle: reported, not asserted."""
    from soundflow.manifest import read_manifest
    from soundflow.train.smoke import toy_stream

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    embed = np.load(bundle / manifest["embeddings"]["file"])
    pcm, _ = toy_stream(seed, seconds=chunks * manifest["audio"]["chunk_ms"] / 1000)
    out = {}
    for task in manifest["tasks"]:
        a = ReferenceDriver(OrtBackend(bundle), manifest, embed).run(pcm, task)
        b = ReferenceDriver(OrtBackend(bundle, encoder_file, decoder_file), manifest, embed).run(
            pcm, task
        )
        n = min(len(a.tokens), len(b.tokens))
        out[task] = {
            "decision_agreement": float(np.mean(np.equal(a.decisions, b.decisions))),
            "token_agreement": float(np.mean(np.equal(a.tokens[:n], b.tokens[:n]))) if n else 1.0,
            "max_abs_p_respond_diff": float(np.abs(np.subtract(a.p_respond, b.p_respond)).max()),
        }
    return out


def format_report(report: dict) -> str:
    return json.dumps(report, indent=2)
