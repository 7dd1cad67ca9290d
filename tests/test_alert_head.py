"""Alerts by the AudioSet branch (issue #30): the head's weights declared in the manifest and
read back (a corrupt file refused by its hash, a mismatched one by its shapes), the rule's
chunked use equal to YAMNet on each chunk's own 0.96 s patch, and `listen --only` /
`--alert-class` / `soundflow labels` through real runs on real clips."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from soundflow.audio import AUDIOSET_PATCH_SAMPLES, CHUNK_SAMPLES, SAMPLE_RATE
from soundflow.cli.main import cli
from soundflow.manifest import BundleError
from soundflow.runtime import audioset_alerts as AA
from soundflow.runtime.bundle import default_bundle_dir, load_spec
from soundflow.train import alert_head

PHONE = Path("/usr/share/sounds/freedesktop/stereo/phone-incoming-call.oga")


def _head_arrays(labels, seed=0, bias=None, context=1) -> dict:
    rng = np.random.default_rng(seed)
    d, h = (AA.EMBEDDING_DIM + AA.NUM_CLASSES) * (2 if context > 1 else 1), 8
    return {
        "mean": np.zeros(d, np.float32),
        "std": np.ones(d, np.float32),
        "w1": (rng.standard_normal((d, h)) * 0.05).astype(np.float16),
        "b1": np.zeros(h, np.float32),
        "w2": (rng.standard_normal((h, len(labels))) if bias is None else np.zeros((h, len(labels)))).astype(np.float16),
        "b2": (np.zeros(len(labels)) if bias is None else np.full(len(labels), bias)).astype(np.float32),
        "labels": np.asarray(labels),
        "config": np.asarray(json.dumps({"labels": list(labels), "alerts": list(labels[:3]), "input_dim": d, "hidden": h, "context": context})),
    }  # fmt: skip


def _bundle_with_head(tmp_path: Path, arrays: dict, off: tuple[str, ...] = ()) -> Path:
    """The default bundle hard-linked (manifest copied), a head written by the recipe's writer."""
    out = tmp_path / "bundle"
    out.mkdir()
    for f in default_bundle_dir().iterdir():
        if f.name == "manifest.json":
            shutil.copy(f, out / f.name)
        elif f.name != alert_head.HEAD_FILE:
            os.link(f, out / f.name)
    work = tmp_path / "work"
    work.mkdir()
    np.savez(work / "head.npz", **arrays)
    labels = [str(x) for x in arrays["labels"]]
    cal = {"dev_hours": 1.0, "labels": {k: {"threshold": 0.5} for k in labels}}
    for k in off:  # calibration found no dev recall for it: opt-in only
        cal["labels"][k]["default"] = False
    alert_head.CAPTIONS.setdefault("test_label", "a test sound")
    alert_head.write_to_bundle(out, work, cal, persistence=1, refractory_s=8.0, budget=0.5)
    return out


LABELS = ("smoke_alarm", "doorbell", "phone_ring", "dog_bark")


def test_head_read_back_and_refused_when_corrupt_or_mismatched(tmp_path):
    bundle = _bundle_with_head(tmp_path, _head_arrays(LABELS))
    spec = load_spec(bundle).audioset.head
    assert spec.labels == LABELS and spec.defaults == LABELS[:3]
    assert spec.thresholds["doorbell"] == 0.5 and spec.captions["doorbell"]
    head = AA.AlertHead(spec)
    assert head.probs(np.zeros(1545, np.float32)).shape == (4,)
    f = bundle / alert_head.HEAD_FILE
    data = bytearray(f.read_bytes())
    f.unlink()  # a hard link no longer: the write below must not reach the source
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256|hash|checksum"):
        load_spec(bundle)
    np.savez(f.with_suffix(""), **_head_arrays(LABELS[:3]))  # 3 outputs, the manifest says 4
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"][alert_head.HEAD_FILE]["sha256"] = _sha(f)
    m["files"][alert_head.HEAD_FILE]["bytes"] = f.stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="manifest asks for"):
        AA.AlertHead(load_spec(bundle).audioset.head)


