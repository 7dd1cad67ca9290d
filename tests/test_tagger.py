"""The alert tagger: its targets, the runtime's decision rule, the exported graph against
torch, training features against what a running stream computes, and a tagged bundle
driving alert mode through the runtime (no decoder call), with its manifest checked; its
speech gate: targets, calibration == runtime rule, and transcribe readings it skips; labels
confirmed by the words Whisper reads (VerifySpec): the rule, its calibration, the runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from soundflow.manifest import BundleError
from soundflow.runtime.kinds import open_engine, open_stream
from soundflow.runtime.tagger import (
    AlertRule,
    GateSpec,
    SpeechGate,
    TaggerSpec,
    VerifySpec,
    newest_frames,
)

torch = pytest.importorskip("torch")


def _spec(**changes) -> TaggerSpec:
    base = dict(
        file=Path("tagger.onnx"),
        inputs=(),
        outputs=(),
        source="present.0.encoder.value",
        frames=4,
        labels=("doorbell", "smoke_alarm", "dog_bark"),
        thresholds={"doorbell": 0.5, "smoke_alarm": 0.8},
        responses={"doorbell": (1,), "smoke_alarm": (2,)},
        patience=1,
    )
    return TaggerSpec(**{**base, **changes})


def _alerts(rule: AlertRule, probs, chunk_s: float = 0.4):
    out = []
    for c, p in enumerate(probs):
        rule.update(np.asarray(p, np.float32))
        if rule.ready:
            label = rule.fire((c + 1) * chunk_s)
            if label:
                out.append((round((c + 1) * chunk_s, 1), label))
    return out


def test_rule_thresholds_refractory_and_auxiliary_labels():
    rule = AlertRule(_spec(), refractory_s=2.0)
    probs = [
        [0.4, 0.0, 0.99],  # below doorbell's threshold; dog_bark is never an alert
        [0.6, 0.0, 0.0],  # doorbell
        [0.9, 0.0, 0.0],  # same doorbell, inside its refractory time
        [0.0, 0.79, 0.0],  # smoke alarm below its own threshold
        [0.7, 0.85, 0.0],  # both ready: the most probable wins, doorbell still refractory
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
        [0.95, 0.0, 0.0],  # 2.4 s after the first doorbell: a new one
    ]
    assert _alerts(rule, probs) == [(0.8, "doorbell"), (2.0, "smoke_alarm"), (3.2, "doorbell")]
    assert rule.labels == ["doorbell", "smoke_alarm"]


def test_rule_patience_and_an_explicit_threshold():
    probs = [[0.6, 0, 0], [0.0, 0, 0], [0.6, 0, 0], [0.6, 0, 0]]
    assert _alerts(AlertRule(_spec(patience=2), 8.0), probs) == [(1.6, "doorbell")]
    assert _alerts(AlertRule(_spec(), 8.0, threshold=0.7), probs) == []


def test_rule_confirms_a_label_by_the_words_read():
    """A verified label below its own threshold alerts only where a reading held one of its
    words; the refractory time holds as for any alert; --threshold switches verifying off."""
    spec = _spec(verify={"smoke_alarm": VerifySpec(0.3, ("fire", "smoke"))})
    rule = AlertRule(spec, refractory_s=2.0)
    rule.update(np.array([0.0, 0.2, 0.0], np.float32))
    assert rule.to_verify(0.4) == []  # under the verify threshold: no reading
    rule.update(np.array([0.0, 0.5, 0.0], np.float32))
    assert rule.to_verify(0.8) == ["smoke_alarm"] and not rule.ready
    assert not rule.confirm("smoke_alarm", {"the", "kettle"}) and not rule.ready
    assert rule.confirm("smoke_alarm", {"smoke", "everywhere"}) and rule.ready
    assert rule.fire(0.8) == "smoke_alarm"
    rule.update(np.array([0.0, 0.5, 0.0], np.float32))
    assert rule.to_verify(1.2) == []  # refractory: no reading either
    assert AlertRule(spec, 2.0, threshold=0.9).verify == {}


def test_verify_calibration_keeps_a_threshold_only_where_it_helps():
    """calibrate_verify on two dev streams: a shout the tagger is unsure of (p 0.5, under
    its 0.9) whose window reads "help" is won back at the highest threshold that reaches it;
    where readings never hold the word, no threshold (None)."""
    from soundflow.train import tagger as T

    config = T.TaggerConfig(labels=("shout_for_help", "doorbell"), alerts=("shout_for_help",))
    chunks = np.arange(20)
    probs = np.zeros((20, 2), np.float32)
    probs[5, 0] = 0.5  # the shout, 2.0-2.6 s
    probs[15, 0] = 0.35  # talk, no event
    shout = {"label": "shout_for_help", "start": 2.0, "end": 2.6, "alert": True}
    streams = [({"events": [shout], "duration": 8.0}, chunks, probs)]
    thr = np.array([0.9])
    heard = [{5: {"help", "me"}, 15: {"help", "you", "carry"}}]
    args = (config, streams, heard, thr, 1, 8.0, 2.0, "shout_for_help", ("help",))
    assert T.calibrate_verify(*args) == 0.5  # 0.35 would add the talk as a false alert
    assert T.score(config, streams, thr, 1, 8.0)["correct"] == 0
    verify = {"shout_for_help": VerifySpec(0.5, ("help",))}
    r = T.score(config, streams, thr, 1, 8.0, verify, heard)
    assert r["correct"] == 1 and r["false"] == 0
    never = [{5: {"hello"}, 15: {"carry"}}]
    assert T.calibrate_verify(config, streams, never, *args[3:]) is None


def test_targets_mark_the_chunks_an_event_overlaps():
    from soundflow.train.tagger import chosen_chunks, chunk_targets

    record = {
        "events": [
            {"label": "doorbell", "alert": True, "category": "Daily", "start": 1.0, "end": 1.5},
            {"label": "chatter", "alert": False, "category": "Speech", "start": 0, "end": 3},
        ]
    }
    y = chunk_targets(record, np.arange(8), ("doorbell", "chatter"))
    # a chunk is on when the 0.8 s up to its end overlaps the event by > 0.1 s
    assert np.flatnonzero(y[:, 0]).tolist() == [2, 3, 4]
    assert not y[:, 1].any()  # speech is not a sound to name
    assert chosen_chunks(record, 20, every=5).tolist() == [0, 1, 2, 3, 4, 5, 10, 15]


def test_newest_frames_pad_a_short_window_with_its_first_frame():
    entry = np.arange(2 * 2 * 3 * 2 * 4, dtype=np.float32).reshape(2, 2, 3, 2, 4)
    x = newest_frames(entry, 1, 0, frames=3)  # layer 1's keys, heads concatenated
    assert x.shape == (1, 3, 12)
    np.testing.assert_array_equal(x[0, 0], x[0, 1])
    np.testing.assert_array_equal(x[0, 2], entry[1, 0, :, 1].reshape(-1))


@pytest.mark.parametrize("speech", [False, True])
def test_exported_graph_is_the_head(tmp_path, speech):
    from soundflow.export.tagger_export import check_parity, export_graph
    from soundflow.train.tagger import SPEECH, TaggerConfig, TaggerHead

    torch.manual_seed(0)
    labels = ("a", "b", "c") + ((SPEECH,) if speech else ())
    config = TaggerConfig(labels=labels, alerts=("a",), frames=8, width=16, speech=speech)
    head = TaggerHead(config)
    assert head(torch.zeros(2, 8, 16)).shape == (2, len(labels))
    export_graph(head.eval(), tmp_path / "tagger.onnx")
    assert check_parity(head, tmp_path / "tagger.onnx") < 1e-5


def test_speech_targets_mark_the_chunks_that_hear_a_word():
    from soundflow.train.tagger import speech_targets

    record = {
        "words": [{"word": "hello", "start": 1.0, "end": 1.5}],
        "events": [{"category": "Speech", "start": 4.0, "end": 4.3}],  # speech without words
    }
    # a chunk is on when the 0.8 s up to its end holds > 0.05 s of a word
    assert np.flatnonzero(speech_targets(record, np.arange(14))).tolist() == [2, 3, 4, 10, 11]


def test_gate_calibration_decides_as_the_runtime_gate():
    """train/tagger.window_open (calibration, over a whole stream) and runtime SpeechGate
    (chunk by chunk) open on the same chunks."""
    from soundflow.train.tagger import window_open

    p = np.random.default_rng(0).uniform(size=200) ** 4  # mostly low, some over 0.5
    gate = SpeechGate(GateSpec(column=1, threshold=0.5, window_chunks=11))
    chunked = [gate.update(np.array([0.0, x])) for x in p]
    assert chunked == window_open(p, 11, 0.5).tolist()
    assert 0 < sum(chunked) < len(p)
    gate.reset()
    assert not gate.open  # a stream starts closed: no speech heard yet


def test_gate_calibration_keeps_the_speech_windows():
    from soundflow.train.tagger import calibrate_gate

    # one stream: a word at 4-5 s; p(speech) high there, and one noisy spike at 12 s
    record = {"words": [{"word": "a", "start": 4.0, "end": 5.0}], "events": []}
    chunks = np.arange(50)
    p = np.full(50, 0.05)
    p[10:14] = 0.9
    p[30] = 0.4
    probs = np.zeros((50, 3))
    probs[:, -1] = p
    g = calibrate_gate([(record, chunks, probs)], window=3, recall=1.0)
    assert g["threshold"] == 0.9 and g["recall"] == 1.0  # the highest that hears every word
    assert g["quiet_windows_read"] == 0.0  # the spike at 0.4 is left out


@pytest.fixture(scope="module")
def default_cross(default_engine):
    if default_engine.spec.kind != "whisper-cross":  # then a runtime.kinds.whisper.CrossEngine
        pytest.skip("the embedded default is not the Whisper-based model")
    return default_engine


def test_training_features_are_what_a_running_stream_tags(default_cross):
    """train/tagger.stream_features rebuilds each chosen chunk's encoder state from the PCM
    before it; the runtime carries it chunk by chunk. Both must give the tagger the same
    frames (chunked == rebuilt)."""
    from soundflow.runtime.tagger import source_index
    from soundflow.train.tagger import TaggerConfig, stream_features

    eng = default_cross
    cs = eng.spec.chunk_samples
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(cs * 14) * 0.05).astype(np.float32)
    config = TaggerConfig(labels=(), alerts=(), frames=40)
    chunks = np.array([0, 3, 12, 13])
    rebuilt = stream_features(eng, x, chunks, config)
    state, carried = eng.new_state(), []
    where = source_index(config.source, eng.spec.layers)
    for c in range(14):
        entry, state = eng.encode(x[c * cs : (c + 1) * cs][None], state)
        carried.append(newest_frames(entry, *where, config.frames)[0])
    np.testing.assert_allclose(
        rebuilt.astype(np.float32), np.stack(carried)[chunks], atol=2e-3, rtol=2e-3
    )


@pytest.fixture(scope="module")
def tagged_bundle(default_cross, tmp_path_factory):
    """The embedded default's encoder and decoder with a tagger trained for a few steps on
    a smoke build (what the command does, small)."""
    from soundflow.export.tagger_export import build
    from soundflow.train.data import shards
    from soundflow.train.data.recipe import load_recipe

    # built in this process (what `soundflow data build` calls; test_data_build runs the
    # command): two more processes would each pay Python's and the package index's start
    tmp = tmp_path_factory.mktemp("tagger")
    recipe = load_recipe("smoke")
    for name, seed, hours in (("train", 1, 0.03), ("dev", 2, 0.015)):
        shards.build(tmp / name, recipe, hours, seed)
    bundle = tmp / "src"  # without the default's own tagger, if it has one
    shutil.copytree(default_cross.spec.path, bundle)
    m = json.loads((bundle / "manifest.json").read_text())
    if "tagger" in m:
        del m["tagger"], m["files"]["tagger.onnx"]
        (bundle / "tagger.onnx").unlink()
        (bundle / "manifest.json").write_text(json.dumps(m))
    report = build(
        bundle,
        [tmp / "train"],
        tmp / "dev",
        tmp / "out",
        tmp / "cache",
        steps=10,  # the tests below set the thresholds they need: mechanics, not accuracy
        log=lambda *_: None,
    )
    assert 0.0 <= report["accuracy"] <= 1.0
    return tmp / "out"


def test_a_tagged_bundle_decides_alerts_without_the_decoder(tagged_bundle):
    from soundflow.runtime.kinds.whisper import CrossDecoderStream, CrossEngine
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.train.evaluate import run_stream

    eng = CrossEngine(tagged_bundle)
    spec = eng.spec.tagger
    assert spec is not None and spec.frames == 40 and set(spec.thresholds) <= set(spec.labels)
    stream = CrossDecoderStream(eng, RuntimeOptions.from_flags(mode="alert", threshold=0.0))
    assert stream.alerts is not None
    x = (np.random.default_rng(1).standard_normal(eng.spec.chunk_samples * 6) * 0.1).astype(
        np.float32
    )
    state = eng.new_state()
    for c in range(6):
        entry, state = eng.encode(x[c * 6400 : (c + 1) * 6400][None], state)
        d = stream.decide(entry)
        assert d.respond  # threshold 0: every label is ready
        first = stream.begin_response(0.4 * (c + 1))
        if c == 0:
            label = eng.spec.tag_ids[first][len("<alert:") : -1]
            assert list(stream.continue_response(first)) == [first, *spec.responses[label]]
    assert stream.calls == 0  # the decoder never ran
    # through the whole runtime: every response is an alert with its label's caption
    responses, summary = run_stream(eng, x, "alert", threshold=0.0)
    assert summary.error is None and responses
    captions = json.loads((tagged_bundle / "manifest.json").read_text())["tagger"]["alerts"]
    for r in responses:
        assert r.text == captions[r.alert]["caption"]
    # --alerts protocol: the decoder decides again
    proto = CrossDecoderStream(eng, RuntimeOptions.from_flags(mode="alert", alerts="protocol"))
    assert proto.alerts is None


def _gated(bundle: Path, out: Path, threshold: float) -> Path:
    """`bundle` with its speech gate's threshold set to `threshold`."""
    from soundflow.manifest import write_manifest

    shutil.copytree(bundle, out)
    m = json.loads((out / "manifest.json").read_text())
    m["tagger"]["speech"]["threshold"] = threshold
    write_manifest(out, {k: v for k, v in m.items() if k != "files"})
    return out


