"""The names, dtypes and shapes of every exported input and output, declared once.

The exporter names graph tensors from here, writes them into the manifest and the ONNX
metadata, and the tests check the exported graphs against them (optimum's OnnxConfig habit).
"""

from __future__ import annotations

from dataclasses import dataclass

from soundflow import audio, protocol
from soundflow.manifest import StateSpec, TensorSpec
from soundflow.train.config import ModelConfig

BATCH, QUERY, CACHE, KEYS = "batch", "query_len", "cache_len", "cache_len+query_len"


@dataclass(frozen=True)
class DecoderDims:
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    vocab: int
    rope_theta: float

    @classmethod
    def from_hf(cls, hf_cfg) -> DecoderDims:
        head_dim = (
            getattr(hf_cfg, "head_dim", None) or hf_cfg.hidden_size // hf_cfg.num_attention_heads
        )
        rope = getattr(hf_cfg, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(hf_cfg, "rope_theta", 10_000.0))
        return cls(
            hf_cfg.num_hidden_layers,
            hf_cfg.num_attention_heads,
            hf_cfg.num_key_value_heads,
            head_dim,
            hf_cfg.hidden_size,
            hf_cfg.vocab_size,
            float(theta),
        )


def encoder_state(cfg: ModelConfig) -> list[StateSpec]:
    e = cfg.encoder
    return [
        StateSpec(
            "frontend_state", "frontend_state_out", "float32", (BATCH, audio.FRONTEND_OVERLAP)
        ),
        StateSpec("conv_state", "conv_state_out", "float32", (BATCH, e.n_mels, e.conv_kernel - 1)),
        StateSpec(
            "cache_key", "cache_key_out", "float32", (e.n_layers, BATCH, e.left_context, e.d_model)
        ),
        StateSpec(
            "cache_value",
            "cache_value_out",
            "float32",
            (e.n_layers, BATCH, e.left_context, e.d_model),
        ),
        StateSpec("cache_len", "cache_len_out", "int64", (BATCH,)),
    ]


def encoder_io(cfg: ModelConfig) -> tuple[list[TensorSpec], list[TensorSpec]]:
    states = encoder_state(cfg)
    inputs = [TensorSpec(protocol.AUDIO, "float32", (BATCH, cfg.chunk_samples))]
    inputs += [TensorSpec(s.input, s.dtype, s.shape) for s in states]
    outputs = [
        TensorSpec(protocol.AUDIO_EMBEDS, "float32", (BATCH, cfg.embeds_per_chunk, cfg.hidden_size))
    ]
    outputs += [TensorSpec(s.output, s.dtype, s.shape) for s in states]
    return inputs, outputs


past_names, present_names = protocol.past_names, protocol.present_names  # names: protocol.py


def decoder_io(d: DecoderDims) -> tuple[list[TensorSpec], list[TensorSpec]]:
    kv_past = (BATCH, d.kv_heads, CACHE, d.head_dim)
    kv_new = (BATCH, d.kv_heads, QUERY, d.head_dim)
    inputs = [
        TensorSpec(protocol.INPUTS_EMBEDS, "float32", (BATCH, QUERY, d.hidden)),
        TensorSpec(protocol.ATTENTION_MASK, "float32", (BATCH, 1, QUERY, KEYS)),
        TensorSpec(protocol.POSITION_IDS, "int64", (BATCH, KEYS)),
    ] + [TensorSpec(n, "float32", kv_past) for n in past_names(d.layers)]
    outputs = [TensorSpec(protocol.LOGITS, "float32", (BATCH, QUERY, d.vocab))]
    outputs += [TensorSpec(n, "float32", kv_new) for n in present_names(d.layers)]
    return inputs, outputs


CACHE_LAYOUT = "fixed-unrotated-new-only"
MASK_VALUE = protocol.MASK_VALUE  # additive, finite (fp16 engines stay NaN-free)


def decoder_manifest(d: DecoderDims, cache_capacity: int, file: str = "decoder.onnx") -> dict:
    """The manifest's `decoder` section: the graph's tensors and the cache a driver needs."""
    inputs, outputs = decoder_io(d)
    return {
        "file": file,
        "inputs": [s.to_json() for s in inputs],
        "outputs": [s.to_json() for s in outputs],
        "num_layers": d.layers,
        "num_heads": d.heads,
        "num_kv_heads": d.kv_heads,
        "head_dim": d.head_dim,
        "hidden_size": d.hidden,
        "vocab_size": d.vocab,
        "cache_capacity": cache_capacity,
        "cache_layout": CACHE_LAYOUT,
        "mask_value": MASK_VALUE,
    }


