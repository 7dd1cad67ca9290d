"""Run-time options by concern (runtime/options.py): each concern checks its own fields, flat
names build them (CLI flags, a serve hello's options), and they cannot change once made."""

from __future__ import annotations

import dataclasses

import pytest

from soundflow.runtime.options import (
    FLAGS,
    AlertOptions,
    AssistOptions,
    CacheOptions,
    CaptionOptions,
    DecisionOptions,
    EngineOptions,
    RuntimeOptions,
    SourceOptions,
)
from soundflow.runtime.serve.protocol import HELLO_OPTIONS


@pytest.mark.parametrize(
    "concern, fields, message",
    [
        (DecisionOptions, {"threshold": 1.5}, "threshold 1.5 must lie in [0, 1]"),
        (DecisionOptions, {"refractory_s": -1}, "refractory_s -1 is out of range"),
        (DecisionOptions, {"max_response_tokens": 0}, "max_response_tokens 0 is out of range"),
        (CaptionOptions, {"decider": "sometimes"}, "captions 'sometimes': use one of"),
        (CaptionOptions, {"calls": -1}, "caption_calls -1 is out of range"),
        (CaptionOptions, {"budget_ms": float("nan")}, "caption_budget_ms nan is out of range"),
        (AlertOptions, {"decider": "ears"}, "alerts 'ears': use one of"),
        (AssistOptions, {"decider": "guess"}, "assist 'guess': use one of"),
        (CacheOptions, {"budget": 0}, "cache_budget 0 is out of range"),
        (CacheOptions, {"window": 0}, "cache_window 0 is out of range"),
        (SourceOptions, {"ring_seconds": 0}, "ring_seconds 0 must be a positive number"),
        (SourceOptions, {"queue_chunks": -3}, "queue_chunks -3 must be a positive number"),
        (SourceOptions, {"timeout_s": 0}, "source_timeout_s 0 must be a positive number"),
        (SourceOptions, {"gap_s": float("inf")}, "gap_s inf must be a positive number"),
        (SourceOptions, {"stats_every_s": -1}, "stats_every_s -1 is out of range"),
        (SourceOptions, {"reconnect_tries": -1}, "reconnect_tries -1 is out of range"),
        (EngineOptions, {"provider": "tpu"}, "provider 'tpu': use one of"),
        (EngineOptions, {"threads": 0}, "threads must be >= 1, got 0"),
    ],
)
def test_each_concern_refuses_its_own_bad_values(concern, fields, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        concern(**fields)
    # the same value by its flat name: the same refusal, from the same concern
    ((attr, value),) = fields.items()
    name = next(n for n, (c, a) in FLAGS.items() if a == attr and _concern(c) is concern)
    with pytest.raises(ValueError, match=message.split(" ")[0]):
        RuntimeOptions.from_flags(**{name: value})


def _concern(attr: str) -> type:
    return type(getattr(RuntimeOptions(), attr))


def test_defaults_are_the_manifests_and_valid_edges_pass():
    o = RuntimeOptions()
    assert o.decision.threshold is None and o.cache.budget is None and o.captions.calls is None
    assert o.source.realtime and o.engine.asynchronous and o.engine.provider == "auto"
    assert DecisionOptions(threshold=0.0).threshold == 0.0
    assert DecisionOptions(threshold=1.0, refractory_s=0).refractory_s == 0
    assert CaptionOptions(calls=0, budget_ms=0).calls == 0  # 0 lifts the bound
    assert SourceOptions(stats_every_s=0).stats_every_s == 0  # 0: no stats


def test_from_flags_puts_each_flat_name_in_its_concern_and_round_trips():
    flat = {
        "mode": "alert",
        "threshold": 0.4,
        "max_response_tokens": 9,
        "captions": "protocol",
        "caption_budget_ms": 25.0,
        "alerts": "audioset",
        "alert_only": ("doorbell",),
        "alert_classes": ("Cat=0.4",),
        "assist": "grammar",
        "read_answers": True,
        "cache_budget": 64,
        "cache_policy": "reprefill",
        "source_timeout_s": 5.0,
        "realtime": False,
        "stats_every_s": 0,
        "threads": 2,
        "asynchronous": False,
    }
    o = RuntimeOptions.from_flags(**flat)
    assert o.decision == DecisionOptions(mode="alert", threshold=0.4, max_response_tokens=9)
    assert o.captions == CaptionOptions(decider="protocol", budget_ms=25.0)
    assert o.alerts == AlertOptions("audioset", ("doorbell",), ("Cat=0.4",))
    assert o.assist == AssistOptions("grammar", read_answers=True)
    assert o.cache == CacheOptions(budget=64, policy="reprefill")
    assert o.source == SourceOptions(realtime=False, timeout_s=5.0, stats_every_s=0)
    assert o.engine == EngineOptions(threads=2, asynchronous=False)
    assert o.engine.session_threads() == 2
    assert RuntimeOptions.from_flags(**o.flags()) == o
    assert {k: o.flags()[k] for k in flat} == flat
    # None is "not given": the default stays; with_flags changes only what it names
    assert RuntimeOptions.from_flags(threshold=None, cache_policy=None) == RuntimeOptions()
    later = o.with_flags(threshold=0.9, realtime=None)
    assert later.decision.threshold == 0.9 and later.source == o.source and later.cache == o.cache


def test_every_flat_name_is_one_field_and_every_hello_option_is_one():
    fields = [
        (c.name, f.name)
        for c in dataclasses.fields(RuntimeOptions)
        for f in dataclasses.fields(getattr(RuntimeOptions(), c.name))
    ]
    assert sorted(FLAGS.values()) == sorted(fields)  # one flat name a field, no more
    assert set(HELLO_OPTIONS) <= set(FLAGS)


def test_the_constructor_still_takes_flat_names_as_from_flags_does():
    # the docs' examples (README, docs/deploy.md) build options so
    flat = {"provider": "cpu", "threads": 1, "captions": "protocol", "assist": "decoder"}
    assert RuntimeOptions(**flat) == RuntimeOptions.from_flags(**flat)
    assert RuntimeOptions(cache=CacheOptions(budget=8)).cache.budget == 8
    with pytest.raises(ValueError, match="threshold 2"):
        RuntimeOptions(threshold=2)


def test_an_unknown_flat_name_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown run-time option.* thresold"):
        RuntimeOptions.from_flags(thresold=0.5)
    with pytest.raises(ValueError, match="cache_size"):
        RuntimeOptions().with_flags(cache_size=None)  # even unset: a typo is a typo


def test_options_are_frozen():
    o = RuntimeOptions.from_flags(threshold=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.decision = DecisionOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.decision.threshold = 0.1
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.engine.threads = 4
    assert hash(o) == hash(RuntimeOptions.from_flags(threshold=0.5))