def test_the_speech_gate_skips_readings_it_heard_no_speech_in(tagged_bundle, tmp_path):
    """A gate that never opens makes no decoder call and captions nothing; one that is always
    open captions what --no-speech-gate does, reading for reading."""
    from soundflow.runtime.kinds.whisper import CrossDecoderStream, CrossEngine
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.train.data import espeak

    pcm, _ = espeak.synthesize("the kettle is boiling in the kitchen", espeak.Voice())
    x = np.concatenate([np.zeros(8000, np.float32), pcm, np.zeros(16000, np.float32)])
    m = json.loads((tagged_bundle / "manifest.json").read_text())
    assert m["tagger"]["labels"][-1] == "speech" and m["tagger"]["speech"]["window_chunks"] >= 2

    def captions(bundle: Path, gate: bool):
        eng = CrossEngine(bundle)
        # fast mode: at real time the readings' 50 ms deadline would cut them where the machine
        # is slow, and the gated and ungated runs could read different amounts of the window
        options = RuntimeOptions.from_flags(mode="transcribe", speech_gate=gate, realtime=False)
        stream = CrossDecoderStream(eng, options)
        assert (stream.captions.gate is not None) == gate
        state, out, calls = eng.new_state(), [], 0
        cs = eng.spec.chunk_samples
        for c in range(len(x) // cs):
            entry, state = eng.encode(x[c * cs : (c + 1) * cs][None], state)
            if stream.decide(entry).respond:
                out += stream._caption
            calls += stream.captions.step_calls
        return out, calls, stream.captions.skipped

    closed = _gated(tagged_bundle, tmp_path / "closed", 1.0)
    words, calls, skipped = captions(closed, True)
    every = m["decision"]["captions"]["every_chunks"]
    assert words == [] and calls == 0 and skipped == len(x) // 6400 // every  # every reading
    always = _gated(tagged_bundle, tmp_path / "open", 0.0)
    gated, _, skipped = captions(always, True)
    ungated, _, _ = captions(always, False)
    assert skipped == 0 and gated == ungated and gated  # it captions the sentence


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda t: t.update(frames=0), "tagger.frames"),
        (lambda t: t["alerts"]["x"].update(threshold=2.0), "tagger.alerts.x.threshold"),
        (lambda t: t.update(file="../tagger.onnx"), "outside the bundle"),
        (lambda t: t.update(source="present.9.encoder.value"), "not one of the encoder"),
        (lambda t: t.update(labels=["y", "speech"]), "not among its labels"),
        (lambda t: t["speech"].update(label="nope"), "tagger.speech.label"),
        (lambda t: t["speech"].update(threshold=-0.1), "tagger.speech.threshold"),
        (lambda t: t["speech"].update(window_chunks=0), "tagger.speech.window_chunks"),
        (lambda t: t.update(verify={"nope": {"threshold": 0.5, "words": ["a"]}}), "tagger.verify"),
        (lambda t: t.update(verify={"x": {"threshold": 0.5, "words": []}}), "tagger.verify.x"),
        (lambda t: t.update(verify={"x": {"threshold": 1.5, "words": ["a"]}}), "tagger.verify.x"),
    ],
)
def test_a_bad_tagger_section_is_refused(tagged_bundle, tmp_path, edit, words):
    from soundflow.manifest import write_manifest
    from soundflow.runtime.kinds.whisper import CrossEngine

    out = tmp_path / "b"
    shutil.copytree(tagged_bundle, out)
    m = json.loads((out / "manifest.json").read_text())
    t = m["tagger"]
    t["alerts"] = {"x": next(iter(t["alerts"].values()))}
    t["labels"] = ["x", *t["labels"][1:]]  # the first: the last is the speech gate's
    edit(t)
    write_manifest(out, {k: v for k, v in m.items() if k != "files"})
    with pytest.raises(BundleError, match=words.replace(".", r"\.")):
        CrossEngine(out)


