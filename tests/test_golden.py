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
    from soundflow.train.recipes import get_recipe

    model, tok, cfg = load_checkpoint(smoke_checkpoint)
    recipe = get_recipe("smoke")
    # the recipe's dimensions (the vocabulary is the trained tokenizer's): regenerate the
    # golden checkpoint after changing them
    want = {**recipe.model.decoder, "vocab_size": tok.get_vocab_size()}
    assert cfg.decoder == want and cfg.encoder == recipe.model.encoder
    training = json.loads((smoke_checkpoint / "config.json").read_text())["training"]
    assert training["step"] == recipe.total_steps
