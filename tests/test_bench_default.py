"""Every `soundflow bench` command that takes a bundle runs on the embedded default (the
whisper-cross kind) for a few seconds and writes its report, without a traceback. (`bench
peer` and `bench alerts` build their held-out sets first, a minute or more: their runs on the
default are the benchmarks' own, benchmarks/results/.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

RUNS = {
    "latency": ["--seconds", "1.2"],
    "scale": ["--minutes", "0.05"],
    "soak": ["--hours", "0.001", "--sample-every", "1"],
    "serve": ["--streams", "1", "--seconds", "2", "--batch", "off"],
}


@pytest.mark.parametrize("command", sorted(RUNS))
def test_bench_runs_on_the_embedded_default(command, tmp_path):
    if command == "serve":
        pytest.importorskip("websockets")
    out = tmp_path / f"{command}.json"
    p = subprocess.run(
        [sys.executable, "-P", "-m", "soundflow.cli", "bench", command, *RUNS[command]]
        + ["--json", str(out)]
        + (["--no-png"] if command in ("scale", "soak") else []),
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
