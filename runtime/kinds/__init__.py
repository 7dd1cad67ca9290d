"""The model-kind interface: what every kind's engine and stream provide, written out (as
whisper's `Inference` and moshi's `StreamingModule` are), and the one factory that picks a
kind's implementation from the manifest's `decoder.kind`.

Two kinds ship:

    kind            engine                                stream
    decoder-only    runtime/engine.py         OrtEngine    runtime/kinds/decoder.py  DecoderStream
    whisper-cross   runtime/kinds/whisper.py  CrossEngine  runtime/kinds/whisper.py  CrossDecoderStream

Each kind's stream lives in this folder, one module a kind; the parts a kind composes (the
engine's sessions, captions, agreement, taggers, the cache) stay in runtime/ beside the loop.

An **engine** owns the weights (the ONNX Runtime sessions, shared by every stream of it) and
is stateless between calls; a **stream** owns one audio stream's state (token cache, memory,
caption reader, alert rule) and drives the engine. The loop (runtime/loop.py), serve's
batching (runtime/serve/batching.py), export parity, eval and the benchmarks use only what
the protocols below name, so a third kind is a new engine and stream registered in `KINDS`.

The stream's step is split so a batcher can stack many streams' decoder calls:

    query = stream.prepare_decision(embeds)   # the chunk's memory/embeddings -> token query
    feeds = stream.feeds(query)               # (only where query is non-empty) one call's inputs
    logits = stream.absorb(query, logits, presents)   # the call's outputs -> its cache
    decision = stream.conclude(logits[-1] or None, pcm)   # -> Decision(p, respond)

`decide(embeds, pcm, ready)` is the four in one. After a responding decision,
`begin_response(t)` gives the first token (or None: withheld, `stream.withheld` says why and
`stream.withheld_tag` names the tag it would have opened with) and
`continue_response(first)` the rest; `finish()` what the stream holds back at the end;
`reset()` forgets the stream (a poisoned state), keeping the run's counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from soundflow.manifest import BundleError
from soundflow.runtime.bundle import BundleSpec, load_spec
from soundflow.runtime.options import RuntimeOptions
from soundflow.runtime.policy import Decision


class Engine(Protocol):
    """A kind's graphs, batched along axis 0; shared by every stream (thread-safe calls)."""

    spec: BundleSpec
    options: RuntimeOptions
    detokenizer: Any  # runtime/detokenize.Detokenizer
    audio_name: str  # the encoder's PCM input
    encoder_outputs: list[str]  # the encoder's outputs, in the order `encode` runs them

    @property
    def provider(self) -> str: ...

    def new_state(self) -> dict[str, np.ndarray]:
        """The encoder's carried state for a new stream (zero history)."""

    def encode(self, audio: np.ndarray, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
        """audio (1, chunk_samples) float32 -> (the chunk's embeddings or memory entry, state)."""


class Stream(Protocol):
    """One audio stream's decoding state over an Engine (prepare -> call -> absorb -> conclude)."""

    engine: Engine
    mode: str
    fallback: bool  # the loop passes each chunk's PCM to `decide`
    max_tokens: int

    def prepare_decision(self, audio_embeds: np.ndarray) -> Any: ...

    def feeds(self, query: Any) -> dict[str, np.ndarray]: ...

    def absorb(self, query: Any, logits: np.ndarray, presents) -> np.ndarray: ...

    def conclude(self, last: np.ndarray | None, pcm: np.ndarray | None = None) -> Decision: ...

    def decide(
        self, audio_embeds: np.ndarray, pcm: np.ndarray | None = None, ready: float | None = None
    ) -> Decision: ...

    withheld: str | None  # after begin_response gave None: why (events.SUPPRESSED_REASONS)
    withheld_tag: str | None  # and the tag it would have opened with

    def begin_response(self, t: float) -> int | None: ...

    def continue_response(self, first: int) -> Iterator[int]: ...

    def reset(self) -> None: ...


def _decoder_only():
    from soundflow.runtime.engine import OrtEngine
    from soundflow.runtime.kinds.decoder import DecoderStream

    return OrtEngine, DecoderStream


def _whisper_cross():
    from soundflow.runtime.kinds.whisper import CrossDecoderStream, CrossEngine

    return CrossEngine, CrossDecoderStream


# manifest `decoder.kind` -> (engine class, stream class), imported when asked for
KINDS = {"decoder-only": _decoder_only, "whisper-cross": _whisper_cross}


def _classes(kind: str):
    if kind not in KINDS:
        raise BundleError(
            f"decoder kind {kind!r} is not one this soundflow runs ({sorted(KINDS)}); "
            "upgrade soundflow or re-export the bundle"
        )
    return KINDS[kind]()


def open_engine(
    bundle: BundleSpec | str | None = None,
    options: RuntimeOptions | None = None,
    variant: str = "fp32",
) -> Engine:
    """The engine of a bundle (a path, a loaded spec, or None: the embedded default), of
    whichever kind its manifest says."""
    spec = bundle if isinstance(bundle, BundleSpec) else load_spec(bundle, variant=variant)
    engine_cls, _ = _classes(spec.kind)
    return engine_cls(spec, options)


def open_stream(engine: Engine, options: RuntimeOptions | None = None) -> Stream:
    """A new stream of `engine`'s kind."""
    _, stream_cls = _classes(engine.spec.kind)
    return stream_cls(engine, options)
