"""Batched graph calls across streams: one encoder call (and optionally one decoder
decision step) for every stream that has a chunk ready, split back per stream."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from soundflow.runtime.stream import Decision

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
        self.audio_name = "audio" if self.cross else engine._audio_name
        self.states = [(s.input, s.output) for s in engine.spec.encoder_state]
        self.in_axis = {name: _batch_axis(ins[name]) for name, _ in self.states}
        self.outputs = list(engine._enc_outputs)
        self.out_axis = {name: _batch_axis(outs[name]) for name in self.outputs}
        self.calls = 0  # encoder session calls made

    def encode(
        self, chunks: list[np.ndarray], states: list[dict[str, np.ndarray]]
    ) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """chunks: (chunk_samples,) float32 each; states: each stream's encoder state.
        Returns per stream (embeds or memory entry, next state), as `engine.encode`."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, st in enumerate(states):
            groups[tuple((k, st[k].shape) for k, _ in self.states)].append(i)
        results: list = [None] * len(chunks)
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
            return row[e._embeds_name][0]
        kv = [row[n] for n in e._memory_out]
        return np.stack([np.stack([kv[2 * i][0], kv[2 * i + 1][0]]) for i in range(e.spec.layers)])


def can_batch_decide(stream) -> bool:
    """Streams the batched decision step handles (fallback-control ones decide by PCM)."""
    return not getattr(stream, "fallback", False)


class BatchDecoder:
    """One decoder call for the decision step of many streams of one engine.

    `decide(streams, embeds)` has the effect of `stream.decide(embeds)` on each stream,
    and returns their Decisions.

    Each stream's fixed-capacity token cache (and, for the cross kind, its memory) is
    stacked along the batch axis: every stream's cache has the same capacity and empty
    slots are masked per row, so the stack needs no padding. Streams whose query lengths
    differ (the first chunk's prompt, a re-prefill) run in separate calls. What each row
    writes back (its new cache entries, its pending tokens) is exactly what
    `DecoderStream.decide` would write; `tests/test_serve.py` checks batched against one
    call per stream."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.cross = engine.spec.kind == "whisper-cross"
        self.outputs = ["logits", *engine.present_names]
        self.calls = 0

    def decide(self, streams: list, embeds: list[np.ndarray]) -> list[Decision]:
        prepared = [self._prepare(s, e) for s, e in zip(streams, embeds, strict=True)]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (feed, _) in enumerate(prepared):
            groups[tuple((k, v.shape) for k, v in feed.items())].append(i)
        decisions: list = [None] * len(streams)
        for idxs in groups.values():
            names = list(prepared[idxs[0]][0])
            feed = {n: np.concatenate([prepared[i][0][n] for i in idxs]) for n in names}
            outs = self.engine.decoder.run(self.outputs, feed)
            self.calls += 1
            layers = self.engine.spec.layers
            for b, i in enumerate(idxs):
                logits = outs[0][b]
                presents = [
                    (outs[1 + 2 * j][b : b + 1], outs[2 + 2 * j][b : b + 1]) for j in range(layers)
                ]
                decisions[i] = self._consume(streams[i], prepared[i][1], logits, presents)
        return decisions

    # ------------------------------------------------------------------ one row
    def _prepare(self, s, embeds: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """What `s.decide(embeds)` would bind for its call (after any eviction)."""
        e = self.engine
        if self.cross:
            s.memory.add(embeds)
            x = np.asarray(s._pending, np.int64)
        else:
            x = np.concatenate([e.embed(s._pending), embeds]).astype(np.float32)
        q = len(x)
        if s.cache.needs_room(q):  # as the stream's own _call: evict, re-prefill if asked
            kept = s.cache.evict()
            if kept is not None:
                s._run(kept[:, 0].tolist() if self.cross else kept)
        mask, pos = s.cache.inputs(q)
        feed: dict[str, np.ndarray] = {}
        if self.cross:
            feed["input_ids"] = x[None]
            feed["position_ids"] = np.ascontiguousarray(pos[:, -q:])
            feed["attention_mask"] = mask.copy()
            feed["encoder_attention_mask"] = s.memory.mask(q)
            for j in range(e.spec.layers):
                feed[e.past_names[2 * j]] = s.cache.keys[j]
                feed[e.past_names[2 * j + 1]] = s.cache.values[j]
                feed[e.memory_names[2 * j]] = s.memory.keys[j]
                feed[e.memory_names[2 * j + 1]] = s.memory.values[j]
        else:
            feed["inputs_embeds"] = x[None]
            feed["attention_mask"] = mask.copy()
            feed["position_ids"] = pos.copy()
            for j in range(e.spec.layers):
                feed[e.past_names[2 * j]] = s.cache.keys[j]
                feed[e.past_names[2 * j + 1]] = s.cache.values[j]
        return feed, x

    def _consume(self, s, x: np.ndarray, logits: np.ndarray, presents) -> Decision:
        """Write the row's new entries and decide, as the tail of `s.decide`."""
        q = len(x)
        s.cache.add(presents, x.reshape(q, 1) if self.cross else x)
        s.calls += 1
        last = logits[-1]
        pair = last[[s.silence, s.respond_id]].astype(np.float64)
        p = float(np.exp(pair[1] - np.logaddexp(pair[0], pair[1])))
        if self.cross:
            s._pending = [s.silence]
            s._p = p
            return Decision(p, p >= min([s.threshold, *s._tag_threshold.values()]))
        s._pending = list(s._between)
        return Decision(p, p >= s.threshold)
