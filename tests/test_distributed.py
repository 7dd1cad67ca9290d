"""Data-parallel training under torchrun with gloo: two ranks reproduce one process with
the same global batch, and a checkpoint written by two workers resumes on one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

# Loss normalisation uses the whole step's label counts, so the only difference between
# layouts is float summation order.
TOLERANCE = 1e-4


def _train(out, *args, nproc=1):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "soundflow.cli", "train", "--recipe", "smoke", "--out", str(out),
           "--steps", "8", *args]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _losses(out):
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def test_two_gloo_ranks_match_one_process(tmp_path):
    _train(tmp_path / "one")
    log = _train(tmp_path / "two", nproc=2)
    assert "2 rank(s)" in log
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == list(range(1, 9))
    for step in one:
        assert abs(one[step] - two[step]) <= TOLERANCE * max(1.0, abs(one[step])), step
    assert one[8] < one[1]  # it trained


def test_checkpoint_from_two_workers_resumes_on_one(tmp_path):
    _train(tmp_path / "straight")
    _train(tmp_path / "split", "--until", "4", nproc=2)
    assert json.loads((tmp_path / "split/trainer_state/state.json").read_text())["step"] == 4
    log = _train(tmp_path / "split", "--resume")
    assert "resumed at step 4" in log
    straight, split = _losses(tmp_path / "straight"), _losses(tmp_path / "split")
    for step in range(5, 9):
        assert abs(straight[step] - split[step]) <= TOLERANCE * max(1.0, abs(straight[step])), step
