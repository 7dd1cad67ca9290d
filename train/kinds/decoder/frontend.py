"""Log-mel frontend as a fixed convolution, so it exports to any ONNX backend.

Streaming: each call takes one chunk plus the previous N_FFT - HOP samples as state;
frames are causal (frame k ends at sample (k + 1) * HOP), so chunked equals full.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from soundflow import audio


def mel_filterbank(
    n_mels: int = audio.N_MELS,
    n_fft: int = audio.N_FFT,
    sample_rate: int = audio.SAMPLE_RATE,
    f_min: float = audio.F_MIN,
    f_max: float = audio.F_MAX,
) -> np.ndarray:
    """Slaney-style triangular mel filters, (n_mels, n_fft // 2 + 1)."""

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:, None] - edges[1:-1, None])
    fb = np.maximum(0.0, np.minimum(lower, upper))
    fb *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal area per filter
    return fb.astype(np.float32)


class LogMel(nn.Module):
    """(B, S) PCM + (B, N_FFT - HOP) overlap -> (B, n_mels, S // HOP) log-mel, new overlap."""

    def __init__(self, n_mels: int = audio.N_MELS):
        super().__init__()
        n_fft, n_freq = audio.N_FFT, audio.N_FFT // 2 + 1
        t = torch.arange(n_fft, dtype=torch.float64)
        window = 0.5 - 0.5 * torch.cos(2 * math.pi * t / n_fft)  # periodic Hann
        k = torch.arange(n_freq, dtype=torch.float64)[:, None]
        phase = 2 * math.pi * k * t[None, :] / n_fft
        basis = torch.cat([torch.cos(phase), -torch.sin(phase)]) * window  # (2F, n_fft)
        self.register_buffer("dft", basis[:, None, :].float(), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_filterbank(n_mels)), persistent=False)
        self.n_freq = n_freq

    def forward(self, pcm: torch.Tensor, overlap: torch.Tensor):
        x = torch.cat([overlap, pcm], dim=1)  # (B, OVERLAP + S)
        spec = nn.functional.conv1d(x[:, None, :], self.dft, stride=audio.HOP_LENGTH)
        power = spec[:, : self.n_freq] ** 2 + spec[:, self.n_freq :] ** 2  # (B, F, T)
        mel = torch.matmul(self.mel, power)  # (B, n_mels, T)
        logmel = torch.log(mel + 1e-6)
        return logmel, x[:, -audio.FRONTEND_OVERLAP :]

    def initial_overlap(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, audio.FRONTEND_OVERLAP)
