"""The clip library: the curated label table is well formed, and user corpora load through
the same index (ESC-50-style CSV, LibriSpeech-style folders, JSONL manifests)."""

import json
import re

import numpy as np
import pytest
import soundfile as sf

from soundflow.audio import SAMPLE_RATE
from soundflow.train.data import espeak, library, shards
from soundflow.train.data.library import CATEGORIES, Library
from soundflow.train.data.recipe import Recipe, load_recipe


def test_label_table_is_curated_and_complete():
    rows = library.load_label_table()
    assert rows
    for r in rows:
        assert r["license"], r
        if not r["label"]:  # an exclusion row
            continue
        assert re.fullmatch(r"[a-z0-9_]+", r["label"]) and r["category"] in CATEGORIES, r
        assert r["alert"] in ("0", "1") and r["caption"], r
    # train/data/README.md excludes these recordings from sound-theme-freedesktop.
    excluded = {r["pattern"] for r in rows if not r["label"]}
    assert {"stereo/audio-channel-*", "stereo/audio-test-signal.oga"} <= excluded


def test_missing_packages_fall_back_and_say_so():
    table = [
        {
            "package": "no-such-package-xyz",
            "pattern": "*",
            "label": "bell",
            "category": "Daily",
            "tags": "",
            "alert": "0",
            "caption": "a bell",
            "license": "x",
            "note": "",
        }
    ]
    clips, missing = library.package_clips(table)
    assert clips == [] and missing == ["no-such-package-xyz"]


@pytest.fixture()
def corpora(tmp_path):
    rng = np.random.default_rng(0)
    esc = tmp_path / "esc"
    (esc / "meta").mkdir(parents=True)
    (esc / "audio").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for k, (cls, target) in enumerate(
        [("siren", 42), ("dog", 0), ("crying_baby", 20), ("rain", 10)]
    ):
        name = f"{k + 1}-{k}-A-{target}.wav"
        sf.write(esc / "audio" / name, rng.standard_normal(44100).astype(np.float32) * 0.1, 44100)
        rows.append(f"{name},{5 if k == 3 else 1},{target},{cls},False,{k},A")
    (esc / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    libri = tmp_path / "libri" / "19" / "198"
    libri.mkdir(parents=True)
    lines = []
    for k, text in enumerate(["the cat sat on the mat", "we walked home in the rain"] * 3):
        audio, _ = espeak.synthesize(text, espeak.Voice())
        sf.write(libri / f"19-198-{k:04d}.flac", audio, SAMPLE_RATE)
        lines.append(f"19-198-{k:04d} {text.upper()}")
    (libri / "19-198.trans.txt").write_text("\n".join(lines) + "\n")
    manifest = tmp_path / "m.jsonl"
    sf.write(tmp_path / "beep.wav", np.sin(np.arange(8000) / 3).astype(np.float32), 8000)
    manifest.write_text(
        json.dumps(
            {
                "path": "beep.wav",
                "label": "timer_beep",
                "category": "Equipment",
                "tags": ["beep"],
                "caption": "a timer beeping",
            }
        )
        + "\n"
    )
    return esc / "meta" / "esc50.csv", tmp_path / "libri", manifest


def test_corpus_loaders(corpora):
    esc_csv, libri, manifest = corpora
    esc = library.esc50_clips(esc_csv)
    by = {c.tags[0]: c for c in esc}
    assert (
        by["siren"].alert and by["siren"].label == "siren" and by["crying_baby"].label == "baby_cry"
    )
    assert not by["dog"].alert and by["rain"].split == "eval"  # fold 5 is held out
    speech = library.librispeech_clips(libri)
    assert (
        len(speech) == 6
        and speech[0].text == "the cat sat on the mat"
        and speech[0].category == "Speech"
    )
    (m,) = library.manifest_clips(manifest)
    assert m.label == "timer_beep" and m.tags == ("beep",)
    x = Library([m], m.split).load(m, np.random.default_rng(0))
    assert len(x) == 16000 and x.dtype == np.float32  # 8 kHz file resampled to 16 kHz
    bad = manifest.parent / "bad.jsonl"
    bad.write_text(json.dumps({"path": "beep.wav", "label": "x", "category": "Beeps"}) + "\n")
    with pytest.raises(ValueError, match="category"):
        library.manifest_clips(bad)


def test_corpora_ground_streams(corpora, tmp_path):
    esc_csv, libri, _ = corpora
    base = load_recipe("smoke").to_dict()
    base.update(
        corpora=[
            {"kind": "esc50", "path": str(esc_csv)},
            {"kind": "librispeech", "path": str(libri)},
        ],
        scenarios=["street_crossing"],
        task_shares={"speech": 0.6, "alert": 0.4},
    )
    recipe = Recipe.from_dict(base)
    shards.build(tmp_path / "d", recipe, 2 / 60, seed=1)
    streams = list(shards.iter_streams(tmp_path / "d", load_audio=False))
    sources = {e["source"].split(":")[0] for s in streams for e in s["events"]}
    assert "librispeech" in sources and "esc50" in sources
    est = [w for s in streams for w in s["words"] if w.get("timing") == "estimated"]
    assert est and all(w["end"] > w["start"] for w in est)


def test_eval_never_asks_for_a_class_train_cannot_teach():
    def clip(cid, label, split):
        return library.Clip(id=cid, source="deb:x", label=label, category="Traffic", split=split)

    clips = [
        clip("a", "horn", "train"),
        clip("b", "horn", "eval"),  # a class with train files: stays in eval
        clip("c", "bell", "eval"),  # its only file hashed into eval: nothing could teach it
    ]
    ev, tr = Library(clips, "eval"), Library(clips, "train")
    assert [c.id for c in ev] == ["b"] and [c.id for c in tr] == ["a"]
    assert any("bell" in n for n in ev.notes)
    default_eval, default_train = Library.default("eval"), Library.default("train")
    assert {c.label for c in default_eval} <= {c.label for c in default_train}
