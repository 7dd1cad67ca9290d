"""Every `soundflow bench` command runs for a few seconds, each on its smallest options, and
writes its report without a traceback: on the embedded default (the whisper-cross kind),
except `bench size`, whose random-weight decoders are its subject. A real process each."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

RUNS = {
    "latency": ["--seconds", "1.2"],
    "scale": ["--minutes", "0.05", "--no-png"],
    "soak": ["--hours", "0.001", "--sample-every", "1", "--no-png"],
    "serve": ["--streams", "1", "--seconds", "2", "--batch", "off"],
    "peer": ["--sets", "eval", "--max-streams", "1", "--no-whisper"],  # + --data (a toy split)
    "size": ["--sizes", "tiny", "--vocab", "512", "--seconds", "1", "--tokens", "4", "--no-int8"],
    "alerts": [],  # what the held-out audio installed allows (_alerts_args)
}


def test_every_bench_command_is_run():
    from soundflow.cli.bench_cmd import bench

    assert set(RUNS) == set(bench.commands)


def _alerts_args() -> list[str]:
    """A few seconds of the benign set where scripts/setup-heldout.sh installed it, else one
    held-out event stream (Tux Paint's sounds, which scripts/setup-dev.sh installs)."""
    from soundflow.benchmarks import alerts as al
    from soundflow.train import heldout

    if sorted((al.WIDELANDS_DIR / "music").glob("*.ogg")):
        return ["--benign-minutes", "0.1", "--event-streams", "0"]
    if heldout.TUXPAINT_DIR.is_dir():
        return ["--benign-minutes", "0", "--event-streams", "1", "--deciders", "tagger"]
    pytest.skip(f"no held-out audio: run {al.SETUP} or apt-get install tuxpaint-data")


@pytest.mark.parametrize("command", sorted(RUNS))
def test_bench_runs_on_the_embedded_default(command, tmp_path):
    args = list(RUNS[command])
    if command == "serve":
        pytest.importorskip("websockets")
    if command == "peer":
        pytest.importorskip(
            "pocketsphinx", reason="bench peer needs pip install 'soundflow[bench]'"
        )
        from soundflow.train.smoke import write_toy_split

        args += ["--data", str(write_toy_split(tmp_path / "eval", n_streams=1, seconds=4.0))]
    if command == "size":
        pytest.importorskip("torch")
        args += ["--work", str(tmp_path / "size")]
    if command == "alerts":
        args += _alerts_args()
    out = tmp_path / f"{command}.json"
    p = subprocess.run(
        [sys.executable, "-P", "-m", "soundflow.cli", "bench", command, *args]
        + ["--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    report = json.loads(out.read_text())
    assert report  # a non-empty report
    if command == "scale":
        assert report["kind"] == "whisper-cross" and report["cached"]["per_chunk_ms"]
    if command == "peer":
        assert [(r["set"], r["system"]) for r in report["table"]] == [
            ("eval", "soundflow"),
            ("eval", "pocketsphinx"),
        ]
    if command == "size":
        assert set(report["sizes"]["tiny"]["variants"]) == {"fp32"}
    if command == "alerts":
        assert report["deciders"] and all(
            row.get("benign") or row.get("events") for row in report["deciders"]
        )
