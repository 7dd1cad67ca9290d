"""Data-parallel training under torchrun with gloo: two ranks (DDP, and FSDP with sharded
parameters) reproduce one process with the same global batch, and a checkpoint written by
two workers resumes on one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
# the one-process runs train in this process: one torch thread, as OMP_NUM_THREADS=1 gives
# the launched ranks
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Loss normalisation uses the whole step's label counts, so the only difference between
# layouts is float summation order.
TOLERANCE = 1e-4


def _train(out, *args, nproc=1):
    """`soundflow train` on the smoke recipe. One process runs the command in this process
    (CliRunner: the same command, without another interpreter's and torch's start, the most
    of a launch's time); several go through torchrun, as the command launches them."""
    argv = ["train", "--recipe", "smoke", "--out", str(out), "--steps", "8", *args]
    if nproc == 1:
        from click.testing import CliRunner

        from soundflow.cli.main import cli

        result = CliRunner().invoke(cli, argv, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "soundflow.cli", *argv, "--nproc", str(nproc)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _losses(out):
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def _close(a: dict, b: dict, steps) -> None:
    for step in steps:
        assert abs(a[step] - b[step]) <= TOLERANCE * max(1.0, abs(a[step])), (
            step,
            a[step],
            b[step],
        )


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    _train(out)
    return _losses(out)


def test_two_ddp_ranks_match_one_process_and_resume_on_one(one_process, tmp_path):
    """One two-rank launch covers both: its steps match one process, and its checkpoint
    resumes on one (each launch costs two processes' start, the most of this test's time);
    stopped at step 6 so DDP itself is compared over most of the run, and the resumed steps
    still use the restored optimizer state."""
    log = _train(tmp_path / "split", "--until", "6", nproc=2)
    assert "2 rank(s) (ddp)" in log
    two = _losses(tmp_path / "split")
    assert sorted(two) == list(range(1, 7))
    _close(one_process, two, range(1, 7))
    assert json.loads((tmp_path / "split/trainer_state/state.json").read_text())["step"] == 6
    log = _train(tmp_path / "split", "--resume")
    assert "resumed at step 6" in log
    resumed = _losses(tmp_path / "split")
    assert sorted(resumed) == sorted(one_process) == list(range(1, 9))
    _close(one_process, resumed, range(1, 9))
    assert one_process[8] < one_process[1]  # it trained


def test_fsdp_ranks_match_one_process_and_resume_on_one(one_process, tmp_path):
    log = _train(tmp_path / "fsdp", "--until", "4", "--strategy", "fsdp", nproc=2)
    assert "2 rank(s) (fsdp)" in log
    _close(one_process, _losses(tmp_path / "fsdp"), range(1, 5))
    _train(tmp_path / "fsdp", "--resume")  # full (unsharded) checkpoint, one plain process
    _close(one_process, _losses(tmp_path / "fsdp"), range(1, 9))
