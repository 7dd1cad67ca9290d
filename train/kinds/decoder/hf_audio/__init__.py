"""Pretrained audio LLMs (Qwen2-Audio, Qwen2.5-Omni) in torch: reading a checkpoint
(`source`), its Whisper-style tower re-driven one chunk at a time (`encoder`, `frontend`),
the full-window reference (`reference`), the chat prompt (`prompt`) and tiny random
checkpoints for tests (`tiny`). Exporting them is `soundflow.export.hf_audio`."""

from soundflow.train.kinds.decoder.hf_audio.source import detect

__all__ = ["detect"]
