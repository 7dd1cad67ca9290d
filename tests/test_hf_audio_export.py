"""Qwen2-Audio / Qwen2.5-Omni (thinker) checkpoints -> streaming bundles, on tiny random
configs: graph signatures, the chunked encoder against the full transformers encoder,
cached decoding against the checkpoint's own multimodal forward, and the runtime end to end.

Tolerances (float32): ORT vs torch and cached vs full forward < 1e-3 on logits (measured
~1e-6). The chunked encoder is exact (< 1e-5) once attention is taken out; with attention it
differs by design (chunk-causal attention inside each reference window, see
export/hf_audio/encoder.py DIFFERENCES), bounded per architecture below.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from soundflow.export.hf_audio import export_hf_bundle, parity
from soundflow.manifest import read_manifest
from soundflow.train.kinds.decoder.hf_audio import detect, reference, source, tiny
from soundflow.train.kinds.decoder.hf_audio.encoder import StreamingAudioEncoder, state_specs
from soundflow.train.kinds.decoder.hf_audio.frontend import MelConfig, StreamingLogMel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCHS = (tiny.QWEN2_AUDIO, tiny.QWEN2_5_OMNI)
# Chunked vs full encoder with attention (tiny random weights, 4.8 s): Qwen2-Audio's
# reference attends over its whole 30 s window, Omni's over 2 s windows, so Omni is closer.
ENCODER_BOUNDS = {
    tiny.QWEN2_AUDIO: {"relative_l2": 0.25, "min_cosine": 0.85},
    tiny.QWEN2_5_OMNI: {"relative_l2": 0.05, "min_cosine": 0.99},
}
CHUNK = 6400


@pytest.fixture(scope="module", params=ARCHS)
def exported(request, tmp_path_factory):
    arch = request.param
    root = tmp_path_factory.mktemp(arch)
    ckpt = tiny.tiny_checkpoint(arch, root / "ckpt")
    llm = source.load(ckpt)
    manifest = export_hf_bundle(ckpt, root / "bundle", llm=llm, log=lambda *_: None)
    return arch, ckpt, root / "bundle", llm, manifest


def _stream(enc, pcm, chunk=CHUNK):
    states = [
        torch.zeros(
            [1 if isinstance(d, str) else d for d in s.shape], dtype=getattr(torch, s.dtype)
        )
        for s in state_specs(enc.dims)
    ]
    out = []
    with torch.no_grad():
        for c in range(len(pcm) // chunk):
            res = enc(torch.from_numpy(pcm[None, c * chunk : (c + 1) * chunk]), *states)
            out.append(res[0][0].numpy())
            states = list(res[1:])
    return out


def test_detect(exported, tmp_path):
    arch, ckpt, *_ = exported
    assert detect(ckpt) == arch
    assert detect(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert detect(tmp_path) is None


def test_bundle_is_contract_3(exported):
    arch, _, bundle, _, manifest = exported
    m = read_manifest(bundle)
    assert m["source"]["architecture"] == arch and m["control"]["mode"] == "fallback"
    assert m["encoder"]["embeds_per_chunk"] == 10 and m["audio"]["chunk_samples"] == CHUNK
    assert m["prompt_template"]["resume_ids"][0] == m["control_ids"]["eos"]
    for part in ("encoder", "decoder"):
        g = onnx.load(str(bundle / m[part]["file"]))
        assert not [n for n in g.graph.node if n.op_type in ("If", "Loop", "Scan")]
        assert [t.name for t in g.graph.input] == [s["name"] for s in m[part]["inputs"]]
        assert [t.name for t in g.graph.output] == [s["name"] for s in m[part]["outputs"]]
    from soundflow.runtime.bundle import check_consistency, load_spec

    check_consistency(load_spec(bundle))  # the runtime's own checks accept it


def test_frontend_is_whisper_feature_extractor():
    """Streaming log-mel frames == WhisperFeatureExtractor's, one hop late (< 1e-4)."""
    mel = MelConfig(n_mels=128)
    pcm = parity.test_signal(2.4, seed=3)
    fe = StreamingLogMel(mel, CHUNK)
    pcm_state, peak, frames = torch.zeros(1, mel.overlap), torch.zeros(1), []
    for c in range(len(pcm) // CHUNK):
        chunk = torch.from_numpy(pcm[None, c * CHUNK : (c + 1) * CHUNK])
        f, pcm_state, peak = fe(chunk, pcm_state, peak, torch.tensor([c == 0]))
        frames.append(f[0].numpy())
    got = np.concatenate(frames, axis=1)[:, 1:]  # drop the pre-roll frame
    ref = reference.features(pcm, mel)[0][0].numpy()[:, : got.shape[1]]
    assert np.abs(got - ref).max() < 1e-4


def test_encoder_exact_without_attention(exported):
    """Framing, window edges, positions, pooling and projection are the reference's own:
    with the attention outputs zeroed, chunked == full (< 1e-5)."""
    arch, ckpt, _, _, _ = exported
    llm = source.load(ckpt)
    for layer in llm.audio_tower.layers:
        layer.self_attn.out_proj.weight.data.zero_()
        layer.self_attn.out_proj.bias.data.zero_()
    mel = MelConfig.from_checkpoint(ckpt, llm.audio_config.num_mel_bins)
    pcm = parity.test_signal(12 * 0.4, seed=1)  # 4.8 s: Omni crosses two 2 s windows
    ref = reference.audio_embeds(llm, pcm, mel)
    for chunk in (CHUNK, CHUNK // 2, CHUNK * 2):  # 400, 200 and 800 ms
        enc = StreamingAudioEncoder(llm, chunk, mel).eval()
        got = np.concatenate(_stream(enc, pcm, chunk))[1:]
        assert len(got) == len(pcm) // chunk * enc.dims.embeds_per_chunk - 1
        assert np.abs(got - ref[: len(got)]).max() < 1e-5, chunk


def test_parity_report(exported):
    """ORT == torch over a streamed run with generation; cached == full forward; the
    chunked encoder within its stated bound of the full one."""
    arch, ckpt, bundle, llm, _ = exported
    report = parity.check(bundle, ckpt, chunks=12, llm=llm)
    assert report["ok"], report
    assert report["generated_tokens"] > 0
    enc = report["encoder_vs_full"]
    assert enc["relative_l2"] < ENCODER_BOUNDS[arch]["relative_l2"], enc
    assert enc["min_cosine"] > ENCODER_BOUNDS[arch]["min_cosine"], enc
    if arch == tiny.QWEN2_5_OMNI:  # a window's last embed saw its whole window
        assert enc["max_abs_diff_at_window_ends"] < 1e-3


def test_decoder_matches_multimodal_forward(exported):
    """The bundle's decoder fed prefix, audio and suffix incrementally == the checkpoint's
    forward(input_ids with <|AUDIO|> placeholders, input_features): the positions it assigns
    (Omni: 3-D mrope, all three equal for audio + text) are the runtime's 1-D positions."""
    from soundflow.runtime.kinds import open_engine
    from soundflow.train.kinds.decoder.hf_audio.prompt import load_tokenizer

    arch, ckpt, bundle, llm, manifest = exported
    tok = load_tokenizer(ckpt)
    mel = MelConfig.from_checkpoint(ckpt, llm.audio_config.num_mel_bins)
    pcm = parity.test_signal(1.6, seed=2)
    audio = reference.audio_embeds(llm, pcm, mel)
    ids = manifest["tasks"]["assist"]
    prefix, suffix = ids["prompt_ids"], ids["respond_ids"] + tok.encode("a dog").ids
    input_ids = prefix + [llm.config.audio_token_id] * len(audio) + suffix
    feats, fmask = reference.features(pcm, mel)
    with torch.no_grad():
        out = llm.model(
            input_ids=torch.tensor([input_ids]),
            attention_mask=torch.ones(1, len(input_ids), dtype=torch.long),
            input_features=feats,
            feature_attention_mask=fmask,
        )
    full = out.logits[0].numpy()
    embed = np.load(bundle / "embed_tokens.npy")
    # prefill, audio in four calls, a 5-token call, then one token per call
    pieces = [embed[prefix], *np.array_split(audio, 4), embed[suffix[:5]], *embed[suffix[5:], None]]
    got = parity.incremental_logits(open_engine(bundle), pieces)
    assert got.shape == full.shape
    assert np.abs(got - full).max() < 1e-4


def test_runtime_end_to_end(exported):
    """The public runtime API runs the fallback bundle (control ids are stand-ins until the
    loop uses soundflow.runtime.fallback; threshold 0 makes it generate every chunk)."""
    from soundflow.runtime.listener import Listener

    _, _, bundle, _, _ = exported
    pcm = parity.test_signal(2.0, seed=4)
    listener = Listener(
        bundle,
        input=pcm,
        sample_rate=16_000,
        mode="assist",
        realtime=False,
        threshold=0.0,
        max_response_tokens=3,
    )
    events = list(listener.events(timeout=60))
    summary = events[-1]
    assert summary.type == "summary" and summary.error is None, summary
    assert summary.chunks == 5 and summary.responses >= 1


def test_full_omni_checkpoint_reads_its_thinker(exported, tmp_path):
    """A whole Qwen2.5-Omni checkpoint (thinker + talker + token2wav, weights under
    `thinker.`) loads its thinker only, weight for weight."""
    from safetensors.torch import load_file, save_file

    arch, ckpt, _, llm, _ = exported
    if arch != tiny.QWEN2_5_OMNI:
        pytest.skip("Omni layout only")
    thinker_cfg = json.loads((ckpt / "config.json").read_text())
    weights = load_file(str(ckpt / "model.safetensors"))
    full = {f"thinker.{k}": v for k, v in weights.items()}
    full["talker.codec_head.weight"] = torch.zeros(2, 2)  # ignored
    save_file(full, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "qwen2_5_omni", "thinker_config": thinker_cfg})
    )
    assert detect(tmp_path) == tiny.QWEN2_5_OMNI
    loaded = source.load(tmp_path)
    for name in ("conv1.weight", "layers.1.fc1.weight", "proj.weight"):
        assert torch.equal(
            loaded.audio_tower.get_parameter(name), llm.audio_tower.get_parameter(name)
        )
    assert torch.equal(loaded.text.lm_head.weight, llm.text.lm_head.weight)
    assert torch.equal(
        loaded.text.model.layers[1].self_attn.q_proj.bias,
        llm.text.model.layers[1].self_attn.q_proj.bias,
    )


