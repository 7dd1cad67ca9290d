"""The embedded default bundle's behaviour, pinned: its answers on the shipped demo clip in
every mode and decider equal tests/data/default_outputs.json. A refactor must leave them as
they are; a change meant to alter them regenerates the file (its docstring says how)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from soundflow.runtime.kinds import open_engine

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data"


def _maker():
    spec = importlib.util.spec_from_file_location(
        "make_default_outputs", DATA / "make_default_outputs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def outputs():
    maker = _maker()
    return maker.outputs(open_engine(), maker.demo_pcm())


@pytest.mark.parametrize("run", [r[0] for r in _maker().RUNS])
def test_default_bundle_outputs_are_unchanged(outputs, run):
    want = json.loads((DATA / "default_outputs.json").read_text())[run]
    got = outputs[run]
    assert got["chunks"] == want["chunks"]
    # response by response, so a failure names the first one that moved
    for i, (g, w) in enumerate(zip(got["responses"], want["responses"], strict=False)):
        assert g == w, f"{run} response {i}"
    assert len(got["responses"]) == len(want["responses"])
    assert want["responses"], f"{run}: the pinned run has no response to compare"