def test_a_verified_label_alerts_where_whisper_reads_its_word(tagged_bundle, tmp_path):
    """tagger.verify through the runtime: a label that never passes its own threshold alerts
    on a spoken "help" once its word is the one read, and not when the word is another."""
    from soundflow.manifest import write_manifest
    from soundflow.runtime.kinds.whisper import CrossDecoderStream, CrossEngine
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.train.data import espeak

    pcm, _ = espeak.synthesize("help me please, somebody help", espeak.Voice())
    x = np.concatenate([np.zeros(8000, np.float32), pcm, np.zeros(16000, np.float32)])

    def alerts(words: list[str]) -> tuple[list[str], int]:
        out = tmp_path / words[0]
        shutil.copytree(tagged_bundle, out)
        m = json.loads((out / "manifest.json").read_text())
        label = next(iter(m["tagger"]["alerts"]))
        m["tagger"]["alerts"][label]["threshold"] = 1.0  # never on its own
        m["tagger"]["verify"] = {label: {"threshold": 0.0, "words": words}}
        write_manifest(out, {k: v for k, v in m.items() if k != "files"})
        eng = CrossEngine(out)
        stream = CrossDecoderStream(eng, RuntimeOptions.from_flags(mode="alert"))
        state, said, cs = eng.new_state(), [], eng.spec.chunk_samples
        for c in range(len(x) // cs):
            entry, state = eng.encode(x[c * cs : (c + 1) * cs][None], state)
            if stream.decide(entry).respond:
                first = stream.begin_response((c + 1) * cs / 16000)
                if first is not None:
                    said.append(eng.spec.tag_ids[first])
                    list(stream.continue_response(first))
        return said, stream.verified, label

    said, readings, label = alerts(["help"])
    assert readings > 0 and said and set(said) == {f"<alert:{label}>"}
    said, readings, _ = alerts(["zebra"])
    assert readings > 0 and said == []


def test_alerts_tagger_on_a_bundle_without_one_says_what_to_do(default_cross, tmp_path):
    from soundflow.runtime.kinds.whisper import CrossDecoderStream, CrossEngine
    from soundflow.runtime.options import RuntimeOptions

    bundle = tmp_path / "plain"
    shutil.copytree(default_cross.spec.path, bundle)
    m = json.loads((bundle / "manifest.json").read_text())
    if "tagger" in m:
        from soundflow.manifest import write_manifest

        del m["tagger"]
        (bundle / "tagger.onnx").unlink()
        write_manifest(bundle, {k: v for k, v in m.items() if k != "files"})
    with pytest.raises(BundleError, match="soundflow tagger"):
        CrossDecoderStream(
            CrossEngine(bundle), RuntimeOptions.from_flags(mode="alert", alerts="tagger")
        )


def test_alerts_tagger_on_a_decoder_only_bundle_is_refused(smoke_bundle):
    from soundflow.runtime.options import RuntimeOptions

    with pytest.raises(BundleError, match="only a Whisper-based bundle"):
        open_stream(
            open_engine(smoke_bundle), RuntimeOptions.from_flags(mode="alert", alerts="tagger")
        )


def test_tagger_command_errors_name_the_fix(smoke_bundle, default_cross, tmp_path):
    """A decoder-only bundle, a package that is not installed, a split that is not built:
    one line each, before any feature is computed."""
    from click.testing import CliRunner

    from soundflow.cli.main import cli

    data = tmp_path / "d"
    (data / "meta").mkdir(parents=True)
    (data / "streams.jsonl").write_text("")
    args = ["--data", str(data), "--dev", str(data), "--out", str(tmp_path / "o")]
    cases = (
        ([str(smoke_bundle), *args], "Whisper-based (whisper-cross)"),
        ([str(default_cross.spec.path), *args, "--negatives", "no-such-pkg"], "apt-get install"),
        ([str(default_cross.spec.path), "--data", str(tmp_path), "--dev", str(data),
          "--out", str(tmp_path / "o")], "soundflow data build"),
    )  # fmt: skip
    for argv, words in cases:
        res = CliRunner().invoke(cli, ["tagger", *argv])
        assert res.exit_code == 1 and words in res.output, res.output
    assert not (tmp_path / "o").exists()
