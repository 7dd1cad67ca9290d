"""The ONNX Runtime engines and the decoder stream on a real smoke-trained bundle:
bit-for-bit agreement with the exporter's reference driver, and refusal of bad bundles."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from soundflow.manifest import BundleError, read_manifest, write_manifest
from soundflow.runtime.bundle import load_spec
from soundflow.runtime.engine import OrtEngine
from soundflow.runtime.options import RuntimeOptions
from soundflow.runtime.stream import DecoderStream, EncoderStream


@pytest.fixture(scope="module")
def toy_pcm():
    from soundflow.train.smoke import toy_stream

    pcm, _ = toy_stream(7)
    return pcm[: 6400 * 10]


@pytest.mark.parametrize("threshold", [None, 0.0])
def test_matches_the_exporters_reference_driver(smoke_bundle, toy_pcm, threshold):
    from soundflow.export.parity import OrtBackend, ReferenceDriver

    manifest = read_manifest(smoke_bundle)
    embed = np.load(smoke_bundle / "embed_tokens.npy")
    for task in manifest["tasks"]:
        opts = RuntimeOptions(
            mode=task, threshold=threshold, refractory_s=0.0, max_response_tokens=32
        )
        engine = OrtEngine(smoke_bundle, opts)
        enc, dec = EncoderStream(engine), DecoderStream(engine, opts)
        ref_thr = manifest["decision"]["threshold"] if threshold is None else threshold
        ref = ReferenceDriver(OrtBackend(smoke_bundle), manifest, embed).run(
            toy_pcm, task, force_every=0, max_tokens=32, threshold=ref_thr
        )
        ps, tokens, eos = [], [], manifest["control_ids"]["eos"]
        for c in range(len(toy_pcm) // 6400):
            d = dec.decide(enc.encode(toy_pcm[c * 6400 : (c + 1) * 6400]))
            ps.append(d.p)
            if d.respond:
                tokens += list(dec.continue_response(dec.begin_response(c * 0.4)))
                tokens.append(eos)  # every smoke response ends well before max tokens
        np.testing.assert_allclose(ps, ref.p_respond, atol=1e-5)
        assert [p >= dec.threshold for p in ps] == ref.decisions
        assert tokens == ref.tokens


def test_state_and_cache_are_per_stream(smoke_bundle, toy_pcm):
    """One engine, two streams: feeding one does not disturb the other."""
    engine = OrtEngine(smoke_bundle, RuntimeOptions(mode="alert"))
    a_enc, a_dec = EncoderStream(engine), DecoderStream(engine, engine.options)
    b_enc, b_dec = EncoderStream(engine), DecoderStream(engine, engine.options)
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
    engine = OrtEngine(smoke_bundle, RuntimeOptions(mode="alert"), variant="int8")
    assert engine.spec.decoder_file.name == "decoder.int8.onnx"
    enc, dec = EncoderStream(engine), DecoderStream(engine, engine.options)
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
        OrtEngine(b)

    # A manifest that (validly hashed) promises a signature the graph does not have.
    b = _copy(smoke_bundle, tmp_path / "sig")
    m = read_manifest(b)
    m["decoder"]["inputs"][0]["name"] = "input_ids"
    m.pop("files")
    write_manifest(b, m)
    with pytest.raises(BundleError, match=r"decoder\.onnx: inputs differ.*input_ids"):
        OrtEngine(b)

    b = _copy(smoke_bundle, tmp_path / "shape")
    m = read_manifest(b)
    m["encoder"]["inputs"][0]["shape"] = ["batch", 3200]
    m.pop("files")
    write_manifest(b, m)
    with pytest.raises(BundleError, match=r"encoder\.onnx: input audio has shape"):
        OrtEngine(b)

    b = _copy(smoke_bundle, tmp_path / "graph")
    (b / "encoder.onnx").write_bytes(b"not a graph")
    m = json.loads((b / "manifest.json").read_text())
    m.pop("files")
    write_manifest(b, m)
    with pytest.raises(BundleError, match=r"encoder\.onnx: ONNX Runtime cannot load it"):
        OrtEngine(b)


def test_mode_budget_and_provider_errors(smoke_bundle):
    spec = load_spec(smoke_bundle)
    with pytest.raises(BundleError, match="--mode"):
        spec.prompt("karaoke")
    engine = OrtEngine(spec)
    with pytest.raises(BundleError, match="exceeds the bundle's cache capacity"):
        DecoderStream(engine, RuntimeOptions(cache_budget=spec.cache_capacity + 1))
    with pytest.raises(BundleError, match="too small"):
        DecoderStream(engine, RuntimeOptions(cache_budget=8))
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BundleError, match="onnxruntime-gpu"):
            OrtEngine(spec, RuntimeOptions(provider="cuda"))


def test_cache_window_must_leave_room_for_a_call(smoke_bundle):
    engine = OrtEngine(smoke_bundle)
    with pytest.raises(BundleError, match="leaves no room"):
        DecoderStream(engine, RuntimeOptions(cache_budget=64, cache_window=60))
    DecoderStream(engine, RuntimeOptions(cache_budget=64, cache_window=40))
