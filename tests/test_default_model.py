"""The embedded default model's behaviour on audio it never trained on: a held-out sentence in
a held-out espeak-ng voice is captioned nearly word for word, and a minute of benign sound
raises no alert. (The doorbell onset test is in test_listen_cli.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from soundflow.runtime.kinds import open_engine
from soundflow.train.evaluate import edit_distance, normalize, run_stream

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(default_engine):
    e = default_engine  # the embedded default
    if e.spec.kind != "whisper-cross" or not e.spec.trained:
        pytest.skip("the embedded default is not the trained Whisper-based model")
    return e


_SPEAK = """
import json, sys
import numpy as np
from soundflow.train.data import espeak
text, voice = json.loads(sys.argv[1])
pcm, _ = espeak.synthesize(text, espeak.Voice(**voice))
np.save(sys.argv[2], pcm)
"""


def _speech(seed: int, tmp: Path) -> tuple[np.ndarray, str]:
    """A held-out sentence in a held-out voice, synthesized in a fresh process: libespeak-ng
    carries state from one call to the next (the same text comes out a few ms different
    after other speech), and these results must not depend on which tests ran first. The
    sentence and voice are drawn here: the child would spend ~6 s rebuilding the text pool."""
    import dataclasses
    import json

    from soundflow.train.data import espeak, natural

    if not natural.available():
        pytest.skip("natural text needs apt fortunes and wordnet-base")
    rng = np.random.default_rng(seed)
    words: list[str] = []
    while len(words) < 10:  # a sentence long enough for a WER to mean something
        words = natural.sentence(rng, "eval").split()
    text = " ".join(words)
    voice = dataclasses.asdict(espeak.sample_voice(rng, "eval"))
    out = tmp / f"speech-{seed}.npy"
    subprocess.run(
        [sys.executable, "-c", _SPEAK, json.dumps([text, voice]), str(out)],
        capture_output=True,
        check=True,
    )
    pcm = np.load(out)
    pad = np.zeros(8000, np.float32)
    return np.concatenate([pad, pcm, pad, pad]), text


# The targets of issue 12, asserted as they are and marked strict xfail while the shipped model
# misses them (strict: the day it meets one, the marker must go). Measured on the shipped
# bundle with window-agreement captions: WER 0.45 (seed 3: "it is loud in out and shape with my
# spirit and accountants") and 0.33 (seed 4: "the night player must cash the stealing object
# before it falls or pay for it"); the protocol's own captions had 0.36 and 0.40, and
# whole-utterance Whisper tiny.en itself gets 0.53 on seed 4: these espeak-ng eval voices are
# hard for Whisper. The same sentences in flite's held-out voices pass (the test after this).
MISSES = "the shipped whisper-tiny model misses this target (README, The default model)"


def _assert_captioned(engine, pcm: np.ndarray, text: str) -> None:
    """Transcribe mode prints `text` nearly word for word (WER <= 0.25, the issue's bar)."""
    responses, summary = run_stream(engine, pcm, "transcribe")
    assert summary.error is None
    hyp = [w for r in responses for w in normalize(r.text)]
    ref = normalize(text)
    wer = edit_distance(ref, hyp) / len(ref)
    assert wer <= 0.25, (text, " ".join(hyp), wer)


@pytest.mark.xfail(strict=True, reason=MISSES)
@pytest.mark.parametrize("seed", [3, 4])
def test_held_out_sentence_and_voice_are_captioned(engine, seed, tmp_path):
    pcm, text = _speech(seed, tmp_path)
    _assert_captioned(engine, pcm, text)


def _flite(seed: int, tmp: Path) -> tuple[np.ndarray, str]:
    """A held-out sentence (the natural-text eval pool) in a flite voice training never hears
    (train/heldout.py: rms, awb), with silence around it."""
    import shutil

    import soundfile as sf
    import soxr

    from soundflow.train.data import natural

    if shutil.which("flite") is None or not natural.available():
        pytest.skip("needs apt flite, fortunes and wordnet-base")
    rng = np.random.default_rng(seed)
    words: list[str] = []
    while len(words) < 10:
        words = natural.sentence(rng, "eval").split()
    text = " ".join(words)
    wav = tmp / f"flite-{seed}.wav"
    voice = ("rms", "awb")[seed % 2]
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(wav)], check=True)
    x, sr = sf.read(wav, dtype="float32")
    pcm = soxr.resample(x, sr, 16000).astype(np.float32)
    return np.concatenate([np.zeros(8000, np.float32), pcm, np.zeros(16000, np.float32)]), text


