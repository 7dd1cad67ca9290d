"""Smoke-sized `soundflow bench` runs: each command produces well-formed results.
Shapes, keys and types only; timings are never asserted (CI machines are shared)."""

from __future__ import annotations

import json
import math

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
    assert not png.exists() or png.stat().st_size > 0


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
    from soundflow.train.smoke import write_toy_split

    data = write_toy_split(tmp_path / "eval", n_streams=1, seconds=4.0)
    r = _bench(tmp_path, "peer", "--bundle", str(smoke_bundle), "--data", str(data))
    assert r["streams"] == 1 and r["reference_words"] >= 0
    for k in ("soundflow", "pocketsphinx"):
        assert set(r[k]) >= {"wer", "realtime_factor", "chunk_ms_p50", "chunk_ms_p99"}
        assert r[k]["realtime_factor"] is None or _number(r[k]["realtime_factor"])


def test_bench_help_lists_commands():
    res = CliRunner().invoke(cli, ["bench", "--help"])
    assert res.exit_code == 0
    for name in ("latency", "scale", "size", "peer", "soak"):
        assert name in res.output
