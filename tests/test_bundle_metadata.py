"""Declared once, read back: every graph carries its driving constants in its ONNX metadata
(written by the exporter from export/specs.py), and the runtime checks them against the
manifest, so a graph from another export is refused by name."""

from __future__ import annotations

import shutil

import onnx
import onnxruntime as ort
import pytest

from soundflow import audio, protocol
from soundflow.manifest import BundleError, read_manifest, write_manifest
from soundflow.runtime.bundle import METADATA_FIELDS, check_metadata, graph_metadata
from soundflow.runtime.kinds import open_engine


def _meta(path):
    return graph_metadata(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))


def test_a_graph_on_its_own_says_how_to_drive_it(smoke_bundle):
    enc, dec = _meta(smoke_bundle / "encoder.onnx"), _meta(smoke_bundle / "decoder.onnx")
    m = read_manifest(smoke_bundle)
    assert enc["sample_rate"] == dec["sample_rate"] == audio.SAMPLE_RATE
    assert enc["chunk_samples"] == m["audio"]["chunk_samples"]
    assert enc["state"] == m["encoder"]["state"]
    assert dec["mask_value"] == protocol.MASK_VALUE == m["decoder"]["mask_value"]
    for key in ("num_layers", "num_kv_heads", "head_dim", "cache_capacity", "vocab_size"):
        assert dec[key] == m["decoder"][key], key
    assert dec["control_ids"] == m["control_ids"]
    # every key the exporter writes that the manifest also holds is one the runtime checks
    assert {"cache_capacity", "mask_value", "chunk_samples", "state"} <= set(METADATA_FIELDS)


def _retag(path, **values):
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key in values:
            prop.value = str(values[prop.key])
    onnx.save(model, str(path))


@pytest.mark.parametrize(
    ("graph", "key", "value"),
    [
        ("decoder.onnx", "cache_capacity", 512),
        ("encoder.onnx", "chunk_samples", 3200),
        ("decoder.onnx", "mask_value", -1e9),
    ],
)
def test_runtime_refuses_a_graph_whose_metadata_disagrees(
    smoke_bundle, tmp_path, graph, key, value
):
    b = tmp_path / "b"
    shutil.copytree(smoke_bundle, b)
    _retag(b / graph, **{key: value})
    m = read_manifest(smoke_bundle)
    m.pop("files")
    write_manifest(b, m)  # validly hashed: only the metadata disagrees
    with pytest.raises(BundleError, match=rf"{graph}: the graph's metadata says {key}"):
        open_engine(b)


def test_metadata_check_compares_only_what_the_graph_carries(smoke_bundle):
    s = ort.InferenceSession(str(smoke_bundle / "decoder.onnx"), providers=["CPUExecutionProvider"])
    m = read_manifest(smoke_bundle)
    assert (
        check_metadata(s, smoke_bundle / "decoder.onnx", m)["num_layers"]
        == m["decoder"]["num_layers"]
    )
    m["decoder"]["num_layers"] += 1
    with pytest.raises(BundleError, match="num_layers"):
        check_metadata(s, smoke_bundle / "decoder.onnx", m)


def test_no_shipped_file_records_a_build_machines_path():
    """The embedded default's text files (manifest, tokenizer, class maps, notices) name data
    splits by name, never by where they lay on the machine that built the bundle."""
    import re
    from pathlib import Path

    import soundflow

    assets = Path(soundflow.__file__).parent / "assets"
    host_path = re.compile(r'"(/work|/home|/root|/tmp|/Users)/')
    for f in assets.rglob("*"):
        if f.suffix in (".json", ".txt", ".csv"):
            hits = host_path.findall(f.read_text(errors="replace"))
            assert not hits, f"{f} records machine paths: {hits[:3]}"


def test_no_source_file_names_a_build_machine_path():
    """Code, scripts and config say where things are relative to the repo, the user's home
    or the system (/usr/share), never a build machine's work folders."""
    import re
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = subprocess.run(
        ["git", "ls-files", "*.py", "*.sh", "*.toml", ".ci/run"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    machine = re.compile(r"(?<![\w.])/(?:work|root|home/\w+)/")
    hits = [
        f"{f}:{n}"
        for f in files
        if f != "tests/test_bundle_metadata.py"
        for n, line in enumerate((root / f).read_text(errors="replace").splitlines(), 1)
        if machine.search(line)
    ]
    assert not hits, f"machine paths in {hits[:5]}"
