"""Model dimensions: frozen dataclasses saved inside every checkpoint as config.json.

Run-time options (threads, thresholds, provider) live elsewhere; only what fixes the
weights' shapes and the stream protocol belongs here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from soundflow import audio

CHECKPOINT_FORMAT = "soundflow-checkpoint"
CHECKPOINT_VERSION = 1
CTC_ALPHABET = " abcdefghijklmnopqrstuvwxyz'0123456789"  # index 0 is the CTC blank


@dataclass(frozen=True)
class EncoderConfig:
    n_mels: int = audio.N_MELS  # log-mel bands of the in-graph frontend
    d_model: int = 192  # transformer width
    n_layers: int = 4  # transformer blocks
    n_heads: int = 4  # attention heads (d_model % n_heads == 0)
    ff_mult: int = 4  # feed-forward width = ff_mult * d_model
    subsample: int = 4  # mel frames per encoder frame (10 ms -> 40 ms)
    conv_kernel: int = 3  # causal conv over mel frames before subsampling
    left_context: int = 50  # encoder frames of carried attention context (2 s at 40 ms)
    rope_theta: float = 10_000.0


@dataclass(frozen=True)
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    chunk_ms: int = audio.CHUNK_MS  # decision interval; the encoder graph is built for it
    adapter_stack: int = 2  # encoder frames stacked into one decoder embedding
    # A `transformers` config dict of the Llama/Qwen2 family (model_type, hidden_size, ...);
    # vocab_size is filled from the tokenizer.
    decoder: dict[str, Any] = field(default_factory=dict)
    ctc_alphabet: str = CTC_ALPHABET

    def __post_init__(self) -> None:
        enc = self.encoder
        frames = audio.chunk_samples(self.chunk_ms) // audio.HOP_LENGTH
        if frames % enc.subsample:
            raise ValueError(
                f"chunk_ms={self.chunk_ms} gives {frames} mel frames, not a multiple of "
                f"encoder.subsample={enc.subsample}"
            )
        if (frames // enc.subsample) % self.adapter_stack:
            raise ValueError(
                f"chunk_ms={self.chunk_ms} gives {frames // enc.subsample} encoder frames, "
                f"not a multiple of adapter_stack={self.adapter_stack}"
            )
        if enc.d_model % enc.n_heads or (enc.d_model // enc.n_heads) % 2:
            raise ValueError("encoder.d_model / encoder.n_heads must be an even integer")

    @property
    def chunk_samples(self) -> int:
        return audio.chunk_samples(self.chunk_ms)

    @property
    def mel_frames_per_chunk(self) -> int:
        return self.chunk_samples // audio.HOP_LENGTH

    @property
    def encoder_frames_per_chunk(self) -> int:
        return self.mel_frames_per_chunk // self.encoder.subsample

    @property
    def embeds_per_chunk(self) -> int:
        return self.encoder_frames_per_chunk // self.adapter_stack

    @property
    def hidden_size(self) -> int:
        return int(self.decoder["hidden_size"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            **dataclasses.asdict(self),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config.json") -> ModelConfig:
        """Rebuild from a checkpoint's config.json, naming any unknown or missing field."""
        d = dict(d)
        fmt, version = d.pop("format", None), d.pop("version", None)
        if fmt != CHECKPOINT_FORMAT:
            raise ValueError(f"{source}: format is {fmt!r}, expected {CHECKPOINT_FORMAT!r}")
        if version != CHECKPOINT_VERSION:
            raise ValueError(
                f"{source}: checkpoint version {version}, this soundflow reads {CHECKPOINT_VERSION}"
            )
        _check_fields(cls, d, source)
        enc = dict(d.get("encoder", {}))
        _check_fields(EncoderConfig, enc, f"{source}: encoder")
        return cls(**{**d, "encoder": EncoderConfig(**enc)})


def _check_fields(cls: type, d: dict[str, Any], where: str) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(
            f"{where}: unknown field(s) {unknown}; this checkpoint was written by another "
            f"soundflow version or edited by hand (known fields: {sorted(names)})"
        )
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(d))
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")


def tiny_decoder(
    vocab_size: int = 0,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    model_type: str = "qwen2",
) -> dict[str, Any]:
    """A small Llama/Qwen2-family decoder config dict (sizes are the caller's)."""
    return {
        "model_type": model_type,
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": hidden * 4,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 4096,
        "rope_theta": 10_000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    }
