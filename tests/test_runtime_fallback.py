"""Fallback-control bundles (a chat model without <silence>/<respond>) in the loop: the
utterance-end policy decides from the PCM, responses are chat turns (respond_ids, answer,
resume_ids). The smoke bundle's graphs stand in for the chat model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from soundflow.manifest import BundleError, read_manifest, write_manifest
from soundflow.runtime.fallback import FallbackOptions, UtteranceEndPolicy
from soundflow.runtime.kinds import open_engine
from soundflow.runtime.loop import Loop
from soundflow.runtime.options import RuntimeOptions
from soundflow.runtime.sources import array_source

SR = 16_000


@pytest.fixture(scope="module")
def fallback_bundle(smoke_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("fallback") / "bundle"
    shutil.copytree(smoke_bundle, out)
    m = read_manifest(out)
    c = m["control_ids"]
    m["control"] = {"mode": "fallback", "stop_ids": [c["eos"]], "policy": "utterance_end"}
    for task in m["tasks"].values():
        task["respond_ids"] = [c["eos"], c["respond"]]  # a multi-token turn switch
    m["prompt_template"] = {"format": "test", "resume_ids": [c["eos"], c["bos"], c["silence"]]}
    m.pop("files")
    write_manifest(out, m)
    return out


def _scene() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(1.2 * SR)) / SR
    speech = (0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 4 * t))) * 0.2 * np.sin(2 * np.pi * 220 * t)
    quiet = lambda s: rng.normal(0, 0.003, int(s * SR))  # noqa: E731
    pcm = np.concatenate([quiet(2.0), speech, quiet(2.0), speech[: int(0.8 * SR)], quiet(2.0)])
    return pcm.astype(np.float32)


def _run(bundle, pcm, **opts):
    options = RuntimeOptions.from_flags(
        **{"realtime": False, "stats_every_s": 0, "mode": "assist", **opts}
    )
    events = []
    summary = Loop(
        open_engine(bundle, options), array_source(pcm, SR), events.append, options
    ).run()
    return [e for e in events if e.type == "response"], summary


def test_policy_decides_and_turns_are_fed(fallback_bundle):
    pcm = _scene()
    responses, summary = _run(fallback_bundle, pcm, max_response_tokens=4, refractory_s=0.0)
    policy = UtteranceEndPolicy(SR, FallbackOptions())
    expected = [
        i for i in range(len(pcm) // 6400) if policy.step(pcm[i * 6400 : (i + 1) * 6400]).respond
    ]
    assert summary.error is None and len(expected) == 2
    assert [r.chunk for r in responses] == expected  # one answer per utterance, at its end
    assert all(r.probability == 1.0 for r in responses)


def test_explicit_threshold_overrides_the_policy(fallback_bundle):
    responses, summary = _run(
        fallback_bundle,
        _scene()[: 6400 * 6],
        threshold=0.0,
        refractory_s=0.0,
        max_response_tokens=3,
    )
    assert summary.error is None and len(responses) == 6  # every chunk answers


def test_fallback_bundle_without_turn_ids_is_refused(fallback_bundle, tmp_path):
    bad = tmp_path / "b"
    shutil.copytree(fallback_bundle, bad)
    m = read_manifest(bad)
    del m["prompt_template"]
    m.pop("files")
    write_manifest(bad, m)
    with pytest.raises(BundleError, match="prompt_template"):
        open_engine(bad)
