"""Whisper's encoder streamed one chunk at a time: each chunk is re-encoded with a bounded window
of left context (the PCM history is the explicit state) and the chunk's own frames are kept.

Per chunk of S samples: window = history (W - S samples) + chunk -> Whisper's log-mel of the
window (reflect-padded at its start, clamped at the window's peak - 8) -> conv1 -> conv2
(stride 2) -> + the first W/320 learned positions -> bidirectional layers -> LayerNorm -> the
last S/320 frames. The window sees no future audio, so a chunk's frames never change after
they are emitted; `encode_offline` computes the same frames from a whole array (the reference
the chunked-equals-full tests use). Training, export and the benchmarks all call this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from soundflow import audio

FLOOR_DB = 8.0  # whisper clamps log10-mel at (window peak - 8)
HOP = audio.HOP_LENGTH
N_FFT = audio.N_FFT
FRAME_SAMPLES = 2 * HOP  # one encoder frame: conv2 has stride 2 over 10 ms mel frames


@dataclass(frozen=True)
class WindowConfig:
    """How the encoder is streamed: chunk length and left context, fixed at export."""

    chunk_ms: int = audio.CHUNK_MS
    left_context_ms: int = 4000  # measured: 4 s keeps Whisper's decoder readable (2 s loops)

    def __post_init__(self) -> None:
        if self.chunk_ms <= 0 or self.left_context_ms <= 0:
            raise ValueError("chunk length and left context must be positive")
        for name, ms in (("chunk", self.chunk_ms), ("left context", self.left_context_ms)):
            if (ms * audio.SAMPLE_RATE // 1000) % FRAME_SAMPLES:
                raise ValueError(f"{name} of {ms} ms is not a whole number of 20 ms frames")

    @property
    def chunk_samples(self) -> int:
        return audio.chunk_samples(self.chunk_ms)

    @property
    def window_samples(self) -> int:
        return (self.chunk_ms + self.left_context_ms) * audio.SAMPLE_RATE // 1000

    @property
    def history_samples(self) -> int:
        return self.window_samples - self.chunk_samples

    @property
    def frames_per_chunk(self) -> int:
        return self.chunk_samples // FRAME_SAMPLES

    @property
    def window_frames(self) -> int:
        return self.window_samples // FRAME_SAMPLES

    def to_dict(self) -> dict:
        return asdict(self)


def whisper_mel_filters(n_mels: int) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels): the filters WhisperFeatureExtractor uses (slaney)."""
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=audio.SAMPLE_RATE / 2,
        sampling_rate=audio.SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    ).astype(np.float32)


class WindowLogMel(nn.Module):
    """(B, W) PCM -> (B, n_mels, W / hop) Whisper log-mel of the window, any W. The DFT is a
    strided convolution (no STFT op, so every ONNX backend and TensorRT runs it)."""

    def __init__(self, n_mels: int):
        super().__init__()
        n = torch.arange(N_FFT, dtype=torch.float64)
        hann = 0.5 - 0.5 * torch.cos(2 * torch.pi * n / N_FFT)  # periodic, as torch.stft
        k = torch.arange(N_FFT // 2 + 1, dtype=torch.float64)[:, None]
        phase = 2 * torch.pi * k * n[None] / N_FFT
        basis = torch.cat([torch.cos(phase), -torch.sin(phase)]) * hann  # (2F, n_fft)
        self.register_buffer("dft", basis[:, None, :].float(), False)
        self.register_buffer("mel", torch.from_numpy(whisper_mel_filters(n_mels).T.copy()), False)
        self.n_freq = N_FFT // 2 + 1

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        half = N_FFT // 2
        # center=True with reflect padding, as torch.stft in WhisperFeatureExtractor.
        left = torch.flip(pcm[:, 1 : half + 1], dims=[1])
        right = torch.flip(pcm[:, -half - 1 : -1], dims=[1])
        x = torch.cat([left, pcm, right], dim=1)[:, None, :]
        spec = nn.functional.conv1d(x, self.dft, stride=HOP)[:, :, :-1]  # drop the extra frame
        power = spec[:, : self.n_freq] ** 2 + spec[:, self.n_freq :] ** 2  # (B, F, T)
        log_mel = torch.clamp(torch.matmul(self.mel, power), min=1e-10).log10()
        peak = log_mel.amax(dim=(1, 2), keepdim=True)
        return (torch.maximum(log_mel, peak - FLOOR_DB) + 4.0) / 4.0


class _Layer(nn.Module):
    """One pre-LN Whisper encoder layer, written out so it traces to plain ONNX ops."""

    def __init__(self, hf_layer, heads: int):
        super().__init__()
        self.ln1, self.ln2 = hf_layer.self_attn_layer_norm, hf_layer.final_layer_norm
        a = hf_layer.self_attn
        self.q, self.k, self.v, self.o = a.q_proj, a.k_proj, a.v_proj, a.out_proj
        self.fc1, self.fc2 = hf_layer.fc1, hf_layer.fc2
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.ln1(x)

        def split(z):
            return z.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        att = nn.functional.scaled_dot_product_attention(
            split(self.q(h)), split(self.k(h)), split(self.v(h))
        )
        x = x + self.o(att.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))


