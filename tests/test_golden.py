"""The golden smoke checkpoint under tests/data is what tests/data/make_golden.py writes:
a loadable smoke checkpoint that has learned the protocol (it is not random weights), small
enough to commit, loaded by conftest instead of retraining every session."""

from __future__ import annotations

import json

import pytest
from conftest import GOLDEN


def test_golden_checkpoint_is_the_committed_smoke_recipe():
    files = sorted(p.name for p in GOLDEN.iterdir())
    assert files == ["config.json", "model.safetensors", "tokenizer.json"]
    assert sum((GOLDEN / f).stat().st_size for f in files) < 2_000_000
    training = json.loads((GOLDEN / "config.json").read_text())["training"]
    assert training["recipe"] == "smoke" and training["step"] > 0, training


def test_golden_checkpoint_loads_and_was_trained(smoke_checkpoint):
    pytest.importorskip("torch")
    from soundflow.train.checkpoint import load_checkpoint
    from soundflow.train.kinds.decoder.recipes import get_recipe

    model, tok, cfg = load_checkpoint(smoke_checkpoint)
    recipe = get_recipe("smoke")
    # the recipe's dimensions (the vocabulary is the trained tokenizer's): regenerate the
    # golden checkpoint after changing them
    want = {**recipe.model.decoder, "vocab_size": tok.get_vocab_size()}
    assert cfg.decoder == want and cfg.encoder == recipe.model.encoder
    training = json.loads((smoke_checkpoint / "config.json").read_text())["training"]
    assert training["step"] == recipe.total_steps


def test_golden_checkpoint_outputs_equal_the_stored_tensors(smoke_checkpoint):
    """The model code's forward pass, pinned (moshi's test_lm): the golden checkpoint's
    embeddings and logits on a fixed input equal tests/data/smoke_outputs.npz."""
    pytest.importorskip("torch")
    import importlib.util

    import numpy as np

    path = GOLDEN.parent / "make_smoke_outputs.py"
    spec = importlib.util.spec_from_file_location("make_smoke_outputs", path)
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    want = np.load(maker.OUT)
    got = maker.compute(smoke_checkpoint)
    assert set(got) == set(want.files)
    for name in want.files:
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-4, err_msg=name)