@pytest.mark.parametrize("seed", range(1, 7))
def test_held_out_sentence_in_a_held_out_flite_voice_is_captioned(engine, seed, tmp_path):
    """The issue's "done when": a sentence never trained on, in a voice never trained on,
    captioned nearly word for word (measured: WER 0, 0.21, 0.09, 0, 0.19, 0 for seeds 1-6)."""
    pcm, text = _flite(seed, tmp_path)
    _assert_captioned(engine, pcm, text)


def _trigrams(words: list[str]) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + 3]) for i in range(len(words) - 2)]


def test_no_caption_loops_and_alerts_open_with_a_label(engine, tmp_path):
    """The generation guards (runtime/kinds/whisper.py): a caption ends where it would repeat itself
    (unguarded, seed 14's sentence came out as "the funds in the factory is used the funds
    in the factory is used ..."), and in alert mode every response names a label.
    The same bundle with the guards off loops on some of these sentences, so this test can
    fail."""
    import json
    import shutil

    pcms = [_speech(seed, tmp_path)[0] for seed in (2, 14, 29)]

    def variant(name: str, **decision) -> Path:
        """The shipped bundle with the protocol's own captions (no window agreement) and
        `decision` changed."""
        out = tmp_path / name
        shutil.copytree(engine.spec.path, out)
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["decision"].pop("captions")
        # its readings, those confirming assist intents and the assist grammar's use the captions'
        # prompt
        manifest.get("tagger", {}).pop("verify", None)
        manifest["decision"].pop("verify", None)
        manifest["decision"].pop("assist", None)
        for k, v in decision.items():
            if v is None:
                manifest["decision"].pop(k, None)
            else:
                manifest["decision"][k] = v
        (out / "manifest.json").write_text(json.dumps(manifest))
        return out

    protocol = variant("protocol")
    loose = variant("loose", no_repeat_ngram=0, opens_with=None)

    def loops(eng) -> list[str]:
        responses = [r for pcm in pcms for r in run_stream(eng, pcm, "transcribe")[0]]
        return [
            r.text
            for r in responses
            if len(set(_trigrams(r.text.split()))) < len(_trigrams(r.text.split()))
        ]

    assert loops(engine) == []  # window-agreement captions (the shipped default)
    assert loops(open_engine(protocol)) == []
    assert loops(open_engine(loose)) != []  # what the guard is for
    responses, _ = run_stream(engine, pcms[1], "alert")
    assert all(r.alert for r in responses), [r.raw for r in responses]


def test_a_response_holds_one_tag(engine):
    """The first token of a response may be a tag; later ones may not (the decoder once
    answered "<intent:history><intent:history> yes earlier a phone ringing")."""
    from soundflow.runtime.kinds.whisper import CrossDecoderStream, CrossEngine
    from soundflow.runtime.options import RuntimeOptions

    stream = CrossDecoderStream(
        CrossEngine(engine.spec.path), RuntimeOptions.from_flags(mode="assist")
    )
    tag = next(i for i, t in stream.tag_ids.items() if t == "<intent:history>")
    logits = np.zeros(engine.spec.vocab, np.float32)
    logits[tag] = 10.0
    stream._response = []
    assert stream._next_token(logits) == tag  # opening a response: the tag
    assert stream._next_token(logits) not in stream.tag_ids  # after it: never another