class WhisperWindowEncoder(nn.Module):
    """Whisper's encoder weights driven over a sliding window; state = PCM history."""

    def __init__(self, hf_encoder, cfg: WindowConfig):
        super().__init__()
        self.cfg = cfg
        c = hf_encoder.config
        if cfg.window_frames > c.max_source_positions:
            raise ValueError(
                f"a {cfg.window_samples / audio.SAMPLE_RATE:.1f} s window exceeds Whisper's "
                f"{c.max_source_positions * FRAME_SAMPLES / audio.SAMPLE_RATE:.0f} s of positions"
            )
        self.logmel = WindowLogMel(c.num_mel_bins)
        self.conv1, self.conv2 = hf_encoder.conv1, hf_encoder.conv2
        self.positions = nn.Parameter(
            hf_encoder.embed_positions.weight[: cfg.window_frames].detach().clone(),
            requires_grad=False,
        )
        self.layers = nn.ModuleList(_Layer(x, c.encoder_attention_heads) for x in hf_encoder.layers)
        self.norm = hf_encoder.layer_norm
        self.d_model = c.d_model

    def initial_state(self, batch: int = 1) -> torch.Tensor:
        """No history yet: the first windows are shorter, so their frames take positions
        from 0 as in Whisper's own 30 s window (zero-padding instead costs cosine 0.86 -> 0.6
        to the full-context frames and makes the decoder loop)."""
        return torch.zeros(batch, 0)

    def encode_window(self, window: torch.Tensor) -> torch.Tensor:
        """(B, T) PCM, T <= window_samples -> (B, T / 320, d): the window's frames."""
        mel = self.logmel(window)
        x = nn.functional.gelu(self.conv1(mel))
        x = nn.functional.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positions[: x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def forward(self, chunk: torch.Tensor, history: torch.Tensor):
        """chunk (B, S), history (B, <= W - S) -> the window's frames (B, T, d) (T = 220 for
        4.4 s, fewer until the stream is that long), next history (the newest W - S samples).
        The decoder's memory is this window: consistent frames, positions 0..T-1, as in
        Whisper's own input (frames spliced from successive windows read far worse)."""
        window = torch.cat([history, chunk], dim=1)
        return self.encode_window(window), window[:, -self.cfg.history_samples :]

    @torch.no_grad()
    def encode_offline(self, pcm: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """A whole (N,) array -> (windows (chunks, window_frames, d), lengths (chunks,)):
        chunk c's window frames, zero-padded after `lengths[c]`, identical to feeding it
        chunk by chunk from an empty history (the tail is zero-padded to a whole chunk).
        Full windows are batched; the first, shorter ones run alone."""
        s, w = self.cfg.chunk_samples, self.cfg.window_samples
        n = -(-len(pcm) // s)
        padded = np.zeros(n * s, np.float32)
        padded[: len(pcm)] = pcm
        full = self.cfg.window_frames
        out = np.zeros((n, full, self.d_model), np.float32)
        lengths = np.zeros(n, np.int64)
        short = min(n, -(-w // s) - 1)  # chunks whose window is not yet full
        for c in range(short):
            f = self.encode_window(torch.from_numpy(padded[None, : (c + 1) * s]))[0].numpy()
            out[c, : len(f)], lengths[c] = f, len(f)
        for i in range(short, n, batch):
            ends = list(range(i + 1, min(n, i + batch) + 1))
            wins = np.stack([padded[e * s - w : e * s] for e in ends])
            out[i : i + len(ends)] = self.encode_window(torch.from_numpy(wins)).numpy()
            lengths[i : i + len(ends)] = full
        return out, lengths

    @torch.no_grad()
    def chunk_frames(self, pcm: np.ndarray) -> np.ndarray:
        """Each chunk's own newest frames, concatenated (the frames a chunk adds)."""
        windows, lengths = self.encode_offline(pcm)
        g = self.cfg.frames_per_chunk
        return np.concatenate([windows[c, n - g : n] for c, n in enumerate(lengths)])
