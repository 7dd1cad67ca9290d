"""Shard building: same seed -> same bytes, resumable, shardable, mergeable, streamable."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from soundflow.cli.data_cmd import data
from soundflow.train.data import shards
from soundflow.train.data.recipe import load_recipe

HOURS = 1.5 / 60  # the smoke recipe: 20-40 s streams, so 2-4 of them


def shard_bytes(d: Path) -> dict[str, bytes]:
    files = [d / "streams.jsonl"] + sorted((d / "audio").glob("*.flac"))
    return {f.name: f.read_bytes() for f in files}


@pytest.fixture(scope="module")
def smoke():
    return load_recipe("smoke")


@pytest.fixture(scope="module")
def built(tmp_path_factory, smoke):
    out = tmp_path_factory.mktemp("a")
    shards.build(out, smoke, HOURS, seed=7)
    return out


def test_same_seed_same_bytes(built, smoke, tmp_path):
    shards.build(tmp_path, smoke, HOURS, seed=7, workers=2)  # parallel must not change bytes
    assert shard_bytes(tmp_path) == shard_bytes(built)
    other = tmp_path / "other"
    shards.build(other, smoke, HOURS, seed=8)
    assert shard_bytes(other)["streams.jsonl"] != shard_bytes(built)["streams.jsonl"]


def test_resume_after_interruption(built, smoke, tmp_path):
    shards.build(tmp_path, smoke, HOURS, seed=7)
    # Interrupt: one stream lost its completion marker, another left a half-written tmp.
    (tmp_path / "meta" / "train-000001.json").unlink()
    (tmp_path / "audio" / "train-000001.flac").write_bytes(b"truncated")
    (tmp_path / "streams.jsonl").unlink()
    done = []
    shards.build(tmp_path, smoke, HOURS, seed=7, progress=lambda d, n: done.append(d))
    assert done[0] == len(shard_bytes(built)) - 2  # all but the lost stream were skipped
    assert shard_bytes(tmp_path) == shard_bytes(built)
    with pytest.raises(shards.ShardError, match="seed"):
        shards.build(tmp_path, smoke, HOURS, seed=9)


def test_shards_partition_and_merge(built, smoke, tmp_path):
    parts = [tmp_path / f"s{i}" for i in range(2)]
    for i, p in enumerate(parts):
        shards.build(p, smoke, HOURS, seed=7, shard=(i, 2))
    ids = [set(json.loads((p / "build.json").read_text())["streams"]) for p in parts]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    merged = tmp_path / "all"
    shards.merge(parts, merged)
    assert shard_bytes(merged) == shard_bytes(built)
    with pytest.raises(shards.ShardError, match="exactly once"):
        shards.merge(parts[:1], tmp_path / "bad")


def test_iter_streams_yields_contract_records(built):
    n = 0
    for s in shards.iter_streams(built):
        n += 1
        assert {
            "id",
            "audio",
            "sample_rate",
            "duration",
            "split",
            "scenario",
            "seed",
            "events",
            "words",
            "targets",
        } <= set(s)
        assert set(s["targets"]) == {"transcribe", "alert", "assist"}
        assert abs(len(s["samples"]) / s["sample_rate"] - s["duration"]) < 1e-3
        assert s["samples"].dtype.name == "float32" and abs(s["samples"]).max() <= 1.0
    assert n == len(json.loads((built / "build.json").read_text())["streams"])


def test_cli_build_and_inspect(tmp_path):
    runner = CliRunner()
    out = tmp_path / "d"
    res = runner.invoke(
        data, ["build", "--recipe", "smoke", "--hours", "0.01", "--out", str(out), "--seed", "3"]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(data, ["inspect", str(out)])
    assert res.exit_code == 0, res.output
    assert "streams" in res.output and "alert ratio" in res.output
    png = out / "timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = runner.invoke(data, ["build", "--recipe", "nope", "--hours", "0.01", "--out", str(out)])
    assert res.exit_code != 0 and "no recipe" in res.output
