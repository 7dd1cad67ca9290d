"""Recognise and load a local Qwen2-Audio or Qwen2.5-Omni checkpoint (as `save_pretrained`
writes it) and split it into the three parts a bundle needs: audio tower, projector, text LM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

QWEN2_AUDIO = "qwen2_audio"
QWEN2_5_OMNI = "qwen2_5_omni"
# config.json model_type -> the architecture soundflow exports. A full Omni checkpoint
# (thinker + talker + token2wav) is read for its thinker only: the talker speaks, we write text.
MODEL_TYPES = {
    "qwen2_audio": QWEN2_AUDIO,
    "qwen2_5_omni_thinker": QWEN2_5_OMNI,
    "qwen2_5_omni": QWEN2_5_OMNI,
}


class HFCheckpointError(ValueError):
    """A directory that looks like an HF audio LLM but cannot be exported; says why."""


def detect(checkpoint_dir: Path | str) -> str | None:
    """The architecture of an HF audio-LLM checkpoint directory, or None if it is not one."""
    path = Path(checkpoint_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return MODEL_TYPES.get(cfg.get("model_type")) if isinstance(cfg, dict) else None


class TextLM(nn.Module):
    """The `.config/.model/.lm_head` face `export.graphs.CachedDecoder` drives, over the text
    half of a multimodal checkpoint (its weights shared, not copied)."""

    def __init__(self, config, body: nn.Module, lm_head: nn.Module):
        super().__init__()
        self.config, self.model, self.lm_head = config, body, lm_head

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens


@dataclass(frozen=True)
class AudioLLM:
    """One loaded checkpoint, in eval mode, fp32."""

    architecture: str  # QWEN2_AUDIO | QWEN2_5_OMNI
    model: nn.Module  # the transformers model (Omni: the thinker)
    audio_tower: nn.Module
    projector: nn.Module | None  # Qwen2-Audio's linear; Omni's projection lives in the tower
    text: TextLM
    audio_config: object
    text_config: object
    config: object  # the top-level (thinker) config

    @property
    def window_frames(self) -> int:
        """Encoder frames (50 Hz, after the stride-2 conv) that attend to each other in the
        reference: Qwen2-Audio one 30 s window (1500), Qwen2.5-Omni `n_window` (2 s, 100)."""
        if self.architecture == QWEN2_5_OMNI:
            return int(self.audio_config.n_window)
        return int(self.audio_config.max_source_positions)


def load(checkpoint_dir: Path | str, dtype=None) -> AudioLLM:
    """Build the transformers model from config.json and load its safetensors (fp32, eager)."""
    import torch

    checkpoint_dir = Path(checkpoint_dir)
    arch = detect(checkpoint_dir)
    if arch is None:
        raise HFCheckpointError(
            f"{checkpoint_dir} is not a Qwen2-Audio or Qwen2.5-Omni checkpoint "
            f"(config.json model_type must be one of {sorted(MODEL_TYPES)})"
        )
    if not any(checkpoint_dir.glob("*.safetensors")):
        raise HFCheckpointError(
            f"{checkpoint_dir} has no *.safetensors weights; save the model with "
            "`model.save_pretrained(dir)` (safetensors is the default)"
        )
    dtype = dtype or torch.float32
    raw = json.loads((checkpoint_dir / "config.json").read_text())
    if arch == QWEN2_AUDIO:
        from transformers import Qwen2AudioForConditionalGeneration as cls

        model = cls.from_pretrained(checkpoint_dir, dtype=dtype, attn_implementation="eager")
    else:
        from transformers import Qwen2_5OmniThinkerConfig
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration as cls

        kwargs = {}
        if raw["model_type"] == "qwen2_5_omni":  # full Omni: thinker weights under `thinker.`
            kwargs["config"] = Qwen2_5OmniThinkerConfig(**raw["thinker_config"])
            kwargs["key_mapping"] = {r"^thinker\.": ""}
        model = cls.from_pretrained(
            checkpoint_dir, dtype=dtype, attn_implementation="eager", **kwargs
        )
    return split(model, arch)


def split(model: nn.Module, arch: str) -> AudioLLM:
    """Name the parts of an already-built transformers model (also used by tests and training)."""
    model = model.eval()
    cfg = model.config
    # Omni thinkers read this when they build mrope positions; standalone configs lack it.
    if arch == QWEN2_5_OMNI and getattr(cfg, "vision_start_token_id", None) is None:
        cfg.vision_start_token_id = getattr(cfg, "video_token_index", 0) + 1
    text_cfg = cfg.text_config
    inner = model.model
    text = TextLM(text_cfg, inner.language_model, model.lm_head)
    projector = getattr(inner, "multi_modal_projector", None)
    return AudioLLM(
        arch, model, inner.audio_tower, projector, text, cfg.audio_config, text_cfg, cfg
    )