def test_a_minute_of_benign_sound_raises_no_alert(engine, tmp_path):
    """Music, UI-like tones and room noise from the eval band (procedural, never trained
    on), and ordinary speech: alert mode must stay silent for the whole minute."""
    from soundflow.train.data import procedural

    rng = np.random.default_rng(11)
    parts = [procedural.music(procedural.Params(rng, "eval"))[: 20 * 16000]]
    parts.append((rng.standard_normal(10 * 16000) * 0.01).astype(np.float32))
    speech, _ = _speech(5, tmp_path)
    parts.append(0.5 * speech)
    t = np.arange(16000 * 3) / 16000
    chime = 0.2 * np.sin(2 * np.pi * 660 * t) * np.exp(-3 * (t % 1.0))  # soft UI chimes
    parts.append(chime.astype(np.float32))
    pcm = np.concatenate(parts)
    pcm = np.concatenate([pcm, np.zeros(max(0, 60 * 16000 - len(pcm)), np.float32)])
    responses, summary = run_stream(engine, pcm[: 60 * 16000].astype(np.float32), "alert")
    assert summary.error is None
    assert [r.raw for r in responses] == []


def test_the_speech_gate_reads_no_window_of_benign_sound(engine):
    """Transcribe mode on 33 s of procedural music, room noise and UI chimes (the eval band,
    never trained on, no speech): the shipped speech gate skips every window reading, so
    the decoder is never called and nothing is captioned; without the gate Whisper reads
    each window (measured: 49 decoder calls, and a few words nobody said)."""
    from soundflow.runtime.kinds.whisper import CrossDecoderStream, CrossEngine
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.train.data import procedural

    rng = np.random.default_rng(11)
    t = np.arange(16000 * 3) / 16000
    chime = 0.2 * np.sin(2 * np.pi * 660 * t) * np.exp(-3 * (t % 1.0))
    pcm = np.concatenate(
        [
            procedural.music(procedural.Params(rng, "eval"))[: 20 * 16000],
            rng.standard_normal(10 * 16000) * 0.01,
            chime,
        ]
    ).astype(np.float32)
    eng = CrossEngine(engine.spec.path)
    cs = eng.spec.chunk_samples

    def run(gate: bool) -> tuple[int, list[int], int]:
        stream = CrossDecoderStream(
            eng, RuntimeOptions.from_flags(mode="transcribe", speech_gate=gate)
        )
        state, calls, said = eng.new_state(), 0, []
        for c in range(len(pcm) // cs):
            entry, state = eng.encode(pcm[c * cs : (c + 1) * cs][None], state)
            if stream.decide(entry).respond:
                said += stream._caption
            calls += stream.captions.step_calls
        return calls, said, stream.captions.skipped

    calls, said, skipped = run(True)
    every = eng.spec.manifest["decision"]["captions"]["every_chunks"]
    assert calls == 0 and said == [] and skipped == len(pcm) // cs // every  # every reading
    calls, _, skipped = run(False)
    assert calls > 0 and skipped == 0


def test_listen_captions_flag_picks_the_caption_method(engine, tmp_path):
    """`soundflow listen --captions`: the manifest's agreement captions by default, the
    protocol's own responses with `--captions protocol` (they differ on this sentence: the
    protocol waits until a phrase ends, agreement emits words as two readings confirm them)."""
    import json

    import soundfile as sf
    from click.testing import CliRunner

    from soundflow.cli.main import cli

    pcm, text = _flite(4, tmp_path)
    wav = tmp_path / "speech.wav"
    sf.write(wav, pcm, 16000)

    def responses(*flags: str) -> list[dict]:
        args = ["listen", "--input", str(wav), "--mode", "transcribe", "--fast", "--jsonl"]
        res = CliRunner().invoke(cli, [*args, *flags], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        events = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
        return [e for e in events if e["type"] == "response"]

    agreement, protocol = responses(), responses("--captions", "protocol")
    said = [w for e in agreement for w in normalize(e["text"])]
    assert edit_distance(normalize(text), said) / len(normalize(text)) <= 0.25
    assert len(agreement) > len(protocol) >= 1
