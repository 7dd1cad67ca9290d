"""The runtime imports and runs with numpy + onnxruntime only: in a fresh interpreter where
importing torch, transformers or tokenizers fails, `soundflow listen` and the Listener
still work end to end, and none of them is ever imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import soundfile as sf

BLOCK = textwrap.dedent(
    """
    import sys, importlib.abc
    BANNED = ("torch", "transformers", "tokenizers", "safetensors")
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BANNED:
                raise ImportError(f"{name} must not be imported by the runtime")
    sys.meta_path.insert(0, Block())
    """
)


def test_listen_runs_without_torch(smoke_bundle, tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.random.default_rng(0).normal(0, 0.05, 22_050 * 3).astype(np.float32), 22_050)
    script = BLOCK + textwrap.dedent(
        f"""
        import soundflow
        from soundflow.cli.main import cli
        try:
            cli(["listen", "--bundle", {str(smoke_bundle)!r}, "--input", {str(wav)!r},
                 "--fast", "--jsonl", "--threshold", "0", "--mode", "alert"])
        except SystemExit as e:
            assert not e.code, e.code
        with soundflow.Listener({str(smoke_bundle)!r}, input={str(wav)!r}, realtime=False) as l:
            events = list(l.events(timeout=60))
        assert events[-1].type == "summary" and events[-1].error is None
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in BANNED)
        assert not leaked, leaked
        print("TORCH-FREE OK", file=sys.stderr)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TORCH-FREE OK" in out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[-1]["type"] == "summary" and lines[-1]["chunks"] == 8  # 3 s at 22.05 kHz
