"""Whisper's log-mel (what Qwen2-Audio's and Qwen2.5-Omni's feature extractor computes), as a
traceable torch module over one chunk with its PCM overlap and running peak as explicit state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from soundflow.audio import SAMPLE_RATE

FLOOR_DB = 8.0  # whisper clamps log10-mel at (max - 8)
SILENCE_LOG10 = -10.0  # log10 of the 1e-10 power floor: the peak state's zero point


@dataclass(frozen=True)
class MelConfig:
    """The checkpoint's feature extractor settings (preprocessor_config.json)."""

    n_mels: int = 128  # mel bands (Qwen2-Audio and Qwen2.5-Omni: 128)
    n_fft: int = 400  # samples per analysis window (25 ms)
    hop: int = 160  # samples between frames (10 ms)
    sample_rate: int = SAMPLE_RATE  # Hz

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: Path | str | None, n_mels: int) -> MelConfig:
        path = Path(checkpoint_dir) / "preprocessor_config.json" if checkpoint_dir else None
        raw = json.loads(path.read_text()) if path and path.is_file() else {}
        return cls(
            n_mels=int(raw.get("feature_size", n_mels)),
            n_fft=int(raw.get("n_fft", 400)),
            hop=int(raw.get("hop_length", 160)),
            sample_rate=int(raw.get("sampling_rate", SAMPLE_RATE)),
        )

    @property
    def overlap(self) -> int:
        """PCM carried between chunks: one hop of delay plus half a window of left context."""
        return self.hop + self.n_fft // 2

    def mel_filters(self) -> np.ndarray:
        """(n_fft // 2 + 1, n_mels): the very filters WhisperFeatureExtractor uses (slaney)."""
        from transformers.audio_utils import mel_filter_bank

        return mel_filter_bank(
            num_frequency_bins=1 + self.n_fft // 2,
            num_mel_filters=self.n_mels,
            min_frequency=0.0,
            max_frequency=self.sample_rate / 2,
            sampling_rate=self.sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )


class StreamingLogMel(nn.Module):
    """(B, S) PCM + state -> (B, n_mels, S // hop) normalised log-mel, whisper's frames shifted
    one hop late: chunk c yields frames F*c - 1 .. F*c + F - 2, because frame j is centred on
    sample j * hop and the last frame of a chunk needs audio that has not arrived yet.

    State: `pcm` (B, overlap) the previous samples; `peak` (B,) the running log10-mel peak
    plus 10 (so zeros start a stream). Whisper clamps at the peak of the whole 30 s window;
    streaming can only clamp at the peak so far, which equals it from the loudest frame on.
    """

    def __init__(self, cfg: MelConfig, chunk_samples: int):
        super().__init__()
        if chunk_samples % cfg.hop or cfg.n_fft // 2 > 2 * cfg.hop:
            raise ValueError(f"chunk of {chunk_samples} samples is not whole {cfg.hop}-sample hops")
        self.cfg, self.frames = cfg, chunk_samples // cfg.hop
        n = torch.arange(cfg.n_fft, dtype=torch.float64)
        window = 0.5 - 0.5 * torch.cos(2 * torch.pi * n / cfg.n_fft)  # periodic hann
        k = torch.arange(cfg.n_fft // 2 + 1, dtype=torch.float64)
        phase = 2 * torch.pi * n[:, None] * k[None] / cfg.n_fft
        # The DFT as two matmuls: exports to plain MatMul (no STFT op for TensorRT to lack).
        self.register_buffer("dft_re", (window[:, None] * torch.cos(phase)).float())
        self.register_buffer("dft_im", (window[:, None] * -torch.sin(phase)).float())
        self.register_buffer("mel", torch.from_numpy(cfg.mel_filters()).float())

    def forward(self, audio, pcm, peak, first):
        """audio (B, S); pcm (B, P); peak (B,); first (B,) bool: the stream's first chunk."""
        c = self.cfg
        half = c.n_fft // 2
        # Whisper reflect-pads the start of its window: samples -half..-1 mirror 1..half.
        reflect = torch.flip(audio[:, 1 : half + 1], dims=[1])
        start = torch.cat([torch.zeros_like(pcm[:, : c.hop]), reflect], dim=1)
        pcm = torch.where(first[:, None], start, pcm)
        x = torch.cat([pcm, audio], dim=1)  # (B, P + S)
        idx = torch.arange(self.frames)[:, None] * c.hop + torch.arange(c.n_fft)[None]
        frames = x[:, idx]  # (B, F, n_fft)
        power = (frames @ self.dft_re) ** 2 + (frames @ self.dft_im) ** 2  # (B, F, n_fft/2+1)
        log_mel = torch.clamp(power @ self.mel, min=1e-10).log10()  # (B, F, n_mels)
        peak = torch.maximum(peak, log_mel.amax(dim=(1, 2)) - SILENCE_LOG10)
        floor = (peak + SILENCE_LOG10 - FLOOR_DB)[:, None, None]
        feats = (torch.maximum(log_mel, floor) + 4.0) / 4.0
        return feats.transpose(1, 2), x[:, -c.overlap :], peak
