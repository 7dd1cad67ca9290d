"""Shared fixtures: the golden smoke-trained checkpoint and its exported bundle per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# One intra-op thread: these tiny models train no faster on two, and two threads per
# process spin against each other when the machine is busy (10x slower under load).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: torch's threads only contend on shared cores (measured 28x slower).
    Modules that build torch models use it through `pytestmark`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


GOLDEN = Path(__file__).parent / "data" / "smoke_checkpoint"  # tests/data/make_golden.py


@pytest.fixture(scope="session")
def smoke_checkpoint(tmp_path_factory) -> Path:
    """The golden smoke checkpoint (`soundflow train --recipe smoke`, seeded, committed under
    tests/data by tests/data/make_golden.py), copied so a test may write next to it; with
    SOUNDFLOW_RETRAIN=1 (or the files missing) it is trained for real instead."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("smoke_ck")
    if os.environ.get("SOUNDFLOW_RETRAIN") != "1" and (GOLDEN / "model.safetensors").is_file():
        shutil.copytree(GOLDEN, out, dirs_exist_ok=True)
        return out
    from soundflow.train.kinds.decoder.recipes import get_recipe
    from soundflow.train.run import run

    run(get_recipe("smoke"), out, log=lambda *_: None)
    return out


@pytest.fixture(scope="session")
def smoke_bundle(smoke_checkpoint, tmp_path_factory) -> Path:
    """The smoke checkpoint exported to a bundle (fp32 + int8 graphs)."""
    from soundflow.export.onnx_export import export_bundle
    from soundflow.export.quantize import add_int8

    out = tmp_path_factory.mktemp("smoke_bundle") / "bundle"
    export_bundle(smoke_checkpoint, out, cache_capacity=256, log=lambda *_: None)
    add_int8(out, log=lambda *_: None)
    return out


@pytest.fixture(scope="session")
def default_engine():
    """The embedded default bundle's engine (`open_engine()`), opened once: an engine holds
    only its sessions and is stateless between calls (runtime/kinds/__init__.py), each test opens its
    own streams of it. Tests that patch an engine's methods open their own."""
    from soundflow.runtime.kinds import open_engine

    return open_engine()


@pytest.fixture(scope="module")
def default_path(default_engine):
    """The embedded default's folder, where it is the Whisper-based model with assist mode
    (the tests of assist on the real bundle copy and edit it)."""
    e = default_engine
    if e.spec.kind != "whisper-cross" or "assist" not in e.spec.manifest["tasks"]:
        pytest.skip("the embedded default is not the Whisper-based model with assist mode")
    return e.spec.path


# Tests that share the one PulseAudio daemon: test_faults_mic kills it mid-capture, so no
# other file may capture at the same time.
_PULSEAUDIO = {"test_mic.py", "test_faults_mic.py"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):
    """Under `pytest -n N --dist loadgroup` (the README's command) a file runs on one worker,
    so its module fixtures are built once, and the files that share the sound server run on
    the same worker, one after the other. Without xdist the marks do nothing."""
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group("pulseaudio" if name in _PULSEAUDIO else name))
