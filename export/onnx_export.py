"""Checkpoint -> bundle directory: encoder.onnx, decoder.onnx, embed_tokens.npy,
tokenizer.json and a hashed manifest.json (ARCHITECTURE.md, Contract 3).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from soundflow import __version__, audio, protocol
from soundflow.export import specs
from soundflow.export.graphs import CachedDecoder, EncoderGraph
from soundflow.manifest import write_manifest
from soundflow.train.checkpoint import load_checkpoint
from soundflow.train.kinds.decoder.model import parameter_counts
from soundflow.train.tokenizer import prompt_ids, special_ids

OPSET = 17
DEFAULT_CACHE_CAPACITY = 1024  # decoder KV slots the runtime preallocates
DECISION_DEFAULTS = {"threshold": 0.5, "refractory_s": 8.0, "max_response_tokens": 32}


def _describe(recipe: str | None) -> str:
    if recipe == "smoke":
        return (
            "untrained stand-in: the smoke recipe, about a minute on generated tones; "
            "it reacts to beeps and chirps, it does not understand speech"
        )
    if recipe == "default":
        return (
            "the embedded default: the default recipe on synthetic speech (espeak-ng, "
            "festival) and a small sound library; README.md states its eval numbers and "
            "limits, and how to train one on real recordings"
        )
    return f"trained with recipe {recipe!r}" if recipe else "unknown provenance"


def example_inputs(tensors: list[specs.TensorSpec], sizes: dict[str, int]):
    """Tracing inputs for `tensors`, symbolic sizes taken from `sizes`: zeros or small noise."""
    out = []
    for s in tensors:
        shape = [sizes[d] if isinstance(d, str) else d for d in s.shape]
        if s.dtype == "int64":
            out.append(torch.zeros(shape, dtype=torch.int64))
        else:
            out.append(torch.randn(shape) * 0.1)
    return tuple(out)


def trace_to_onnx(module, inputs, outputs, example, path: Path) -> None:
    """Trace `module` on `example` into an ONNX graph at `path`, named and dynamic per the specs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer notes
        torch.onnx.export(
            module,
            example,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[s.name for s in inputs],
            output_names=[s.name for s in outputs],
            dynamic_axes=specs.dynamic_axes(inputs + outputs),
            do_constant_folding=True,
        )


def finish_graph(path: Path, outputs: list[specs.TensorSpec], meta: dict) -> None:
    """Declare output shapes from the specs (the tracer leaves some anonymous) and write
    every constant a driver needs into the graph's metadata (sherpa-onnx's habit)."""
    m = onnx.load(str(path))
    declare(m, outputs, meta)
    onnx.save(m, str(path))


def declare(m: onnx.ModelProto, outputs: list[specs.TensorSpec], meta: dict) -> None:
    """In place: every output's dims from its spec, and `meta` as the graph's metadata
    (strings bare, other values as JSON; runtime.bundle.graph_metadata reads them back)."""
    by_name = {s.name: s for s in outputs}
    for out in m.graph.output:
        dims = out.type.tensor_type.shape.dim
        for dim, want in zip(dims, by_name[out.name].shape, strict=True):
            if isinstance(want, str):
                dim.dim_param = want
            else:
                dim.dim_value = want
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v if isinstance(v, str) else json.dumps(v))


