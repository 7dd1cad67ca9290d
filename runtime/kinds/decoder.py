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

The stream drives the protocol; what decides and which ids frame a turn are delegated
to runtime/policy.py (`self.decision`, `self.turns`), chosen from the manifest's
`control.mode`: fallback bundles (a plain chat model) have no control tokens, so the
utterance-end policy decides from the chunk's PCM, the audio of successive chunks follows
on without separators, and a response is a chat turn (`respond_ids`, the answer until a
stop id, `resume_ids`).

This is the decoder-only kind's implementation of the stream protocol (runtime/kinds/__init__.py
writes it out); the runtime's loop, the export parity checks (on ONNX Runtime and on the
torch backend, export/torch_engine.py) and the benchmarks drive it through the factory.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from soundflow.manifest import BundleError
from soundflow.runtime import policy as decision_policy
from soundflow.runtime.engine import OrtEngine
from soundflow.runtime.kvcache import CachePolicy, KVCache
from soundflow.runtime.options import RuntimeOptions
from soundflow.runtime.policy import Decision, control_p

__all__ = ["Decision", "DecoderStream", "EncoderStream", "control_p"]


class EncoderStream:
    def __init__(self, engine: OrtEngine) -> None:
        self.engine = engine
        self.state = engine.new_state()

    def encode(self, chunk: np.ndarray) -> np.ndarray:
        """chunk (chunk_samples,) float32 -> audio embeddings (n, hidden)."""
        embeds, self.state = self.engine.encode(chunk[None], self.state)
        return embeds

    def skip(self, chunk: np.ndarray) -> None:
        """A chunk heard but not encoded (the decoder's `wants_embeds`): the state moves on
        as `encode` would move it (the engine's `advance`)."""
        self.state = self.engine.advance(chunk[None], self.state)

    def reset(self) -> None:
        self.state = self.engine.new_state()


