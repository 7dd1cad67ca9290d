"""Streaming audio encoder: log-mel -> causal conv subsampling -> transformer blocks that
see the current chunk plus a bounded left context, and the adapter into decoder space.

All carried state is one explicit `EncoderState`; `forward_chunk` takes and returns it,
`forward_stream` computes the same frames for a whole stream in one pass (training).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

from soundflow import audio, protocol
from soundflow.train.config import ModelConfig
from soundflow.train.kinds.decoder.frontend import LogMel

# Fixed log-mel normalisation (not per-utterance, which would need the future).
LOGMEL_MEAN, LOGMEL_STD = -6.0, 4.0
MASKED = protocol.MASK_VALUE  # the contract's additive mask value


@dataclass
class EncoderState:
    """Everything the encoder carries from one chunk to the next."""

    overlap: torch.Tensor  # (B, N_FFT - HOP) PCM samples
    conv: torch.Tensor  # (B, n_mels, conv_kernel - 1) normalised log-mel frames
    cache_key: torch.Tensor  # (L, B, left_context, d) unrotated keys
    cache_value: torch.Tensor  # (L, B, left_context, d)
    cache_len: torch.Tensor  # (B,) int64: valid frames at the end of the cache

    def as_tuple(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))


def rotate(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding, rotate-half convention. x (..., T, D), positions (T,) or (B, T)."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d))
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (..., T, D/2)
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1)
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1)
    if cos.dim() == 3:  # (B, T, D) -> broadcast over heads
        cos, sin = cos[:, None], sin[:, None]
    half = d // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ff_mult: int, theta: float):
        super().__init__()
        self.heads, self.theta = heads, theta
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Linear(ff_mult * d, d))

    def forward(self, x, past_k, past_v, mask):
        """x (B, T, d); past_k/v (B, C, d) unrotated; mask (B or 1, 1, T, C + T) additive.

        Returns the block output and this chunk's unrotated keys/values (B, T, d).
        """
        b, t, d = x.shape
        h = self.norm1(x)
        k_new, v_new = self.k(h), self.v(h)
        keys, values = torch.cat([past_k, k_new], 1), torch.cat([past_v, v_new], 1)
        n_keys = keys.shape[1]
        key_pos = torch.arange(n_keys, device=x.device)

        def split(z):  # (B, T, d) -> (B, H, T, d/H)
            return z.view(b, z.shape[1], self.heads, d // self.heads).transpose(1, 2)

        q = rotate(split(self.q(h)), key_pos[n_keys - t :], self.theta)
        k = rotate(split(keys), key_pos, self.theta)
        att = q @ k.transpose(-1, -2) * (d // self.heads) ** -0.5 + mask  # (B, H, T, C+T)
        y = (att.softmax(-1) @ split(values)).transpose(1, 2).reshape(b, t, d)
        x = x + self.o(y)
        x = x + self.ff(self.norm2(x))
        return x, k_new, v_new


class StreamingEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        e = cfg.encoder
        self.logmel = LogMel(e.n_mels)
        self.conv = nn.Conv1d(e.n_mels, e.d_model, e.conv_kernel)
        self.subsample = nn.Conv1d(e.d_model, e.d_model, e.subsample, stride=e.subsample)
        self.blocks = nn.ModuleList(
            Block(e.d_model, e.n_heads, e.ff_mult, e.rope_theta) for _ in range(e.n_layers)
        )
        self.norm = nn.LayerNorm(e.d_model)

    def initial_state(self, batch: int = 1) -> EncoderState:
        e = self.cfg.encoder
        return EncoderState(
            overlap=torch.zeros(batch, audio.FRONTEND_OVERLAP),
            conv=torch.zeros(batch, e.n_mels, e.conv_kernel - 1),
            cache_key=torch.zeros(e.n_layers, batch, e.left_context, e.d_model),
            cache_value=torch.zeros(e.n_layers, batch, e.left_context, e.d_model),
            cache_len=torch.zeros(batch, dtype=torch.int64),
        )

    def _features(self, pcm, overlap, conv_state):
        """PCM -> subsampled frames (B, T / subsample, d) and the new frontend states."""
        logmel, overlap = self.logmel(pcm, overlap)
        mel = torch.cat([conv_state, (logmel - LOGMEL_MEAN) / LOGMEL_STD], dim=2)
        x = F.gelu(self.subsample(F.gelu(self.conv(mel))))
        return x.transpose(1, 2), overlap, mel[:, :, mel.shape[2] - conv_state.shape[2] :]

    def forward_chunk(self, pcm: torch.Tensor, state: EncoderState):
        """One chunk (B, chunk_samples) -> frames (B, frames_per_chunk, d), new state."""
        x, overlap, conv = self._features(pcm, state.overlap, state.conv)
        b, t, _ = x.shape
        ctx = self.cfg.encoder.left_context
        slot = torch.arange(ctx, device=x.device)
        cache_ok = slot[None, :] >= (ctx - state.cache_len)[:, None]  # (B, C)
        ok = torch.cat([cache_ok, torch.ones(b, t, dtype=torch.bool, device=x.device)], 1)
        mask = torch.where(ok, 0.0, MASKED)[:, None, None, :]  # (B, 1, 1, C + T)
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, state.cache_key[i], state.cache_value[i], mask)
            keys.append(torch.cat([state.cache_key[i], k], 1)[:, t:])
            values.append(torch.cat([state.cache_value[i], v], 1)[:, t:])
        new_state = EncoderState(
            overlap=overlap,
            conv=conv,
            cache_key=torch.stack(keys),
            cache_value=torch.stack(values),
            cache_len=torch.clamp(state.cache_len + t, max=ctx),
        )
        return self.norm(x), new_state

    def stream_mask(self, n_frames: int, device=None) -> torch.Tensor:
        """(1, 1, T, T) additive mask: a frame sees its chunk and `left_context` before it."""
        per_chunk = self.cfg.encoder_frames_per_chunk
        i = torch.arange(n_frames, device=device)
        start = (i // per_chunk) * per_chunk  # first frame of each query's chunk
        ok = (i[None, :] < (start + per_chunk)[:, None]) & (
            i[None, :] >= (start - self.cfg.encoder.left_context)[:, None]
        )
        return torch.where(ok, 0.0, MASKED)[None, None]

    def forward_stream(self, pcm: torch.Tensor) -> torch.Tensor:
        """A whole stream (B, n_chunks * chunk_samples) in one pass; equals chunk by chunk."""
        b = pcm.shape[0]
        if pcm.shape[1] % self.cfg.chunk_samples:
            raise ValueError(f"stream length {pcm.shape[1]} is not a multiple of the chunk")
        st = self.initial_state(b)
        x, _, _ = self._features(pcm, st.overlap.to(pcm), st.conv.to(pcm))
        mask = self.stream_mask(x.shape[1], x.device)
        empty = x.new_zeros(b, 0, x.shape[2])
        for block in self.blocks:
            x, _, _ = block(x, empty, empty, mask)
        return self.norm(x)


class Adapter(nn.Module):
    """Encoder frames (B, T, d) -> decoder embeddings (B, T / stack, hidden)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.stack = cfg.adapter_stack
        d_in = cfg.encoder.d_model * cfg.adapter_stack
        self.proj = nn.Sequential(
            nn.Linear(d_in, cfg.hidden_size), nn.GELU(), nn.Linear(cfg.hidden_size, cfg.hidden_size)
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t, d = frames.shape
        return self.proj(frames.reshape(b, t // self.stack, d * self.stack))