def export_bundle(
    checkpoint: Path | str, out: Path | str, cache_capacity: int | None = None, log=print
) -> dict:
    """Write an fp32 bundle; returns the manifest."""
    checkpoint, out = Path(checkpoint), Path(out)
    model, tok, cfg = load_checkpoint(checkpoint)
    training = json.loads((checkpoint / "config.json").read_text()).get("training", {})
    if cache_capacity is None:  # what training has seen, so positions stay in range
        trained = training.get("max_sequence")
        cache_capacity = -(-trained // 64) * 64 if trained else DEFAULT_CACHE_CAPACITY
    dims = specs.DecoderDims.from_hf(model.decoder.config)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.time()
    enc_in, enc_out = specs.encoder_io(cfg)
    with torch.no_grad():
        trace_to_onnx(
            EncoderGraph(model).eval(),
            enc_in,
            enc_out,
            example_inputs(enc_in, {specs.BATCH: 1}),
            out / "encoder.onnx",
        )
        dec_in, dec_out = specs.decoder_io(dims)
        sizes = {specs.BATCH: 1, specs.QUERY: 3, specs.CACHE: 5, specs.KEYS: 8}
        trace_to_onnx(
            CachedDecoder(model.decoder).eval(),
            dec_in,
            dec_out,
            example_inputs(dec_in, sizes),
            out / "decoder.onnx",
        )
    export_s = time.time() - t0
    embed = model.decoder.get_input_embeddings().weight.detach().float().numpy()
    np.save(out / "embed_tokens.npy", embed)
    tok.save(str(out / "tokenizer.json"))

    ids = special_ids(tok)
    tasks = training.get("tasks") or list(protocol.TASKS)
    control = {
        "silence": ids[protocol.SILENCE],
        "respond": ids[protocol.RESPOND],
        "eos": ids[protocol.EOS],
        "bos": ids[protocol.BOS],
    }
    meta_common = {
        "soundflow_version": __version__,
        "sample_rate": audio.SAMPLE_RATE,
        "chunk_ms": cfg.chunk_ms,
        "chunk_samples": cfg.chunk_samples,
    }
    finish_graph(
        out / "encoder.onnx",
        enc_out,
        {
            **meta_common,
            "embeds_per_chunk": cfg.embeds_per_chunk,
            "hidden_size": dims.hidden,
            "state": [s.to_json() for s in specs.encoder_state(cfg)],
        },
    )
    finish_graph(
        out / "decoder.onnx",
        dec_out,
        {
            **meta_common,
            "num_layers": dims.layers,
            "num_kv_heads": dims.kv_heads,
            "head_dim": dims.head_dim,
            "cache_capacity": cache_capacity,
            "cache_layout": specs.CACHE_LAYOUT,
            "mask_value": specs.MASK_VALUE,
            "control_ids": control,
            "vocab_size": dims.vocab,
        },
    )
    counts = parameter_counts(model)
    manifest = {
        "created_by": f"soundflow {__version__}",
        "model": {
            "name": checkpoint.name,
            "recipe": training.get("recipe"),
            "steps": training.get("step"),
            "trained": bool(training.get("recipe") not in (None, "smoke")),
            "description": training.get("description") or _describe(training.get("recipe")),
            "parameters": counts,
        },
        "audio": {
            "sample_rate": audio.SAMPLE_RATE,
            "chunk_ms": cfg.chunk_ms,
            "chunk_samples": cfg.chunk_samples,
        },
        "encoder": {
            "file": "encoder.onnx",
            "inputs": [s.to_json() for s in enc_in],
            "outputs": [s.to_json() for s in enc_out],
            "state": [s.to_json() for s in specs.encoder_state(cfg)],
            "embeds_per_chunk": cfg.embeds_per_chunk,
        },
        "decoder": specs.decoder_manifest(dims, cache_capacity),
        "embeddings": {"file": "embed_tokens.npy", "shape": list(embed.shape), "dtype": "float32"},
        "tokenizer": {"file": "tokenizer.json", "type": "byte-level-bpe"},
        "special_tokens": ids,
        "control_ids": control,
        "tasks": {t: {"prompt_ids": prompt_ids(tok, t)} for t in tasks},
        "decision": dict(DECISION_DEFAULTS),
        "cache_policy": {"sinks": "prompt", "capacity": cache_capacity},
        "export": {"opset": OPSET, "seconds": round(export_s, 2), "quantization": None},
    }
    write_manifest(out, manifest)
    log(
        f"exported {checkpoint} -> {out} in {export_s:.1f}s "
        f"(encoder {(out / 'encoder.onnx').stat().st_size / 1e6:.2f} MB, "
        f"decoder {(out / 'decoder.onnx').stat().st_size / 1e6:.2f} MB)"
    )
    return manifest
