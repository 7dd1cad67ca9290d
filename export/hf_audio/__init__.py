"""Pretrained audio LLMs (Qwen2-Audio, Qwen2.5-Omni thinker) -> soundflow streaming bundles.

`detect(dir)` names the architecture of an HF checkpoint directory (or None);
`export_hf_bundle(dir, out)` writes the bundle (ARCHITECTURE.md, Contract 3b).
"""

from __future__ import annotations

from soundflow.train.kinds.decoder.hf_audio.source import detect


def export_hf_bundle(checkpoint_dir, out, **kwargs) -> dict:
    """Write a streaming bundle for an HF audio-LLM checkpoint; returns the manifest."""
    from soundflow.export.hf_audio.bundle import export_hf_bundle as _export

    return _export(checkpoint_dir, out, **kwargs)


__all__ = ["detect", "export_hf_bundle"]
