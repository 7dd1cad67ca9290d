"""`soundflow train --init-from HF_DIR`: start from a (tiny, random) Qwen2-Audio checkpoint,
stop, resume, and export the result to a bundle with native control tokens."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from soundflow.cli.main import cli  # noqa: E402
from soundflow.manifest import read_manifest  # noqa: E402


def test_train_from_pretrained_resume_and_export(tmp_path, monkeypatch):
    from soundflow.train.kinds.decoder.hf_audio.tiny import tiny_checkpoint

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    base = tiny_checkpoint("qwen2_audio", tmp_path / "base")  # plain: no control tokens
    run = tmp_path / "run"
    args = ["train", "--recipe", "smoke", "--steps", "3", "--out", str(run)]
    result = CliRunner().invoke(cli, [*args, "--init-from", str(base), "--until", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "trainer_state/state.json").read_text())["step"] == 2
    assert (run / "model.safetensors").is_file() and (run / "soundflow_training.json").is_file()
    result = CliRunner().invoke(cli, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "resumed at step 2" in result.output
    assert json.loads((run / "trainer_state/state.json").read_text())["step"] == 3

    bundle = tmp_path / "bundle"
    result = CliRunner().invoke(cli, ["export", str(run), "--out", str(bundle)])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(bundle)
    assert manifest["control"]["mode"] == "native"  # the fine-tune has <silence>/<respond>
    assert {"<silence>", "<respond>"} <= set(manifest["special_tokens"])
    assert os.path.getsize(bundle / "decoder.onnx") > 0


def test_init_from_refuses_a_non_audio_llm_directory(tmp_path):
    result = CliRunner().invoke(
        cli,
        ["train", "--recipe", "smoke", "--out", str(tmp_path / "o"), "--init-from", str(tmp_path)],
    )
    assert result.exit_code != 0 and "not a Qwen2-Audio or Qwen2.5-Omni" in result.output
