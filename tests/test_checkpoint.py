"""Checkpoints round-trip exactly and refuse mismatched configs with the field's name."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from soundflow.train.checkpoint import CheckpointError, load_checkpoint, load_config  # noqa: E402


def test_round_trip_reproduces_outputs(smoke_checkpoint, tmp_path):
    from soundflow.train.checkpoint import save_checkpoint

    model, tok, cfg = load_checkpoint(smoke_checkpoint)
    save_checkpoint(model, tok, tmp_path / "copy")
    again, tok2, cfg2 = load_checkpoint(tmp_path / "copy")
    assert cfg2 == cfg
    assert tok2.get_vocab() == tok.get_vocab()
    pcm = torch.randn(1, 3 * cfg.chunk_samples) * 0.1
    with torch.no_grad():
        a, _ = model.audio_embeds(pcm)
        b, _ = again.audio_embeds(pcm)
        ids = torch.arange(10)[None]
        la, lb = model.decoder(input_ids=ids).logits, again.decoder(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(la, lb, rtol=0, atol=0)
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.bin"))  # no pickle


def _copy_with_config(src, dst, edit):
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((dst / "config.json").read_text())
    edit(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_unknown_field_is_named(smoke_checkpoint, tmp_path):
    bad = _copy_with_config(
        smoke_checkpoint, tmp_path / "bad", lambda c: c["encoder"].update(n_expert=3)
    )
    with pytest.raises(CheckpointError, match="n_expert"):
        load_config(bad)


def test_wrong_version_and_missing_files(smoke_checkpoint, tmp_path):
    bad = _copy_with_config(smoke_checkpoint, tmp_path / "v9", lambda c: c.update(version=9))
    with pytest.raises(CheckpointError, match="version 9"):
        load_config(bad)
    with pytest.raises(CheckpointError, match="config.json not found"):
        load_checkpoint(tmp_path)
    partial = _copy_with_config(smoke_checkpoint, tmp_path / "partial", lambda c: None)
    (partial / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(partial)


def test_mismatched_weights_are_refused(smoke_checkpoint, tmp_path):
    bad = _copy_with_config(
        smoke_checkpoint,
        tmp_path / "wide",
        lambda c: c["encoder"].update(n_layers=c["encoder"]["n_layers"] + 1),
    )
    with pytest.raises(CheckpointError, match="does not match config.json"):
        load_checkpoint(bad)