def test_external_weights_are_gathered_into_one_file(exported, tmp_path):
    """Graphs over 2 GB leave the exporter as one file per weight (initializers and
    Constant nodes); the bundle keeps one `<graph>.data` that ONNX Runtime loads."""
    import onnxruntime as ort

    from soundflow.export.hf_audio.bundle import _gather_external

    _, _, bundle, _, _ = exported
    m = onnx.load(str(bundle / "encoder.onnx"))
    src, dst = tmp_path / "raw", tmp_path / "out"
    src.mkdir(), dst.mkdir()
    onnx.save(
        m,
        str(src / "encoder.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=False,
        size_threshold=1024,
        convert_attribute=True,
    )
    m = onnx.load(str(src / "encoder.onnx"), load_external_data=False)
    _gather_external(m, src, dst, "encoder.onnx.data")
    onnx.save(m, str(dst / "encoder.onnx"))
    assert sorted(p.name for p in dst.iterdir()) == ["encoder.onnx", "encoder.onnx.data"]
    a = ort.InferenceSession(str(bundle / "encoder.onnx"), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(dst / "encoder.onnx"), providers=["CPUExecutionProvider"])
    feeds = {
        i.name: np.zeros(
            [1 if isinstance(d, str) else d for d in i.shape],
            np.int64 if "int64" in i.type else np.float32,
        )
        for i in a.get_inputs()
    }
    feeds["audio"] = parity.test_signal(0.4)[None]
    for x, y in zip(a.run(None, feeds), b.run(None, feeds), strict=True):
        assert np.array_equal(x, y)


def test_runtime_fallback_answers_at_utterance_ends(exported):
    """No control tokens: the runtime's utterance-end policy decides, the bundle's chat
    template opens and closes the turns; one answer per utterance, after it ends."""
    from soundflow.runtime.listener import Listener

    _, _, bundle, _, _ = exported
    rng = np.random.default_rng(0)
    t = np.arange(int(1.2 * 16_000)) / 16_000
    speech = (0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 4 * t))) * 0.2 * np.sin(2 * np.pi * 220 * t)
    quiet = lambda s: rng.normal(0, 0.003, int(s * 16_000))  # noqa: E731
    pcm = np.concatenate([quiet(1.2), speech, quiet(1.6), speech, quiet(1.2)]).astype(np.float32)
    listener = Listener(
        bundle,
        input=pcm,
        sample_rate=16_000,
        mode="assist",
        realtime=False,
        max_response_tokens=3,
        stats_every_s=0,
    )
    events = list(listener.events(timeout=60))
    assert events[-1].error is None, events[-1]
    answers = [e.t for e in events if e.type == "response"]
    assert len(answers) == 2, answers  # utterances end at 2.4 s and 5.2 s
    assert 2.4 + 0.6 <= answers[0] + 1e-9 <= 2.4 + 0.6 + 0.4 + 1e-9
    assert 5.2 + 0.6 <= answers[1] + 1e-9 <= 5.2 + 0.6 + 0.4 + 1e-9
