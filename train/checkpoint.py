"""Checkpoints: `config.json` + `model.safetensors` + `tokenizer.json` (never pickle).

Training state for --resume (optimizer, step, RNG) is saved apart, in `trainer_state/`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import load_file, save_file

from soundflow.train.config import ModelConfig
from soundflow.train.kinds.decoder.model import SoundFlowModel
from soundflow.train.tokenizer import load_tokenizer


class CheckpointError(ValueError):
    pass


def save_checkpoint(
    model: SoundFlowModel,
    tokenizer,
    out: Path | str,
    extra: dict | None = None,
    state_dict: dict | None = None,
) -> Path:
    """Write atomically: a crash mid-save leaves the previous checkpoint intact.
    `state_dict`: the full weights when the model's own are sharded (FSDP)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg.to_dict()
    if extra:
        cfg["training"] = extra
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    state = state_dict if state_dict is not None else model.state_dict()
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    # Tied embeddings share storage; safetensors refuses shared tensors, so keep one.
    if model.decoder.config.tie_word_embeddings:
        state.pop("decoder.lm_head.weight", None)
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save(str(tmp / "tokenizer.json"))
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        os.replace(tmp / name, out / name)
    tmp.rmdir()
    return out


def load_config(ckpt: Path | str) -> ModelConfig:
    path = Path(ckpt) / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{path} not found: {ckpt} is not a soundflow checkpoint "
            "(expected config.json, model.safetensors, tokenizer.json)"
        )
    raw = json.loads(path.read_text())
    raw.pop("training", None)
    try:
        return ModelConfig.from_dict(raw, source=str(path))
    except (TypeError, ValueError) as e:
        raise CheckpointError(str(e)) from None


def load_checkpoint(ckpt: Path | str):
    """-> (model in eval mode, tokenizer, config)."""
    ckpt = Path(ckpt)
    cfg = load_config(ckpt)
    for name in ("model.safetensors", "tokenizer.json"):
        if not (ckpt / name).is_file():
            raise CheckpointError(f"{ckpt / name} not found; the checkpoint is incomplete")
    model = SoundFlowModel(cfg)
    state = load_file(str(ckpt / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "decoder.lm_head.weight"]
    if missing or unexpected:
        raise CheckpointError(
            f"{ckpt / 'model.safetensors'} does not match config.json: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    if model.decoder.config.tie_word_embeddings:
        model.decoder.tie_weights()
    return model.eval(), load_tokenizer(ckpt / "tokenizer.json"), cfg
