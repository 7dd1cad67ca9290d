"""The embedded default bundle's behaviour, pinned: its answers on the shipped demo clip in
every mode and decider equal tests/data/default_outputs.json. A refactor must leave them as
they are; a change meant to alter them regenerates the file (its docstring says how).
Texts, chunks and tags must be equal; a probability may move by PROBABILITY_TOLERANCE, as
ONNX Runtime's int8 kernels round differently on different CPUs (an AVX2 AMD EPYC moved the
demo's caption probabilities by up to 0.015 against the machine that wrote the file)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from soundflow.runtime.kinds import open_engine

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data"
PROBABILITY_TOLERANCE = 0.03


def _maker():
    spec = importlib.util.spec_from_file_location(
        "make_default_outputs", DATA / "make_default_outputs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def encode_once(engine):
    """Make `engine`'s encoder run once per distinct input: the four runs stream the same
    clip from the same empty state, so each chunk's (audio, state) recurs and its real
    output is handed back again (a copy) instead of recomputed, four fifths of a run's time.
    A chunk or state not seen before is encoded for real; the rest is the engine's own.
    Returns what it has encoded, by input."""
    encode, seen = engine.encode, {}

    def once(audio: np.ndarray, state: dict[str, np.ndarray]):
        h = hashlib.sha256(np.ascontiguousarray(audio).tobytes())
        for k in sorted(state):
            h.update(k.encode() + str(state[k].shape).encode() + state[k].tobytes())
        key = h.hexdigest()
        if key not in seen:
            seen[key] = encode(audio, state)
        out, new = seen[key]
        return out.copy(), {k: v.copy() for k, v in new.items()}

    engine.encode = once
    return seen


@pytest.fixture(scope="module")
def outputs():
    maker = _maker()
    engine = open_engine()  # its own: its encoder is wrapped (conftest's default_engine)
    seen = encode_once(engine)
    got = maker.outputs(engine, maker.demo_pcm())
    assert seen  # the runs went through it
    return got


@pytest.mark.parametrize("run", [r[0] for r in _maker().RUNS])
def test_default_bundle_outputs_are_unchanged(outputs, run):
    want = json.loads((DATA / "default_outputs.json").read_text())[run]
    got = outputs[run]
    assert got["chunks"] == want["chunks"]
    # response by response, so a failure names the first one that moved
    for i, (g, w) in enumerate(zip(got["responses"], want["responses"], strict=False)):
        p, q = g.get("probability"), w.get("probability")
        rest = [{k: v for k, v in r.items() if k != "probability"} for r in (g, w)]
        assert rest[0] == rest[1], f"{run} response {i}"
        assert (p is None) == (q is None), f"{run} response {i}: probability"
        if p is not None:
            assert abs(p - q) <= PROBABILITY_TOLERANCE, f"{run} response {i}: p {p} vs {q}"
    assert len(got["responses"]) == len(want["responses"])
    assert want["responses"], f"{run}: the pinned run has no response to compare"
