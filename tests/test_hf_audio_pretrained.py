"""`soundflow train` from a pretrained audio LLM (train/kinds/decoder/pretrained.py) on a tiny random
Qwen2.5-Omni thinker: weights loaded, tokens added, embeddings resized, the trainer's own
batches and losses run and learn, and the saved checkpoint exports to a native bundle that
the runtime runs end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from soundflow import protocol
from soundflow.export.hf_audio import export_hf_bundle
from soundflow.manifest import read_manifest
from soundflow.train.kinds.decoder.hf_audio import detect, source, tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    from soundflow.train.kinds.decoder.pretrained import load_pretrained

    root = tmp_path_factory.mktemp("pretrained")
    ckpt = tiny.tiny_checkpoint(tiny.QWEN2_5_OMNI, root / "hf")
    model, tok = load_pretrained(ckpt, tags=("<alert:beep>",))
    return root, ckpt, model, tok


def test_weights_tokens_and_embeddings(started):
    _, ckpt, model, tok = started
    base = source.load(ckpt)
    ids = {t: tok.token_to_id(t) for t in (*protocol.BASE_SPECIAL_TOKENS, "<alert:beep>")}
    assert all(i is not None for i in ids.values())
    old = base.text.get_input_embeddings().weight
    new = model.decoder.get_input_embeddings().weight
    assert new.shape[0] == tok.get_vocab_size() > old.shape[0]
    assert torch.equal(new[: old.shape[0]], old)  # existing rows kept
    assert torch.equal(model.encoder.conv1.weight, base.audio_tower.conv1.weight)
    assert torch.equal(model.encoder.layers[1].fc2.weight, base.audio_tower.layers[1].fc2.weight)
    assert model.cfg.embeds_per_chunk == 10


def test_trainer_batches_run_and_learn(started):
    """The trainer's Batcher/draw/combine_losses on this model: finite losses that fall."""
    from soundflow.train.dataset import ToySource, draw
    from soundflow.train.kinds.decoder.kind import Batcher, label_counts
    from soundflow.train.kinds.decoder.model import LossWeights, combine_losses

    _, _, model, tok = started
    src = ToySource(4, seed=0, seconds=4.0)
    segs = [draw(src, 0, i, protocol.TASKS, 6, model.cfg.chunk_ms, 1.0) for i in range(2)]
    batch = Batcher(tok, model.cfg)(segs, model)
    totals = label_counts([batch])
    assert totals["stream_n"] == 12
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        terms = combine_losses(model(*batch), totals, LossWeights())
        terms.loss.backward()
        opt.step()
        losses.append(terms.loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_saved_checkpoint_exports_native_and_runs(started, tmp_path):
    from soundflow.runtime.listener import Listener

    _, _, model, tok = started
    out = model.eval().save_checkpoint(tok, tmp_path / "finetuned", extra={"step": 4})
    assert detect(out) == tiny.QWEN2_5_OMNI
    m = export_hf_bundle(out, tmp_path / "bundle", log=lambda *_: None)
    assert read_manifest(tmp_path / "bundle")["control"]["mode"] == "native"
    assert m["control_ids"]["respond"] == tok.token_to_id(protocol.RESPOND)
    assert m["tasks"]["alert"]["prompt_ids"] == [
        tok.token_to_id(protocol.BOS),
        tok.token_to_id(protocol.task_token("alert")),
    ]
    pcm = np.random.default_rng(0).standard_normal(16_000 * 2).astype(np.float32) * 0.1
    listener = Listener(
        tmp_path / "bundle",
        input=pcm,
        sample_rate=16_000,
        mode="alert",
        realtime=False,
        threshold=0.0,
        max_response_tokens=3,
    )
    events = list(listener.events(timeout=60))
    summary = events[-1]
    assert summary.type == "summary" and summary.error is None, summary
    assert summary.chunks == 5 and summary.responses >= 1
