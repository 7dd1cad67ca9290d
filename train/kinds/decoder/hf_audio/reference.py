"""The checkpoint's own, non-streaming path for the same audio: the feature extractor over the
whole clip and the transformers audio tower (+ projector), to measure the streaming encoder.
"""

from __future__ import annotations

import numpy as np
import torch

from soundflow.train.kinds.decoder.hf_audio.frontend import MelConfig
from soundflow.train.kinds.decoder.hf_audio.source import QWEN2_5_OMNI, AudioLLM


def features(pcm: np.ndarray, mel: MelConfig, seconds: float = 30.0):
    """WhisperFeatureExtractor as the Qwen processors call it: (1, M, frames), (1, frames) mask."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(
        feature_size=mel.n_mels,
        sampling_rate=mel.sample_rate,
        hop_length=mel.hop,
        n_fft=mel.n_fft,
        chunk_length=int(seconds),
    )
    out = fe(
        pcm.astype(np.float32),
        sampling_rate=mel.sample_rate,
        return_attention_mask=True,
        padding="max_length",
        return_tensors="pt",
    )
    return out["input_features"], out["attention_mask"]


@torch.no_grad()
def audio_embeds(llm: AudioLLM, pcm: np.ndarray, mel: MelConfig) -> np.ndarray:
    """(n_embeds, hidden): what the model puts in place of its <|AUDIO|> tokens for `pcm`."""
    feats, mask = features(pcm, mel)
    if llm.architecture == QWEN2_5_OMNI:
        out = llm.model.get_audio_features(feats, feature_attention_mask=mask)
        return out.last_hidden_state.float().numpy()
    tower = llm.audio_tower
    conv_len, out_len = tower._get_feat_extract_output_lengths(mask.sum(-1))
    frames = (feats.shape[-1] - 2) // 2 + 1
    keep = (torch.arange(frames)[None] < conv_len[:, None]).float()
    bias = (1.0 - keep[:, None, None, :]) * torch.finfo(torch.float32).min  # padding keys
    hidden = tower(feats, attention_mask=bias).last_hidden_state
    return llm.projector(hidden)[0, : int(out_len[0])].float().numpy()