def test_a_label_calibration_leaves_out_alerts_only_when_asked(tmp_path):
    """calibrate's `default` (dev recall under --min-dev-recall) reaches the manifest: the
    label stays an output, `--only` can name it, but it no longer alerts by default."""
    bundle = _bundle_with_head(tmp_path, _head_arrays(LABELS, bias=20.0), off=("doorbell",))
    spec = load_spec(bundle).audioset.head
    assert spec.defaults == ("smoke_alarm", "phone_ring") and "doorbell" in spec.labels
    alerts = _listen(bundle, "--mode", "alert", "--alerts", "audioset")
    alerts = [e for e in alerts if e["type"] == "response"]
    assert alerts and "doorbell" not in {e["tags"]["alert"] for e in alerts}
    alerts = _listen(bundle, "--alerts", "audioset", "--only", "doorbell")
    assert {e["tags"]["alert"] for e in alerts if e["type"] == "response"} == {"doorbell"}


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_chunked_rule_equals_each_chunks_own_patch(tmp_path):
    bundle = _bundle_with_head(tmp_path, _head_arrays(LABELS, seed=3))
    yam, head = AA.engine_for(type("E", (), {})(), load_spec(bundle).audioset)
    rule = AA.AudiosetAlerts(yam, head, only=("doorbell", "dog_bark"), chunk_s=0.4)
    x = np.resize(_clip(PHONE), 6 * CHUNK_SAMPLES)  # the ring, and again
    padded = np.concatenate([np.zeros(AUDIOSET_PATCH_SAMPLES, np.float32), x])
    cols = [LABELS.index("doorbell"), LABELS.index("dog_bark")]
    for c in range(6):
        rule.step(x[c * CHUNK_SAMPLES : (c + 1) * CHUNK_SAMPLES])
        end = AUDIOSET_PATCH_SAMPLES + (c + 1) * CHUNK_SAMPLES
        scores, emb, _ = yam.run_patch(padded[end - AUDIOSET_PATCH_SAMPLES : end])
        want = AA.mlp_probs(head.arrays, np.concatenate([emb, scores])[None])[0][cols]
        np.testing.assert_allclose(rule.p, want, atol=1e-5)
        np.testing.assert_allclose(rule.scores, scores, atol=1e-6)


def test_a_head_with_context_hears_the_mean_of_the_last_patches(tmp_path):
    """context K: each chunk's patch beside the mean of the last K patches' features, the
    same as the recipe's with_context over the whole stream (chunked equals full)."""
    k = 3
    bundle = _bundle_with_head(tmp_path, _head_arrays(LABELS, seed=5, context=k))
    spec = load_spec(bundle).audioset
    assert spec.head.context == k and spec.head.input_dim == 2 * 1545
    yam, head = AA.engine_for(type("E", (), {})(), spec)
    rule = AA.AudiosetAlerts(yam, head, only=LABELS, chunk_s=0.4)
    x = np.resize(_clip(PHONE), 7 * CHUNK_SAMPLES)
    feats, got = [], []
    state = yam.new_state()
    for c in range(7):
        o = yam.step(state, x[c * CHUNK_SAMPLES : (c + 1) * CHUNK_SAMPLES])
        feats.append(np.concatenate([o.embedding, o.scores]))
    for c in range(7):
        rule.step(x[c * CHUNK_SAMPLES : (c + 1) * CHUNK_SAMPLES])
        got.append(rule.p.copy())
    full = alert_head.with_context(np.asarray(feats), np.zeros(7, np.int64), k)
    want = AA.mlp_probs(head.arrays, full)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    assert not np.allclose(full[3, 1545:], full[3, :1545])  # the mean is not the patch


def _clip(path: Path) -> np.ndarray:
    from soundflow.train.heldout import read_16k

    return read_16k(path)


def _listen(bundle, *args) -> list[dict]:
    r = CliRunner().invoke(
        cli, ["listen", "--bundle", str(bundle), "--input", str(PHONE), "--fast", "--jsonl", *args]
    )
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]


def test_only_restricts_and_alert_class_adds(tmp_path):
    # a head whose every output is p = 1: which labels alert is the restriction's doing
    bundle = _bundle_with_head(tmp_path, _head_arrays(LABELS, bias=20.0))
    events = _listen(bundle, "--alerts", "audioset", "--only", "doorbell,dog_bark")
    alerts = [e for e in events if e["type"] == "response"]
    assert {e["tags"]["alert"] for e in alerts} <= {"doorbell", "dog_bark"} and alerts
    assert alerts[0]["chunk"] == 0 and alerts[0]["text"] == "someone rang the doorbell"
    assert alerts[0]["raw"].startswith("<alert:doorbell>") and len(alerts[0]["classes"]) == 3
    events = _listen(bundle, "--only", "smoke_alarm", "--alert-class", "Telephone=0.3")
    got = {e["tags"]["alert"]: e for e in events if e["type"] == "response"}
    assert set(got) == {"smoke_alarm", "telephone"}
    assert got["telephone"]["text"] == "heard: telephone" and got["telephone"]["onset"] == 0.0
    assert "Telephone" in got["telephone"]["classes"]


def test_alert_class_on_the_default_bundle_and_bad_names():
    events = _listen(default_bundle_dir(), "--alert-class", "Telephone bell ringing=0.2")
    alerts = [e for e in events if e["type"] == "response"]
    ring = [e for e in alerts if e["tags"]["alert"] == "telephone_bell_ringing"]
    assert ring and ring[0]["chunk"] <= 1  # the ring starts at once
    r = CliRunner().invoke(cli, ["listen", "--input", str(PHONE), "--fast", "--alert-class", "Kat"])
    assert r.exit_code != 0 and "not an AudioSet class" in r.output
    r = CliRunner().invoke(cli, ["listen", "--input", str(PHONE), "--fast", "--only", "nope"])
    assert r.exit_code != 0 and "--only nope" in r.output


