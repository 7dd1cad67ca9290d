"""HF audio-LLM checkpoint -> soundflow bundle: the same files and manifest as Contract 3,
plus the optional keys of Contract 3b (`source`, `control`, `prompt_template`, encoder delay).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from soundflow import __version__, audio
from soundflow.export import specs
from soundflow.export.graphs import CachedDecoder
from soundflow.export.onnx_export import OPSET, declare, trace_to_onnx
from soundflow.manifest import write_manifest
from soundflow.train.kinds.decoder.hf_audio import encoder as enc_mod
from soundflow.train.kinds.decoder.hf_audio import prompt, source
from soundflow.train.kinds.decoder.hf_audio.frontend import MelConfig

DEFAULT_CACHE_CAPACITY = 1024  # decoder KV slots the runtime preallocates
# Pretrained chat models answer at length; a turn is longer than a soundflow response.
DECISION_DEFAULTS = {"threshold": 0.5, "refractory_s": 8.0, "max_response_tokens": 64}


def _example(tensors, sizes):
    out = []
    for s in tensors:
        shape = [sizes[d] if isinstance(d, str) else d for d in s.shape]
        dtype = torch.int64 if s.dtype == "int64" else torch.float32
        out.append(
            torch.zeros(shape, dtype=dtype) if s.dtype == "int64" else torch.randn(shape) * 0.1
        )
    return tuple(out)


def export_graph(module, inputs, outputs, example, path: Path, meta: dict) -> None:
    """torch.onnx (TorchScript exporter) under the spec's names; output dims declared from
    the specs, constants in the metadata; weights over 2 GB go to one `<name>.data` file."""
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / path.name
        with torch.no_grad():
            trace_to_onnx(module, inputs, outputs, example, raw)  # the soundflow exporter's call
        m = onnx.load(str(raw), load_external_data=False)  # weights stay on disk
        declare(m, outputs, meta)
        _gather_external(m, Path(tmp), path.parent, path.name + ".data")
        onnx.save(m, str(path))


def _gather_external(m, src: Path, dst: Path, data_name: str) -> None:
    """Graphs over 2 GB come out of the exporter with one file per weight; copy them, one
    tensor at a time (memory stays flat), into a single `<graph>.data` next to the graph."""
    from onnx.external_data_helper import _get_all_tensors  # initializers and Constant nodes

    external = [t for t in _get_all_tensors(m) if t.data_location == onnx.TensorProto.EXTERNAL]
    if not external:
        return
    with open(dst / data_name, "wb") as f:
        for t in external:
            info = {e.key: e.value for e in t.external_data}
            with open(src / info["location"], "rb") as g:
                g.seek(int(info.get("offset", 0)))
                blob = g.read(int(info["length"])) if "length" in info else g.read()
            f.seek((f.tell() + 65535) // 65536 * 65536)  # aligned: ORT can memory-map it
            offset = f.tell()
            f.write(blob)
            del t.external_data[:]
            for key, value in (("location", data_name), ("offset", offset), ("length", len(blob))):
                t.external_data.add(key=key, value=str(value))


def export_hf_bundle(
    checkpoint_dir: Path | str,
    out: Path | str,
    chunk_ms: int = audio.CHUNK_MS,
    cache_capacity: int = DEFAULT_CACHE_CAPACITY,
    encoder_left_context: int | None = None,
    llm: source.AudioLLM | None = None,
    log=print,
) -> dict:
    """Write a streaming bundle for a Qwen2-Audio / Qwen2.5-Omni checkpoint; returns the
    manifest. `encoder_left_context`: cached encoder frames (default: one whole window)."""
    checkpoint_dir, out = Path(checkpoint_dir), Path(out)
    llm = llm or source.load(checkpoint_dir)
    rope = getattr(llm.text_config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise source.HFCheckpointError(
            f"rope_type {rope['rope_type']!r}: only plain RoPE exports to the unrotated cache"
        )
    tok = prompt.load_tokenizer(checkpoint_dir)
    ctl = prompt.control_for(tok, llm.architecture)
    mel = MelConfig.from_checkpoint(checkpoint_dir, llm.audio_config.num_mel_bins)
    chunk_samples = audio.chunk_samples(chunk_ms)
    enc = enc_mod.StreamingAudioEncoder(llm, chunk_samples, mel, encoder_left_context).eval()
    dec = CachedDecoder(llm.text).eval()
    dims, ed = dec.dims, enc.dims
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    common = {
        "soundflow_version": __version__,
        "sample_rate": mel.sample_rate,
        "chunk_ms": chunk_ms,
        "chunk_samples": chunk_samples,
        "source_architecture": llm.architecture,
    }
    t0 = time.time()
    enc_in, enc_out = enc_mod.io_specs(ed)
    states = enc_mod.state_specs(ed)
    export_graph(
        enc,
        enc_in,
        enc_out,
        _example(enc_in, {specs.BATCH: 1}),
        out / "encoder.onnx",
        {
            **common,
            "embeds_per_chunk": ed.embeds_per_chunk,
            "hidden_size": ed.hidden,
            "state": [s.to_json() for s in states],
            "delay_embeds": 1,
        },
    )
    dec_in, dec_out = specs.decoder_io(dims)
    sizes = {specs.BATCH: 1, specs.QUERY: 3, specs.CACHE: 5, specs.KEYS: 8}
    export_graph(
        dec,
        dec_in,
        dec_out,
        _example(dec_in, sizes),
        out / "decoder.onnx",
        {
            **common,
            "num_layers": dims.layers,
            "num_kv_heads": dims.kv_heads,
            "head_dim": dims.head_dim,
            "cache_capacity": cache_capacity,
            "cache_layout": specs.CACHE_LAYOUT,
            "control_ids": ctl.control_ids,
            "control_mode": ctl.mode,
            "vocab_size": dims.vocab,
        },
    )
    export_s = time.time() - t0
    embed = llm.text.get_input_embeddings().weight.detach().float().numpy()
    np.save(out / "embed_tokens.npy", embed)
    tok.save(str(out / "tokenizer.json"))
    counts = {
        "encoder": sum(p.numel() for p in enc.parameters()),
        "decoder": sum(p.numel() for p in llm.text.parameters()),
    }
    counts["total"] = counts["encoder"] + counts["decoder"]
    manifest = {
        "created_by": f"soundflow {__version__}",
        "model": {
            "name": checkpoint_dir.name,
            "recipe": "soundflow-finetune" if ctl.mode == prompt.NATIVE else None,
            "steps": None,
            # Pretrained weights; whether the model decides itself is `control.mode`.
            "trained": True,
            "description": (
                f"{llm.architecture} checkpoint, "
                + (
                    "fine-tuned with soundflow's control tokens"
                    if ctl.mode == prompt.NATIVE
                    else "plain chat model: responds at utterance ends (control fallback)"
                )
            ),
            "parameters": counts,
        },
        "source": {
            "architecture": llm.architecture,
            "model_type": json.loads((checkpoint_dir / "config.json").read_text())["model_type"],
            "encoder_window_frames": ed.window,
            "chat_template": prompt.chat_template(checkpoint_dir),
        },
        "audio": {
            "sample_rate": mel.sample_rate,
            "chunk_ms": chunk_ms,
            "chunk_samples": chunk_samples,
        },
        "encoder": {
            "file": "encoder.onnx",
            "inputs": [s.to_json() for s in enc_in],
            "outputs": [s.to_json() for s in enc_out],
            "state": [s.to_json() for s in states],
            "embeds_per_chunk": ed.embeds_per_chunk,
            "delay_embeds": 1,  # the embeds lag the audio by one (40 ms); the first is pre-roll
            "differences": list(enc_mod.DIFFERENCES),
        },
        # Omni's 3-D (mrope) positions coincide for audio + text: one 1-D position each.
        "decoder": {**specs.decoder_manifest(dims, cache_capacity), "positions": "1d"},
        "embeddings": {"file": "embed_tokens.npy", "shape": list(embed.shape), "dtype": "float32"},
        "tokenizer": {"file": "tokenizer.json", "type": "byte-level-bpe"},
        "special_tokens": prompt.special_ids(tok),
        "control_ids": ctl.control_ids,
        "control": ctl.manifest(),
        "tasks": ctl.tasks,
        "decision": dict(DECISION_DEFAULTS),
        "cache_policy": {"sinks": "prompt", "capacity": cache_capacity},
        "export": {"opset": OPSET, "seconds": round(export_s, 2), "quantization": None},
    }
    if ctl.template is not None:
        manifest["prompt_template"] = ctl.template
    write_manifest(out, manifest)
    log(
        f"exported {llm.architecture} {checkpoint_dir} -> {out} in {export_s:.1f}s "
        f"({ctl.mode} control, {ed.embeds_per_chunk} embeds per {chunk_ms} ms chunk)"
    )
    return manifest
