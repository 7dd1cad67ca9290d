"""Smoke-sized `soundflow bench` runs: each command produces well-formed results.
Shapes, keys and types only; timings are never asserted (CI machines are shared)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from soundflow.cli.main import cli


def _bench(tmp_path, *args) -> dict:
    out = tmp_path / f"{args[0]}.json"
    res = CliRunner().invoke(cli, ["bench", *args, "--json", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["meta"]["machine"]["cores"] >= 1
    return result


def _number(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def test_bench_latency(smoke_bundle, tmp_path):
    r = _bench(tmp_path, "latency", "--bundle", str(smoke_bundle), "--seconds", "2", "--no-png")
    for key in ("fifo", "sync"):
        d = r[key]
        for k in ("decision_ms_p50", "decision_ms_p99", "stall_rate", "cpu_percent", "rss_mb"):
            assert _number(d[k]), (key, k, d[k])
        assert d["first_token_ms_p50"] is None or _number(d["first_token_ms_p50"])
        assert isinstance(d["overruns"], int) and d["chunks"] == 5
        assert len(r["series"][key]["decision_ms"]) == d["chunks"]
    assert r["fifo"]["scheduling"] == "async" and r["sync"]["scheduling"] == "sync"


def test_bench_latency_streams_a_file_looped_to_its_length(smoke_bundle, tmp_path):
    """--input: a real recording (here 0.9 s) instead of the tones, looped to --seconds."""
    import soundfile as sf

    from soundflow.benchmarks.latency import file_pcm

    wav = tmp_path / "short.wav"
    tone = np.sin(np.arange(14400) * 0.2).astype(np.float32) * 0.3
    sf.write(wav, tone, 16000)
    pcm = file_pcm(str(wav), 2.0)
    assert len(pcm) == 32000 and np.array_equal(pcm[14400:28800], pcm[:14400])
    args = ("--bundle", str(smoke_bundle), "--seconds", "2", "--no-png", "--input", str(wav))
    r = _bench(tmp_path, "latency", *args)
    assert r["options"]["source"].startswith(str(wav)) and r["fifo"]["chunks"] == 5


def test_bench_scale(smoke_bundle, tmp_path):
    r = _bench(tmp_path, "scale", "--bundle", str(smoke_bundle), "--minutes", "0.1")
    c, rc = r["cached"], r["recompute"]
    assert len(c["minutes"]) == len(c["per_chunk_ms"]) >= 2
    assert c["minutes"] == sorted(c["minutes"])
    assert all(_number(x) for x in c["per_chunk_ms"]) and _number(c["end_to_start_ratio"])
    assert len(rc["minutes"]) == len(rc["per_chunk_ms"]) >= 1
    assert set(rc["minutes"]) <= set(c["minutes"])
    lay = r["layouts"]
    assert len(lay["cache_tokens"]) == len(lay["fixed_inplace_ms"]) == len(lay["growing_copy_ms"])
    png = tmp_path / "scale.png"  # written when matplotlib is installed
    from soundflow.benchmarks.common import pyplot

    if pyplot() is None:
        assert not png.exists()
    else:
        assert png.stat().st_size > 1000  # a real image, not an empty file


def test_bench_soak(smoke_bundle, tmp_path):
    r = _bench(
        tmp_path, "soak", "--bundle", str(smoke_bundle), "--hours", "0.01", "--sample-every", "6"
    )
    assert r["chunks"] == 90
    assert _number(r["rss_growth_mb"]) and _number(r["rss_mb_end"])
    s = r["series"]
    assert len(s["stream_s"]) == len(s["rss_mb"]) >= 2 and s["stream_s"] == sorted(s["stream_s"])
    for k in ("alert_first_window", "alert_last_window"):
        assert {"precision", "recall", "false_alerts_per_hour"} <= set(r[k])
    assert r["alert_first_window"]["to_s"] <= r["alert_last_window"]["from_s"]


@pytest.mark.slow
def test_bench_size_tiny(tmp_path):
    pytest.importorskip("torch")
    r = _bench(
        tmp_path,
        "size",
        "--sizes",
        "tiny",
        "--work",
        str(tmp_path / "work"),
        "--vocab",
        "512",
        "--seconds",
        "2",
        "--tokens",
        "4",
    )
    entry = r["sizes"]["tiny"]
    assert entry["vocab"] == 512 and entry["parameters"]["total"] > 0
    assert set(entry["variants"]) == {"fp32", "int8"}
    for d in entry["variants"].values():
        for k in ("decode_tokens_per_s", "decision_ms_p50", "rss_mb_loaded", "overhead_percent"):
            assert _number(d[k]), (k, d[k])


def test_bench_peer(smoke_bundle, tmp_path):
    pytest.importorskip(
        "pocketsphinx", reason="the peer benchmark needs pip install 'soundflow[bench]'"
    )
    from soundflow.train.evaluate import normalize
    from soundflow.train.smoke import write_toy_split

    data = write_toy_split(tmp_path / "eval", n_streams=1, seconds=4.0)
    record = json.loads((data / "streams.jsonl").read_text().splitlines()[0])
    words = sum(len(normalize(w["word"])) for w in record["words"])
    args = ("--bundle", str(smoke_bundle), "--data", str(data), "--sets", "eval")
    r = _bench(tmp_path, "peer", *args)
    e = r["sets"]["eval"]
    assert e["streams"] == 1 and r["skipped"] == {} and words > 0
    assert [(row["set"], row["system"]) for row in r["table"]] == [
        ("eval", "soundflow"),
        ("eval", "pocketsphinx"),
    ]
    for k in ("soundflow", "pocketsphinx"):
        assert e[k]["words"] == words and e[k]["edits"] >= 0
        assert e[k]["wer"] == round(e[k]["edits"] / words, 4)
        for key in ("realtime_factor", "chunk_ms_p50", "chunk_ms_p99"):
            assert _number(e[k][key]) and e[k][key] > 0, (k, key, e[k][key])


# --- held-out sets (train/heldout.py) ----------------------------------------------------


def _tuxpaint():
    from soundflow.train import heldout

    if not heldout.TUXPAINT_DIR.is_dir():
        pytest.skip(f"{heldout.TUXPAINT_DIR} absent: apt-get install tuxpaint-stamps-default")
    return heldout


def test_tuxpaint_set_finds_clips_and_references():
    heldout = _tuxpaint()
    clips = heldout.tuxpaint_clips()
    assert len(clips) >= 20
    for path, text in clips:
        assert path.name.endswith("_desc.ogg") and "_desc_" not in path.name, path
        assert path.with_name(path.name.replace("_desc.ogg", ".txt")).is_file()
        assert text and "utf8=" not in text and text == text.strip(), (path, text)
    refs = {p.name: t for p, t in clips}
    if "kangaroo_desc.ogg" in refs:  # its first line ("A red kangaroo."), less the article
        assert refs["kangaroo_desc.ogg"].lower() == "red kangaroo."
    # the recordings say the noun without the label's article
    assert not any(t.lower().startswith(("a ", "an ", "the ")) for t in refs.values()), refs
    assert heldout.tuxpaint_reference("An owl.") == "owl."
    assert heldout.tuxpaint_reference("Two wild boars.") == "Two wild boars."
    assert heldout.tuxpaint_reference("Theatre.") == "Theatre."  # a word, not an article
    x = heldout.read_16k(clips[0][0])
    assert x.dtype == np.float32 and x.ndim == 1 and 0.2 < len(x) / 16000 < 20
    assert np.abs(x).max() <= 1.0 and np.sqrt(np.mean(x**2)) > 1e-3  # speech, not silence


def test_eval_spans_hear_every_speech_event_once():
    """The whole-utterance reference on the eval split hears each speech event, padded,
    in time order; overlapping events (a recipe's overlap_prob) as one span."""
    from soundflow.train import heldout

    sr, pad = 16000, heldout.EVAL_PAD_S
    events = [
        {"start": 5.0, "end": 6.0, "text": "b"},
        {"start": 1.0, "end": 2.0, "text": "a"},
        {"start": 5.5, "end": 7.0, "text": "c"},  # overlaps b
        {"start": 9.9, "end": 10.5, "text": "d"},  # runs past the stream's end
    ]
    spans = heldout._spans(events, 10 * sr)
    assert spans == (
        (int((1.0 - pad) * sr), int((2.0 + pad) * sr)),
        (int((5.0 - pad) * sr), int((7.0 + pad) * sr)),
        (int((9.9 - pad) * sr), 10 * sr),
    )


def test_tuxpaint_sounds_set_places_every_sound_in_quiet():
    """The held-out alert set: stamp and interface sounds, no speech, each after a quiet gap,
    its event where its samples are."""
    heldout = _tuxpaint()
    clips = heldout.tuxpaint_sound_clips()
    assert len(clips) >= 50
    assert not [p for p, _ in clips if "_desc" in p.name or "symbols" in p.parts]
    assert [lab for _, lab in clips if lab] == ["siren"]  # the fire truck
    streams = heldout.sound_streams(clips[:12], "t")
    events = [e for s in streams for e in s["events"]]
    assert len(events) == 12
    for s in streams:
        x = s["samples"]
        for e in s["events"]:
            a, b = int(e["start"] * 16000), int(e["end"] * 16000)
            assert np.abs(x[a - 16000 : a - 8000]).max() < 0.01  # quiet before it
            assert np.abs(x[a:b]).max() > 0.01  # the sound itself


def test_bench_alerts(smoke_bundle, tmp_path):
    """Both alert paths where the bundle has a tagger; the protocol's alone otherwise."""
    _tuxpaint()
    result = _bench(tmp_path, "alerts", "--tuxpaint-sounds", "--bundle", str(smoke_bundle))
    assert [row["path"] for row in result["table"]] == ["protocol"]
    row = result["table"][0]
    assert row["benign_sounds"] >= 50 and row["alert_sounds"] == 1
    assert 0 <= row["benign_alerted"] <= row["benign_sounds"] and _number(row["false_per_hour"])
    # transcribe mode on the same speechless streams (a bundle without a speech gate)
    (cap,) = result["captions"]
    assert cap["speech_gate"] is None and cap["words"] >= 0 and _number(cap["words_per_hour"])


def test_flite_set_builds_plausible_audio():
    from soundflow.train import heldout
    from soundflow.train.data import natural
    from soundflow.train.evaluate import normalize

    if shutil.which("flite") is None:
        pytest.skip("flite absent: apt-get install flite")
    if not natural.available():
        pytest.skip("no natural-text pool: apt-get install fortunes wordnet-base")
    sentences = heldout.flite_sentences()
    assert sentences == heldout.flite_sentences()  # a fixed draw
    assert len(set(sentences)) == heldout.FLITE_SENTENCES
    assert set(sentences) <= set(natural.sentences("eval"))
    assert not set(sentences) & set(natural.sentences("train"))
    utts = heldout.flite_utterances(n=4)
    assert [v for _, _, v in utts] == ["rms", "awb", "rms", "awb"]
    for x, text, _ in utts:
        seconds, n = len(x) / 16000, len(normalize(text))
        assert 0.15 * n < seconds < 1.0 * n + 1.0, (text, seconds)  # ~2-5 words a second
        assert np.sqrt(np.mean(x**2)) > 1e-3
    (stream,) = heldout.pack("flite", [(x, t) for x, t, _ in utts])
    gaps = (len(utts) + 1) * int(heldout.GAP_S * 16000)
    assert len(stream.samples) == sum(len(x) for x, _, _ in utts) + gaps
    assert stream.utterances == 4 and stream.reference == [
        w for _, t, _ in utts for w in normalize(t)
    ]


def test_bench_peer_tuxpaint_cli(tmp_path, monkeypatch):
    """The embedded default bundle and pocketsphinx on one real-speech stream: the set's
    first 20 clips (a 37 s stream, not its 60 s one: the offline Whisper row pads each clip
    to 30 s of features), a second stream after it that --max-streams leaves out."""
    pytest.importorskip(
        "pocketsphinx", reason="the peer benchmark needs pip install 'soundflow[bench]'"
    )
    heldout = _tuxpaint()
    clips = [(heldout.read_16k(p), text) for p, text in heldout.tuxpaint_clips()[:24]]
    streams = heldout.pack("tuxpaint", clips[:20]) + heldout.pack("tuxpaint", clips[20:])
    first = heldout.tuxpaint_streams()[0]  # the set's own first stream begins the same
    n = len(streams[0].samples) - int(heldout.GAP_S * 16000)
    assert np.array_equal(first.samples[:n], streams[0].samples[:n])
    assert first.reference[: len(streams[0].reference)] == streams[0].reference
    monkeypatch.setattr(heldout, "tuxpaint_streams", lambda: streams)
    out = tmp_path / "peer.json"
    res = CliRunner().invoke(
        cli,
        ["bench", "peer", "--sets", "tuxpaint", "--max-streams", "1", "--json", str(out)],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    for system in ("soundflow", "pocketsphinx"):
        assert any(line.split()[:2] == ["tuxpaint", system] for line in lines), res.output
    r = json.loads(out.read_text())
    rows = {row["system"]: row for row in r["table"]}
    # the offline Whisper reference runs wherever the train extra is installed (as here)
    offline = {"whisper-offline"} if "skipped" not in r["whisper_offline"] else set()
    assert set(rows) == {"soundflow", "pocketsphinx"} | offline, r["whisper_offline"]
    assert r["sets"]["tuxpaint"]["streams"] == 1 and len(streams) == 2
    for row in rows.values():
        assert row["set"] == "tuxpaint" and row["utterances"] == 20 and row["words"] >= 10
        assert _number(row["wer"]) and row["wer"] >= 0
    # it recognises real speech (its WER can pass 100 %: one-word clips, many insertions)
    (ex,) = r["sets"]["tuxpaint"]["examples"]
    heard = set(ex["pocketsphinx"].split()) & set(ex["reference"].split())
    assert len(heard) >= 3, ex


def test_bench_peer_skips_missing_source_and_rejects_unknown_set(tmp_path):
    pytest.importorskip(
        "pocketsphinx", reason="the peer benchmark needs pip install 'soundflow[bench]'"
    )
    res = CliRunner().invoke(cli, ["bench", "peer", "--sets", "eval"])
    assert res.exit_code == 1, res.output
    assert "skipped eval: no --data given" in res.output and "Traceback" not in res.output
    assert "no set could be scored" in res.output
    res = CliRunner().invoke(cli, ["bench", "peer", "--sets", "tuxpaint,nope"])
    assert res.exit_code == 2 and "unknown set nope" in res.output


def test_library_refuses_held_out_sources(tmp_path):
    from soundflow.train.data.library import Clip, HeldOutError, Library
    from soundflow.train.heldout import HELD_OUT, held_out_source

    assert set(HELD_OUT) == {"tuxpaint", "flite", "widelands", "minetest", "asterisk"}
    bed = "/usr/share/games/widelands/data/sound/barbarians/taverns/inn_01.ogg"
    assert held_out_source(bed) == "widelands"
    assert held_out_source(None, "deb:minetest-data") == "minetest"
    tux = "/usr/share/tuxpaint/stamps/animals/marsupials/kangaroo_desc.ogg"
    assert held_out_source(tux) == "tuxpaint"
    assert held_out_source("/data/x.ogg", "deb:tuxpaint-stamps-default") == "tuxpaint"
    assert held_out_source(None, "flite:rms") == "flite"
    assert held_out_source("/usr/share/sounds/alsa/Front_Center.wav", "deb:alsa-utils") is None

    def speech(cid, path, source="manifest"):
        return Clip(cid, source, "speech", "Speech", path=path, split="train", text="a frog")

    ok = speech("ok", str(tmp_path / "ok.wav"))
    held = [
        speech("tux", tux),
        speech("copied", str(tmp_path / "tuxpaint" / "frog_desc.ogg")),
        speech("pkg", str(tmp_path / "a.ogg"), source="deb:tuxpaint-data"),
        speech("voice", None, source="flite:awb"),
    ]
    lib = Library([ok, *held], "train")
    assert [c.id for c in lib] == ["ok"]
    assert any("held-out" in n and "tuxpaint (3 clips)" in n for n in lib.notes), lib.notes
    for clip in held:
        with pytest.raises(HeldOutError, match="held out of training"):
            lib.load(clip, np.random.default_rng(0))
    # and nothing the real index holds today is a held-out clip
    real = Library.default("train")
    assert not [c.id for c in real if held_out_source(c.path, c.source)]


def test_serve_speech_sends_whole_repetitions_and_their_words():
    """The bench's audio is whole clips then a whole-sentence head then silence, so the
    reference is exactly the words sent; a clip longer than `seconds` is still sent whole."""
    from soundflow.benchmarks.serve import CHUNK, assemble, table, wer

    clip = np.ones(10000, np.float32)
    heads = [(np.full(1500, 2, np.float32), ["a"]), (np.full(3000, 3, np.float32), ["a", "b"])]
    pcm, words, reps = assemble(2.0, clip, ["a", "b", "c"], heads)  # 5 chunks: 32000
    assert (len(pcm), reps) == (5 * CHUNK, 3)
    assert words == ["a", "b", "c"] * 3 + ["a"]  # 2000 samples left: only the short head
    assert (pcm[:30000] == 1).all() and (pcm[30000:31500] == 2).all()
    assert (pcm[31500:] == 0).all()
    pcm, words, reps = assemble(0.5, clip, ["a"], [])  # one clip needs 2 chunks
    assert (len(pcm), reps, words) == (2 * CHUNK, 1, ["a"])
    assert (pcm[10000:] == 0).all()
    pooled, worst = wer([["a", "b"], ["a", "b", "c", "d"]], [["a", "b"], ["a"]])
    assert (pooled, worst) == (0.5, 0.75)
    row = {"batch": "off", "streams": 1, "held_realtime": 1, "decision_p50_ms": 1.0}
    row |= {"decision_p99_ms": 2.0, "cpu_pct": 3.0, "rss_mb": 4.0}
    assert "WER" not in table({"rows": [row | {"wer": None, "wer_worst": None}]})
    assert "| 25.0% | 50.0% |" in table({"rows": [row | {"wer": 0.25, "wer_worst": 0.5}]})

    if not shutil.which("espeak-ng"):
        return
    from soundflow.benchmarks.serve import SPEECH, speech
    from soundflow.train.evaluate import normalize

    pcm, words, reps = speech(40)
    assert len(pcm) == 40 * 16000 and reps >= 2
    head = words[reps * len(normalize(SPEECH)) :]
    assert words[: len(words) - len(head)] == normalize(SPEECH) * reps
    assert 0 < len(head) < len(normalize(SPEECH)) and head == normalize(SPEECH)[: len(head)]
    assert np.abs(pcm[-16000:]).max() == 0  # the last words are followed by silence


def test_bench_serve_scores_captions():
    """A real server (the embedded default) and one real-time stream in transcribe mode:
    its captions are scored against the words of the one whole repetition it sent."""
    pytest.importorskip("websockets")
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (scripts/setup-dev.sh installs it)")
    from soundflow.benchmarks import serve as sv

    text = "The kitchen lights are on. Please tell me the time."
    result = sv.run(None, [1], 4, ["off"], "transcribe", log=lambda *_: None, text=text)
    assert result["repetitions"] == 1 and result["reference_words"] == 10
    (row,) = result["rows"]
    assert row["responses"] >= 1
    assert _number(row["wer"]) and 0 <= row["wer"] <= 1.5 and row["wer_worst"] == row["wer"]
    assert "| WER | worst |" in sv.table(result)
    assert row["captions_skipped"] == 0 and _number(row["caption_lag_p95_ms"])
    (cap,) = result["capacity"]
    assert cap["tried"] == [1] and cap["largest_held"] in (0, 1)


def test_bench_serve_alert_streams_by_the_audioset_branch():
    """Two real-time alert streams decided by the AudioSet branch (a hello option) against
    a real server: held, and no error."""
    pytest.importorskip("websockets")
    from soundflow.benchmarks import serve as sv

    result = sv.run(None, [2], 3, ["off"], "alert", log=lambda *_: None, alerts="audioset")
    (row,) = result["rows"]
    assert result["alerts"] == "audioset" and row["chunks"] >= 2 * 7
    assert row["held_realtime"] == 2 and row["overruns"] == 0


def test_bench_serve_capacity_is_the_largest_count_held_within_the_wer_slack():
    from soundflow.benchmarks.serve import capacities, table

    def row(n, held, stalls, wer, cpu, rss, workers=1):
        return {"batch": "off", "workers": workers, "streams": n, "held_realtime": held,
                "stalls": stalls, "wer": wer, "cpu_pct": cpu, "rss_mb": rss,
                "decision_p50_ms": 1.0, "decision_p99_ms": 2.0}  # fmt: skip

    rows = [row(1, 1, 0, 0.10, 14.0, 350.0), row(4, 4, 0, 0.12, 48.0, 410.0),
            row(8, 8, 0, 0.13, 96.0, 490.0),  # WER 1.3x the one stream's: not held
            row(12, 11, 40, 0.30, 150.0, 600.0),
            row(1, 1, 0, 0.10, 12.0, 350.0, 2), row(8, 8, 0, 0.11, 80.0, 500.0, 2)]  # fmt: skip
    one, two = capacities(rows)
    assert (one["workers"], one["largest_held"], one["tried"]) == (1, 4, [1, 4, 8, 12])
    assert one["cpu_per_stream_8_vs_fewest"] == round(12.0 / 14.0, 3)
    assert one["rss_mb_per_added_stream"][4] == 20.0 and one["rss_mb_fewest"] == 350.0
    assert (two["workers"], two["largest_held"]) == (2, 8)
    assert "held at real time up to 8 of [1, 8] streams" in table({"rows": rows})


def test_bench_help_lists_commands():
    res = CliRunner().invoke(cli, ["bench", "--help"])
    assert res.exit_code == 0
    for name in ("latency", "scale", "size", "peer", "alerts", "soak", "serve"):
        assert name in res.output
