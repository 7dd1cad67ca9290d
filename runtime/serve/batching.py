"""Batched graph calls across streams: one encoder call (and optionally one decoder
decision step) for every stream that has a chunk ready, split back per stream."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from soundflow import protocol
from soundflow.runtime.policy import Decision

_BATCH = "batch"


def _batch_axis(shape) -> int:
    for k, d in enumerate(shape):
        if d == _BATCH:
            return k
    return 0


def _row(a: np.ndarray, axis: int, b: int) -> np.ndarray:
    index = [slice(None)] * a.ndim
    index[axis] = slice(b, b + 1)
    return np.ascontiguousarray(a[tuple(index)])


class BatchEncoder:
    """`encode(chunks, states)` for many streams of one engine in as few calls as their
    state shapes allow. Results equal `engine.encode` per stream to float rounding.

    The graphs have a batch axis; a stream's state is a batch-1 slice of it. States are
    stacked along each tensor's own batch axis (read from the session's symbolic shapes:
    the smoke kind's `cache_key` has it second) and split back per stream. Streams whose
    state shapes differ (a whisper-cross stream's PCM history grows during its first 4 s)
    go in separate calls, one per shape."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.cross = engine.spec.kind == "whisper-cross"
        sess = engine.encoder
        ins = {i.name: i.shape for i in sess.get_inputs()}
        outs = {o.name: o.shape for o in sess.get_outputs()}
        self.audio_name = engine.audio_name
        self.states = [(s.input, s.output) for s in engine.spec.encoder_state]
        self.in_axis = {name: _batch_axis(ins[name]) for name, _ in self.states}
        self.outputs = list(engine.encoder_outputs)
        self.out_axis = {name: _batch_axis(outs[name]) for name in self.outputs}
        self.calls = 0  # encoder session calls made
        # An encoder with dynamic int8 MatMuls (export --dynamic-encoder) quantizes its
        # activations with one scale per call, over the whole batch: stacked streams would
        # change each other's results, so each stream gets its own call.
        quant = engine.spec.manifest.get("export", {}).get("encoder_quantization")
        self.stackable = quant != protocol.ENCODER_DYNAMIC_INT8

    def encode(
        self, chunks: list[np.ndarray], states: list[dict[str, np.ndarray]]
    ) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """chunks: (chunk_samples,) float32 each; states: each stream's encoder state.
        Returns per stream (embeds or memory entry, next state), as `engine.encode`."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, st in enumerate(states):
            groups[tuple((k, st[k].shape) for k, _ in self.states)].append(i)
        results: list = [None] * len(chunks)
        if not self.stackable:
            groups = {(i,): [i] for i in range(len(chunks))}
        for idxs in groups.values():
            if len(idxs) == 1:
                i = idxs[0]
                results[i] = self.engine.encode(chunks[i][None], states[i])
                self.calls += 1
                continue
            feed = {self.audio_name: np.stack([chunks[i] for i in idxs]).astype(np.float32)}
            for name, _ in self.states:
                feed[name] = np.concatenate([states[i][name] for i in idxs], self.in_axis[name])
            outs = dict(zip(self.outputs, self.engine.encoder.run(self.outputs, feed), strict=True))
            self.calls += 1
            for b, i in enumerate(idxs):
                row = {n: _row(o, self.out_axis[n], b) for n, o in outs.items()}
                new = {inp: row[out] for inp, out in self.states}
                results[i] = (self._embeds(row), new)
        return results

    def _embeds(self, row: dict[str, np.ndarray]) -> np.ndarray:
        e = self.engine
        if not self.cross:
            return row[e.embeds_name][0]
        kv = [row[n] for n in e.memory_outputs]
        return np.stack([np.stack([kv[2 * i][0], kv[2 * i + 1][0]]) for i in range(e.spec.layers)])


def can_batch_decide(stream) -> bool:
    """Streams the batched decision step handles: not fallback-control ones (they decide by
    PCM), nor caption streams (their decision is a greedy reading of their own window, a
    few calls of their own, with no protocol call to stack), nor streams whose alerts the
    tagger decides (runtime/tagger.py)."""
    return (
        not getattr(stream, "fallback", False)
        and getattr(stream, "captions", None) is None
        and getattr(stream, "alerts", None) is None
    )


class BatchDecoder:
    """One decoder call for the decision step of many streams of one engine.

    `decide(streams, embeds)` has the effect of `stream.decide(embeds)` on each stream,
    and returns their Decisions: each stream prepares its query and feeds
    (`prepare_decision`, `feeds`), the feeds are stacked along the batch axis, and each
    stream absorbs its rows and decides (`absorb`, `conclude`), so the protocol stays in
    runtime/kinds/decoder.py and runtime/kinds/whisper.py. Every stream's fixed-capacity token cache (and,
    for the cross kind, its memory) has the same capacity and empty slots are masked per
    row, so the stack needs no padding; streams whose query lengths differ (the first
    chunk's prompt, a re-prefill) run in separate calls. `tests/test_serve.py` checks
    batched against one call per stream."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.outputs = [protocol.LOGITS, *engine.present_names]
        self.calls = 0

    def decide(self, streams: list, embeds: list[np.ndarray]) -> list[Decision]:
        queries = [s.prepare_decision(e) for s, e in zip(streams, embeds, strict=True)]
        decisions: list = [None] * len(streams)
        feeds: dict[int, dict] = {}
        for i, (s, q) in enumerate(zip(streams, queries, strict=True)):
            if len(q):
                feeds[i] = s.feeds(q)
            else:  # a caption stream: it decides by reading its window, no call to stack
                decisions[i] = s.conclude(None)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, feed in feeds.items():
            groups[tuple((k, v.shape) for k, v in feed.items())].append(i)
        layers = self.engine.spec.layers
        for idxs in groups.values():
            stacked = {  # a scalar (the cross kind's logits_int8 switch) is one per call
                n: v if v.ndim == 0 else np.concatenate([feeds[i][n] for i in idxs])
                for n, v in feeds[idxs[0]].items()
            }
            outs = self.engine.decoder.run(self.outputs, stacked)
            self.calls += 1
            for b, i in enumerate(idxs):
                presents = [
                    (outs[1 + 2 * j][b : b + 1], outs[2 + 2 * j][b : b + 1]) for j in range(layers)
                ]
                logits = streams[i].absorb(queries[i], outs[0][b], presents)
                decisions[i] = streams[i].conclude(logits[-1])
        return decisions