def dynamic_axes(specs: list[TensorSpec]) -> dict[str, dict[int, str]]:
    """torch.onnx dynamic_axes for every symbolic dim."""
    out = {}
    for s in specs:
        axes = {i: dim for i, dim in enumerate(s.shape) if isinstance(dim, str)}
        if axes:
            out[s.name] = axes
    return out


# ---------------------------------------------------------------------- cross-attention kind
# Whisper-style bundles (ARCHITECTURE.md, Contract 3c): the encoder returns each new frame's
# cross-attention keys and values once; the decoder reads them from a bounded memory.
# Names follow optimum's seq2seq convention (`.decoder.` self-attention, `.encoder.` cross).
DECODER_KIND = "decoder-only"
CROSS_KIND = "whisper-cross"
HISTORY, HISTORY_OUT, MEMORY = "history_len", "history_len_out", "memory_len"
WINDOW = "window_len"  # encoder frames of the current window (chunk + left context)


@dataclass(frozen=True)
class CrossDims:
    layers: int
    heads: int
    head_dim: int
    hidden: int
    vocab: int
    chunk_samples: int
    frames_per_chunk: int  # encoder frames of the chunk itself
    history_samples: int  # PCM the encoder carries (its left context)
    memory_frames: int  # cross-attention memory capacity: one full window
    cache_capacity: int  # self-attention slots
    max_positions: int  # learned decoder positions (Whisper: 448)


def cross_kv_names(layers: int, prefix: str, side: str) -> list[str]:
    return [f"{prefix}.{i}.{side}.{kv}" for i in range(layers) for kv in ("key", "value")]


def cross_encoder_io(d: CrossDims) -> tuple[list[TensorSpec], list[TensorSpec]]:
    inputs = [
        TensorSpec(protocol.AUDIO, "float32", (BATCH, d.chunk_samples)),
        TensorSpec(protocol.HISTORY, "float32", (BATCH, HISTORY)),
    ]
    new = (BATCH, d.heads, WINDOW, d.head_dim)  # the whole window: it is the memory
    outputs = [TensorSpec(protocol.HISTORY_OUT, "float32", (BATCH, HISTORY_OUT))]
    outputs += [
        TensorSpec(n, "float32", new) for n in cross_kv_names(d.layers, "present", "encoder")
    ]
    return inputs, outputs


def cross_encoder_state(d: CrossDims) -> list[StateSpec]:
    return [StateSpec(protocol.HISTORY, protocol.HISTORY_OUT, "float32", (BATCH, HISTORY))]


def cross_decoder_io(d: CrossDims) -> tuple[list[TensorSpec], list[TensorSpec]]:
    past = (BATCH, d.heads, CACHE, d.head_dim)
    memory = (BATCH, d.heads, MEMORY, d.head_dim)
    inputs = [
        TensorSpec(protocol.INPUT_IDS, "int64", (BATCH, QUERY)),
        TensorSpec(protocol.POSITION_IDS, "int64", (BATCH, QUERY)),
        TensorSpec(protocol.ATTENTION_MASK, "float32", (BATCH, 1, QUERY, KEYS)),
        TensorSpec(protocol.ENCODER_ATTENTION_MASK, "float32", (BATCH, 1, QUERY, MEMORY)),
    ]
    inputs += [
        TensorSpec(n, "float32", past)
        for n in cross_kv_names(d.layers, "past_key_values", "decoder")
    ]
    inputs += [
        TensorSpec(n, "float32", memory)
        for n in cross_kv_names(d.layers, "past_key_values", "encoder")
    ]
    outputs = [TensorSpec(protocol.LOGITS, "float32", (BATCH, QUERY, d.vocab))]
    new = (BATCH, d.heads, QUERY, d.head_dim)
    outputs += [
        TensorSpec(n, "float32", new) for n in cross_kv_names(d.layers, "present", "decoder")
    ]
    return inputs, outputs


def cross_decoder_manifest(d: CrossDims, file: str = "decoder.onnx") -> dict:
    inputs, outputs = cross_decoder_io(d)
    return {
        "kind": CROSS_KIND,
        "file": file,
        "inputs": [s.to_json() for s in inputs],
        "outputs": [s.to_json() for s in outputs],
        "num_layers": d.layers,
        "num_heads": d.heads,
        "num_kv_heads": d.heads,
        "head_dim": d.head_dim,
        "hidden_size": d.hidden,
        "vocab_size": d.vocab,
        "cache_capacity": d.cache_capacity,
        "memory_frames": d.memory_frames,
        "max_positions": d.max_positions,
        "cache_layout": "fixed-absolute-new-only",
        "mask_value": MASK_VALUE,
    }
