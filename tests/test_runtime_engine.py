"""The ONNX Runtime engines and the decoder stream on a real smoke-trained bundle:
the same streams on the torch backend and one full forward agree, and bad bundles are
refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from soundflow.manifest import BundleError, read_manifest, write_manifest
from soundflow.runtime.bundle import load_spec
from soundflow.runtime.kinds import open_engine, open_stream
from soundflow.runtime.kinds.decoder import EncoderStream
from soundflow.runtime.options import RuntimeOptions


@pytest.fixture(scope="module")
def toy_pcm():
    from soundflow.train.smoke import toy_stream

    pcm, _ = toy_stream(7)
    return pcm[: 6400 * 10]


@pytest.mark.parametrize("threshold", [None, 0.0])
def test_one_driver_two_backends_and_one_full_forward(
    smoke_bundle, smoke_checkpoint, toy_pcm, threshold
):
    """The runtime's own streams on ONNX Runtime == on the torch backend (same decisions,
    tokens, p to 1e-5), and the calls they made == one full-sequence transformers forward."""
    torch = pytest.importorskip("torch")
    from soundflow.export.decoder_reference import cached_vs_full, compare
    from soundflow.export.parity import drive
    from soundflow.export.torch_engine import TorchEngine
    from soundflow.train.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(smoke_checkpoint)
    ort_engine = open_engine(smoke_bundle, RuntimeOptions.from_flags(threads=1))
    torch_engine = TorchEngine.from_model(model, ort_engine.spec)

    @torch.no_grad()
    def full(x):
        return model.decoder(inputs_embeds=torch.from_numpy(x[None])).logits[0].numpy()

    generated = 0
    for task in ort_engine.spec.modes:
        kw = dict(respond_every=0, max_tokens=32, threshold=threshold)
        ref, got = drive(torch_engine, toy_pcm, task, **kw), drive(ort_engine, toy_pcm, task, **kw)
        r = compare(ref, got)
        assert r["decisions_equal"] and r["tokens_equal"], r
        np.testing.assert_allclose(got.p_respond, ref.p_respond, atol=1e-5)
        assert r["max_abs_logit_diff"] < 1e-3, r
        assert cached_vs_full(got, full) < 1e-3
        if threshold == 0.0:  # every chunk responds: generation is exercised
            assert all(got.decisions)
        generated += len(got.tokens)
    if threshold == 0.0:
        assert generated > 0


def test_state_and_cache_are_per_stream(smoke_bundle, toy_pcm):
    """One engine, two streams: feeding one does not disturb the other."""
    engine = open_engine(smoke_bundle, RuntimeOptions.from_flags(mode="alert"))
    a_enc, a_dec = EncoderStream(engine), open_stream(engine, engine.options)
    b_enc, b_dec = EncoderStream(engine), open_stream(engine, engine.options)
    chunks = [toy_pcm[i : i + 6400] for i in range(0, 6400 * 6, 6400)]
    pa = [a_dec.decide(a_enc.encode(c)).p for c in chunks]
    noise = np.random.default_rng(3).normal(0, 0.3, 6400).astype(np.float32)
    b_dec.decide(b_enc.encode(noise))
    pb = [b_dec.decide(b_enc.encode(c)).p for c in chunks]
    a_enc.reset(), a_dec.reset()
    pa2 = [a_dec.decide(a_enc.encode(c)).p for c in chunks]
    np.testing.assert_allclose(pa, pa2, atol=1e-6)
    assert not np.allclose(pa, pb, atol=1e-6)  # b's extra chunk is in b's state only


def test_int8_variant_runs(smoke_bundle, toy_pcm):
    engine = open_engine(smoke_bundle, RuntimeOptions.from_flags(mode="alert"), variant="int8")
    assert engine.spec.decoder_file.name == "decoder.int8.onnx"
    enc, dec = EncoderStream(engine), open_stream(engine, engine.options)
    p = dec.decide(enc.encode(toy_pcm[:6400])).p
    assert 0.0 <= p <= 1.0


def _copy(bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(bundle, dst)
    return dst


def test_refuses_corrupt_or_mismatched_bundles(smoke_bundle, tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_spec(tmp_path / "missing")

    b = _copy(smoke_bundle, tmp_path)
    data = bytearray((b / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"decoder\.onnx.*sha256"):
        open_engine(b)

    # A manifest that (validly hashed) promises a signature the graph does not have.
    b = _copy(smoke_bundle, tmp_path / "sig")
    m = read_manifest(b)
    m["decoder"]["inputs"][0]["name"] = "input_ids"
    m.pop("files")
    write_manifest(b, m)
    with pytest.raises(BundleError, match=r"decoder\.onnx: inputs differ.*input_ids"):
        open_engine(b)

    b = _copy(smoke_bundle, tmp_path / "shape")
    m = read_manifest(b)
    m["encoder"]["inputs"][0]["shape"] = ["batch", 3200]
    m.pop("files")
    write_manifest(b, m)
    with pytest.raises(BundleError, match=r"encoder\.onnx: input audio has shape"):
        open_engine(b)

    b = _copy(smoke_bundle, tmp_path / "graph")
    (b / "encoder.onnx").write_bytes(b"not a graph")
    m = json.loads((b / "manifest.json").read_text())
    m.pop("files")
    write_manifest(b, m)
    with pytest.raises(BundleError, match=r"encoder\.onnx: ONNX Runtime cannot load it"):
        open_engine(b)


def test_mode_budget_and_provider_errors(smoke_bundle):
    spec = load_spec(smoke_bundle)
    with pytest.raises(BundleError, match="--mode"):
        spec.prompt("karaoke")
    engine = open_engine(spec)
    with pytest.raises(BundleError, match="exceeds the bundle's cache capacity"):
        open_stream(engine, RuntimeOptions.from_flags(cache_budget=spec.cache_capacity + 1))
    with pytest.raises(BundleError, match="too small"):
        open_stream(engine, RuntimeOptions.from_flags(cache_budget=8))
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BundleError, match="onnxruntime-gpu"):
            open_engine(spec, RuntimeOptions.from_flags(provider="cuda"))


def test_cache_window_must_leave_room_for_a_call(smoke_bundle):
    engine = open_engine(smoke_bundle)
    with pytest.raises(BundleError, match="leaves no room"):
        open_stream(engine, RuntimeOptions.from_flags(cache_budget=64, cache_window=60))
    open_stream(engine, RuntimeOptions.from_flags(cache_budget=64, cache_window=40))
