"""The exported bundle: graph signatures match the specs, parity with torch, integrity checks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from soundflow.cli.main import cli  # noqa: E402
from soundflow.manifest import BundleError, read_manifest  # noqa: E402


def _shape(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_graphs_match_declared_specs(smoke_bundle):
    manifest = read_manifest(smoke_bundle)
    for part in ("encoder", "decoder"):
        model = onnx.load(str(smoke_bundle / manifest[part]["file"]))
        onnx.checker.check_model(model)
        assert not [n for n in model.graph.node if n.op_type in ("If", "Loop", "Scan")]
        for kind, tensors in (("inputs", model.graph.input), ("outputs", model.graph.output)):
            declared = manifest[part][kind]
            assert [t.name for t in tensors] == [d["name"] for d in declared]
            for t, d in zip(tensors, declared, strict=True):
                assert _shape(t) == d["shape"], (part, t.name)
                assert (
                    onnx.helper.tensor_dtype_to_np_dtype(t.type.tensor_type.elem_type).name
                    == d["dtype"]
                )
        meta = {p.key: p.value for p in model.metadata_props}
        assert int(meta["chunk_samples"]) == manifest["audio"]["chunk_samples"]
    dec_meta = {
        p.key: p.value for p in onnx.load(str(smoke_bundle / "decoder.onnx")).metadata_props
    }
    assert json.loads(dec_meta["control_ids"]) == manifest["control_ids"]
    assert int(dec_meta["cache_capacity"]) == manifest["decoder"]["cache_capacity"]
    names = [i["name"] for i in manifest["decoder"]["inputs"]]
    assert "past_key_values.0.key" in names and "past_key_values.1.value" in names
    assert "present.1.value" in [o["name"] for o in manifest["decoder"]["outputs"]]


def test_parity_with_torch(smoke_bundle, smoke_checkpoint):
    from soundflow.export.parity import check

    report = check(smoke_bundle, smoke_checkpoint, chunks=30)
    assert report["ok"], report
    assert report["kind"] == "decoder-only"
    assert report["max_abs_logit_diff"] < 1e-3
    assert report["max_abs_cached_vs_full_diff"] < 1e-3
    for row in report["modes"].values():
        assert row["generated_tokens"] > 0  # real generation ran, not only decisions
        assert row["decisions_equal"] and row["tokens_equal"]


def test_every_kind_the_runtime_runs_has_one_parity_reference():
    from soundflow.export.parity import REFERENCES, reference
    from soundflow.runtime.kinds import KINDS

    assert set(REFERENCES) == set(KINDS)
    for kind in KINDS:
        ref = reference(kind)
        assert ref.totals[0][0] == "max_abs_logit_diff"  # the summary line reads it
        assert ref.full_key in dict(ref.totals)
    with pytest.raises(BundleError, match="no parity reference.*re-export"):
        reference("karaoke")


def test_check_cli_prints_max_difference_last(smoke_bundle, smoke_checkpoint):
    result = CliRunner().invoke(
        cli, ["export", "--check", str(smoke_bundle), "--checkpoint", str(smoke_checkpoint)]
    )
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("parity ok: max |delta logit|")
    assert float(last.split("= ")[1].split(",")[0]) < 1e-3


def test_int8_variant_is_listed_and_runs(smoke_bundle):
    import onnxruntime as ort

    manifest = read_manifest(smoke_bundle)
    int8 = manifest["variants"]["int8"]
    sess = ort.InferenceSession(
        str(smoke_bundle / int8["decoder"]), providers=["CPUExecutionProvider"]
    )
    assert [i.name for i in sess.get_inputs()] == [i["name"] for i in manifest["decoder"]["inputs"]]
    assert (smoke_bundle / int8["decoder"]).stat().st_size < (
        smoke_bundle / "decoder.onnx"
    ).stat().st_size


def test_any_changed_byte_is_refused_naming_the_file(smoke_bundle, tmp_path):
    manifest = read_manifest(smoke_bundle)
    for rel in manifest["files"]:
        copy = tmp_path / rel.replace("/", "_")
        shutil.copytree(smoke_bundle, copy)
        data = bytearray((copy / rel).read_bytes())
        data[len(data) // 2] ^= 0x01
        (copy / rel).write_bytes(bytes(data))
        with pytest.raises(BundleError, match=rel.replace(".", r"\.")):
            read_manifest(copy)


def test_truncated_missing_and_wrong_version(smoke_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(smoke_bundle, copy)
    (copy / "decoder.onnx").write_bytes((copy / "decoder.onnx").read_bytes()[:100])
    with pytest.raises(BundleError, match="decoder.onnx.*truncated"):
        read_manifest(copy)
    (copy / "decoder.onnx").unlink()
    with pytest.raises(BundleError, match="decoder.onnx.*missing"):
        read_manifest(copy)
    shutil.rmtree(copy)
    shutil.copytree(smoke_bundle, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["version"] = 99
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="version 99.*re-export"):
        read_manifest(copy)
    with pytest.raises(BundleError, match="does not exist"):
        read_manifest(tmp_path / "nowhere")


def test_export_cli_end_to_end(smoke_checkpoint, tmp_path):
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli, ["export", str(smoke_checkpoint), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "parity ok" in result.output.splitlines()[-1]
    manifest = read_manifest(out)
    assert set(manifest["tasks"]) == {"transcribe", "alert", "assist"}
    assert np.load(out / "embed_tokens.npy").shape == tuple(manifest["embeddings"]["shape"])


def test_export_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["export", str(tmp_path), "--out", str(tmp_path / "b")])
    assert result.exit_code != 0
    assert "not a soundflow checkpoint" in result.output
    assert "Traceback" not in result.output


def test_export_cli_recognizes_a_pretrained_audio_llm(tmp_path):
    """`soundflow export HF_DIR` on a tiny random Qwen2-Audio checkpoint writes the same
    bundle format, and its parity line comes last."""
    from soundflow.train.kinds.decoder.hf_audio.tiny import tiny_checkpoint

    ckpt = tiny_checkpoint("qwen2_audio", tmp_path / "qwen", native=True)
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli, ["export", str(ckpt), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "qwen2_audio checkpoint" in result.output
    assert result.output.strip().splitlines()[-1].startswith("parity ok")
    manifest = read_manifest(out)
    assert manifest["source"]["architecture"] == "qwen2_audio"