class DecoderStream:
    """One stream's decoder state, the decoder-only kind's (`runtime.kinds.open_stream`
    picks the kind's stream class: `runtime.kinds.whisper.CrossDecoderStream` for whisper-cross)."""

    heard: str | None = (
        None  # what a confirming reading heard (runtime/kinds/whisper.py); none here
    )

    def __init__(self, engine: OrtEngine, options: RuntimeOptions | None = None) -> None:
        options = options or RuntimeOptions()
        spec = engine.spec
        self.engine = engine
        self.mode, self.prompt = spec.prompt(options.decision.mode)
        if options.alerts.decider == "tagger":
            raise BundleError(
                "--alerts tagger: only a Whisper-based bundle carries an alert tagger "
                "(`soundflow tagger`); use --alerts protocol or leave the flag out"
            )
        budget = self._decision_options(spec, options)
        c = spec.control
        self.silence, self.respond_id, self.eos = c["silence"], c["respond"], c["eos"]
        self.stops = set(spec.stop_ids) | {self.eos}
        self.decision, self.turns = decision_policy.for_spec(
            spec, self.mode, self.threshold, self.threshold_flag
        )
        self.fallback = self.decision.needs_pcm  # the loop passes each chunk's PCM
        self._respond_prefix = list(self.turns.respond)
        self._resume = list(self.turns.resume)
        self._between = list(self.turns.between)
        self.max_query = (
            max(len(self.prompt), len(self._resume) + 1, len(self._respond_prefix), 2)
            + spec.embeds_per_chunk
        )
        try:
            policy = CachePolicy.default(
                budget, len(self.prompt), self.max_query, options.cache.policy
            )
            if options.cache.window is not None:
                policy = CachePolicy(
                    budget, len(self.prompt), options.cache.window, options.cache.policy
                )
                if policy.sinks + policy.window + self.max_query > budget:
                    raise ValueError(
                        f"a {policy.window}-entry window leaves no room for a "
                        f"{self.max_query}-entry call in a budget of {budget}; use a window "
                        f"of at most {budget - policy.sinks - self.max_query}"
                    )
        except ValueError as e:
            raise BundleError(f"cache: {e}") from None
        self.cache = KVCache(
            spec.layers,
            spec.kv_heads,
            spec.head_dim,
            spec.hidden,
            policy,
            mask_value=spec.mask_value,
        )
        self.binding = engine.bind_cache(self.cache)
        self.tag_ids = spec.tag_ids
        # Generation may end with a stop id or emit tags; other special tokens never belong
        # in a response, so they are masked out of the argmax.
        self._gen_bias = np.zeros(spec.vocab, np.float32)
        for token_id in spec.special.values():
            if token_id not in self.stops and token_id not in self.tag_ids:
                self._gen_bias[token_id] = -np.inf
        self.withheld: str | None = None  # why the last response was withheld (Summary)
        self.withheld_tag: str | None = None  # and the tag it would have opened with
        self.reset()

    def _decision_options(self, spec, options: RuntimeOptions) -> int:
        """Threshold, refractory time and max tokens (flags over manifest defaults); returns
        the cache budget, refused above the bundle's capacity."""
        d, o = spec.decision, options.decision
        self.threshold = float(d["threshold"] if o.threshold is None else o.threshold)
        self.threshold_flag = o.threshold  # given: it overrides every calibrated threshold
        self.refractory_s = float(d["refractory_s"] if o.refractory_s is None else o.refractory_s)
        self.max_tokens = int(
            d["max_response_tokens"] if o.max_response_tokens is None else o.max_response_tokens
        )
        budget = options.cache.budget or spec.cache_capacity
        if budget > spec.cache_capacity:
            raise BundleError(
                f"cache budget {budget} exceeds the bundle's cache capacity "
                f"{spec.cache_capacity} (positions beyond it were never trained); lower "
                "--cache-budget or export with a larger capacity"
            )
        return budget

    def reset(self) -> None:
        self.cache.reset()
        self._pending = list(self.prompt)  # token ids fed before the next chunk's audio
        self._last_tag: dict[int, float] = {}
        self.calls = 0
        self.decision.reset()

    @property
    def pending(self) -> list[int]:
        """The token ids fed before the next chunk's audio (read-only: benchmarks build the
        same query bare)."""
        return self._pending

    # ------------------------------------------------------------------ one call
    def _make_room(self, q: int) -> None:
        """Evict (and re-prefill the kept context) if a q-entry call would not fit."""
        if self.cache.needs_room(q):
            again = self.cache.evict()
            if again is not None:  # re-prefill the kept context into the cleared cache
                self._run(again)

    def _call(self, x: np.ndarray) -> np.ndarray:
        """Feed embeddings x (q, hidden); returns logits (q, vocab)."""
        self._make_room(len(x))
        return self._run(x)

    def feed_embeds(self, x: np.ndarray) -> np.ndarray:
        """Feed embeddings x (q, hidden) through the cache outside the protocol (parity checks
        and benchmarks); returns their logits (q, vocab)."""
        return self._call(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        mask, pos = self.cache.inputs(len(x))
        logits, presents = self.engine.decode_step(self.binding, x, mask, pos)
        return self.absorb(x, logits, presents)

    # ------------------------------------------------------------------ protocol
    # decide() is prepare_decision -> one decoder call -> absorb -> conclude. The steps are
    # public so a batcher (runtime/serve/batching.py) can stack many streams' calls into one
    # session.run and hand each its rows back: the protocol itself stays here.
    def prepare_decision(self, audio_embeds: np.ndarray) -> np.ndarray:
        """The decision call's query (pending tokens + the chunk's embeddings, (q, hidden)),
        with room made for it in the cache."""
        x = np.concatenate([self.engine.embed(self._pending), audio_embeds])
        self._make_room(len(x))
        return x

    def feeds(self, query: np.ndarray) -> dict[str, np.ndarray]:
        """The decoder inputs of one call of `query`, as a plain `session.run` feed."""
        mask, pos = self.cache.inputs(len(query))
        past = [a for kv in zip(self.cache.keys, self.cache.values, strict=True) for a in kv]
        return self.engine.decoder_feeds(query, mask.copy(), pos.copy(), past)

    def absorb(self, query, logits: np.ndarray, presents) -> np.ndarray:
        """Write one call's new cache entries (per layer (key, value)); returns its logits."""
        self.cache.add(presents, query)
        self.calls += 1
        return logits

    def conclude(self, last: np.ndarray, pcm: np.ndarray | None = None) -> Decision:
        """Decide from the decision call's last logits; set what the next chunk follows."""
        self._pending = list(self._between)
        return self.decision.decide(last, pcm)

    def decide(
        self, audio_embeds: np.ndarray, pcm: np.ndarray | None = None, ready: float | None = None
    ) -> Decision:
        """Feed the pending tokens and one chunk's embeddings (n, hidden); decide.
        `pcm` (the chunk's samples) is needed by fallback bundles only; `ready` (when the
        chunk's audio was complete) by the cross kind's time-bounded captions only."""
        x = self.prepare_decision(audio_embeds)
        return self.conclude(self._run(x)[-1], pcm)

    def _feed(self, ids: list[int]) -> np.ndarray:
        """Token ids -> their logits (q, vocab), through the cache."""
        return self._call(self.engine.embed(ids))

    def _next_token(self, logits: np.ndarray) -> int:
        return int(np.argmax(logits + self._gen_bias))

    def begin_response(self, t: float) -> int | None:
        """Feed <respond> (fallback: the mode's turn switch); return the first response
        token, or None if its tag is inside its refractory time (then the switch is rolled
        back and the stream carries on as if it had stayed silent)."""
        self.withheld = self.withheld_tag = None
        prefix = self._respond_prefix
        first = self._next_token(self._call(self.engine.embed(prefix))[-1])
        last = self._last_tag.get(first)
        if first in self.tag_ids and last is not None and t - last < self.refractory_s:
            self.cache.rollback(len(prefix))
            self.withheld, self.withheld_tag = "refractory", self.tag_ids[first]
            return None
        if first in self.tag_ids:
            self._last_tag[first] = t
        return first

    def continue_response(self, first: int) -> Iterator[int]:
        """Yield response tokens starting with `first`, until a stop id or max tokens."""
        token, n = first, 0
        while token not in self.stops and n < self.max_tokens:
            yield token
            n += 1
            if n == self.max_tokens:
                break
            token = self._next_token(self._feed([token])[-1])
        # What follows a response: <eos> (fallback: the resume ids, which close the turn),
        # after the last token of a truncated response.
        if token in self.stops:
            self._pending = list(self._resume)
        else:
            self._pending = [token, *self._resume]
