"""Streams: the state of one audio stream, driven through a shared engine.

`EncoderStream` carries the encoder's state tensors from chunk to chunk. `DecoderStream`
owns the KV cache and speaks the sequence protocol (ARCHITECTURE.md, Contract 2):

    call 1:      <|bos|> <|task:M|>  a(0)_1..a(0)_n        -> logits at a(0)_n decide
    silent:      <silence>           a(c+1)_1..a(c+1)_n    (one call per silent chunk)
    responding:  <respond> -> r_1 -> ... -> <eos>          (one call per token)
                 <eos>               a(c+1)_1..a(c+1)_n

Decision: p = softmax([logit_silence, logit_respond])[1]; respond iff p >= threshold and
the response's tag (its first token) has not fired within the refractory time. A response
withheld that way is rolled back out of the cache, as if the model had stayed silent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from soundflow.manifest import BundleError
from soundflow.runtime.engine import OrtEngine
from soundflow.runtime.kvcache import CachePolicy, KVCache
from soundflow.runtime.options import RuntimeOptions


class EncoderStream:
    def __init__(self, engine: OrtEngine) -> None:
        self.engine = engine
        self.state = engine.new_state()

    def encode(self, chunk: np.ndarray) -> np.ndarray:
        """chunk (chunk_samples,) float32 -> audio embeddings (n, hidden)."""
        embeds, self.state = self.engine.encode(chunk[None], self.state)
        return embeds

    def reset(self) -> None:
        self.state = self.engine.new_state()


@dataclass
class Decision:
    p: float  # p(<respond>)
    respond: bool  # p >= threshold (before the refractory check)


class DecoderStream:
    def __init__(self, engine: OrtEngine, options: RuntimeOptions | None = None) -> None:
        options = options or RuntimeOptions()
        spec = engine.spec
        self.engine = engine
        self.mode, self.prompt = spec.prompt(options.mode)
        d = spec.decision
        self.threshold = float(d["threshold"] if options.threshold is None else options.threshold)
        self.refractory_s = float(
            d["refractory_s"] if options.refractory_s is None else options.refractory_s
        )
        self.max_tokens = int(
            d["max_response_tokens"]
            if options.max_response_tokens is None
            else options.max_response_tokens
        )
        budget = options.cache_budget or spec.cache_capacity
        if budget > spec.cache_capacity:
            raise BundleError(
                f"cache budget {budget} exceeds the bundle's cache capacity "
                f"{spec.cache_capacity} (positions beyond it were never trained); lower "
                "--cache-budget or export with a larger capacity"
            )
        self.max_query = max(len(self.prompt), 2) + spec.embeds_per_chunk
        try:
            policy = CachePolicy.default(
                budget, len(self.prompt), self.max_query, options.cache_policy
            )
            if options.cache_window is not None:
                policy = CachePolicy(
                    budget, len(self.prompt), options.cache_window, options.cache_policy
                )
        except ValueError as e:
            raise BundleError(f"cache: {e}") from None
        self.cache = KVCache(spec.layers, spec.kv_heads, spec.head_dim, spec.hidden, policy)
        self.binding = engine.bind_cache(self.cache)
        c = spec.control
        self.silence, self.respond_id, self.eos = c["silence"], c["respond"], c["eos"]
        self.tag_ids = spec.tag_ids
        # Generation may end with <eos> or emit tags; other control tokens never belong in
        # a response, so they are masked out of the argmax.
        self._gen_bias = np.zeros(spec.vocab, np.float32)
        for token_id in spec.special.values():
            if token_id != self.eos and token_id not in self.tag_ids:
                self._gen_bias[token_id] = -np.inf
        self.reset()

    def reset(self) -> None:
        self.cache.reset()
        self._pending = list(self.prompt)  # token ids fed before the next chunk's audio
        self._last_tag: dict[int, float] = {}
        self.calls = 0

    # ------------------------------------------------------------------ one call
    def _call(self, x: np.ndarray) -> np.ndarray:
        """Feed embeddings x (q, hidden); returns logits (q, vocab)."""
        q = len(x)
        if self.cache.needs_room(q):
            again = self.cache.evict()
            if again is not None:  # re-prefill the kept context into the cleared cache
                self._run(again)
        return self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        mask, pos = self.cache.inputs(len(x))
        logits, presents = self.engine.decode_step(self.binding, x, mask, pos)
        self.cache.add(presents, x)
        self.calls += 1
        return logits

    # ------------------------------------------------------------------ protocol
    def decide(self, audio_embeds: np.ndarray) -> Decision:
        """Feed the pending tokens and one chunk's embeddings (n, hidden); decide."""
        x = np.concatenate([self.engine.embed(self._pending), audio_embeds])
        last = self._call(x)[-1]
        pair = last[[self.silence, self.respond_id]].astype(np.float64)
        p = float(np.exp(pair[1] - np.logaddexp(pair[0], pair[1])))
        self._pending = [self.silence]
        return Decision(p, p >= self.threshold)

    def _next_token(self, logits: np.ndarray) -> int:
        return int(np.argmax(logits + self._gen_bias))

    def begin_response(self, t: float) -> int | None:
        """Feed <respond>; return the first response token, or None if its tag is inside
        its refractory time (then the <respond> is rolled back: the stream stays silent)."""
        first = self._next_token(self._call(self.engine.embed([self.respond_id]))[-1])
        last = self._last_tag.get(first)
        if first in self.tag_ids and last is not None and t - last < self.refractory_s:
            self.cache.rollback(1)
            self._pending = [self.silence]
            return None
        if first in self.tag_ids:
            self._last_tag[first] = t
        return first

    def continue_response(self, first: int) -> Iterator[int]:
        """Yield response tokens starting with `first`, until <eos> or max tokens."""
        token, n = first, 0
        while token != self.eos and n < self.max_tokens:
            yield token
            n += 1
            if n == self.max_tokens:
                break
            token = self._next_token(self._call(self.engine.embed([token]))[-1])
        # The next chunk follows <eos>; a truncated response gets its last token and <eos>.
        self._pending = [self.eos] if token == self.eos else [token, self.eos]