def test_labels_lists_the_bundles_labels_and_audioset_classes(tmp_path):
    bundle = _bundle_with_head(tmp_path, _head_arrays(LABELS))
    r = CliRunner().invoke(cli, ["labels", "--bundle", str(bundle), "--audioset", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert "smoke_alarm" in out["tagger"] and list(out["audioset_head"]) == list(LABELS)
    assert len(out["audioset_classes"]) == 521 and "Cat" in out["audioset_classes"]


def test_class_alert_parsing():
    classes = ("Speech", "Cat", "Smoke detector, smoke alarm")
    assert AA.class_alert("cat", classes) == AA.ClassAlert("Cat", 1, 0.5, "cat")
    a = AA.class_alert("Smoke detector, smoke alarm=0.25", classes)
    assert (a.column, a.threshold, a.label) == (2, 0.25, "smoke_detector_smoke_alarm")
    for bad in ("Cat=2", "Cat=x", "Dog"):
        with pytest.raises(ValueError):
            AA.class_alert(bad, classes)
    assert SAMPLE_RATE == 16_000


MUSIC = Path("/usr/share/asterisk/moh/macroform-cold_day.wav")


def test_shipped_head_names_a_smoke_alarm_and_not_a_minute_of_music():
    """The default bundle's head (opt-in: `--alerts audioset`; tagger stays the default):
    a procedural smoke alarm (eval bands) is named by its onset chunk + 1,
    with YAMNet's classes behind it; a minute of music raises nothing."""
    from soundflow.runtime.kinds import open_engine
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.train.data import procedural
    from soundflow.train.evaluate import run_stream

    spec = load_spec()
    assert spec.audioset.head is not None and not spec.audioset.head.decides
    engine = open_engine(None, RuntimeOptions.from_flags(threads=1))
    rng = np.random.default_rng(0)
    alarm = 0.5 * procedural.SOUNDS["smoke_alarm"].make(procedural.Params(rng, "eval"))
    x = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), alarm.astype(np.float32)])
    responses, _ = run_stream(engine, x, "alert", alerts="audioset")
    first = responses[0]
    assert first.alert == "smoke_alarm" and first.chunk <= 3  # onset in chunk 2 (t = 1.0 s)
    # the onset: the start of the first chunk whose 0.96 s patch crossed the threshold,
    # at most a chunk after the alarm's start (persistence 1)
    assert "Smoke detector, smoke alarm" in first.classes and first.onset <= 1.0 + 0.4
    if MUSIC.is_file():
        music = _clip(MUSIC)[: 60 * SAMPLE_RATE]
        assert run_stream(engine, music, "alert", alerts="audioset")[0] == []


def test_an_int8_w1_is_read_back_scaled_and_refused_without_its_scale(tmp_path):
    """The recipe stores w1 as int8 with a scale per hidden unit (quantize_w1): the runtime's
    head computes what the recipe's calibration computed from the same file's arrays."""
    arrays = alert_head.quantize_w1(_head_arrays(LABELS, seed=7))
    assert arrays["w1"].dtype == np.int8 and arrays["w1_scale"].shape == (8,)
    bundle = _bundle_with_head(tmp_path, arrays)
    head = AA.AlertHead(load_spec(bundle).audioset.head)
    x = np.random.default_rng(1).standard_normal(1545).astype(np.float32)
    np.testing.assert_allclose(head.probs(x), AA.mlp_probs(arrays, x[None])[0], atol=1e-6)
    with np.load(bundle / alert_head.HEAD_FILE) as z:
        kept = {k: z[k] for k in z.files if k != "w1_scale"}
    (bundle / alert_head.HEAD_FILE).unlink()
    np.savez(bundle / alert_head.HEAD_FILE, **kept)  # int8 without its scale (hash too)
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"][alert_head.HEAD_FILE]["sha256"] = _sha(bundle / alert_head.HEAD_FILE)
    m["files"][alert_head.HEAD_FILE]["bytes"] = (bundle / alert_head.HEAD_FILE).stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="int8 w1 needs w1_scale"):
        AA.AlertHead(load_spec(bundle).audioset.head)  # read as floats: 100x too large


def test_audioset_alerts_skip_the_whisper_encoder(default_engine, monkeypatch):
    """Alerts by the AudioSet branch decide from the PCM alone: the loop never runs the
    Whisper encoder for them (the tagger's alert mode does, every chunk), and the alarm is
    still named."""
    from soundflow.train.data import procedural
    from soundflow.train.evaluate import run_stream

    engine = default_engine
    real, calls = engine.encode, []

    def counted(*args, **kw):  # the real encoder, counted
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(engine, "encode", counted)
    rng = np.random.default_rng(0)
    alarm = 0.5 * procedural.SOUNDS["smoke_alarm"].make(procedural.Params(rng, "eval"))
    x = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), alarm.astype(np.float32)])
    responses, summary = run_stream(engine, x, "alert", alerts="audioset")
    assert calls == [] and summary.chunks >= 10
    assert responses and responses[0].alert == "smoke_alarm"
    run_stream(engine, x, "alert", alerts="tagger")
    assert len(calls) >= summary.chunks
