"""Shared fixtures: one real smoke-trained checkpoint and its exported bundle per session."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def smoke_checkpoint(tmp_path_factory) -> Path:
    """`soundflow train --recipe smoke`, trained for real (well under a minute on 2 cores)."""
    pytest.importorskip("torch")
    from soundflow.train.recipes import get_recipe
    from soundflow.train.run import run

    out = tmp_path_factory.mktemp("smoke_ck")
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
