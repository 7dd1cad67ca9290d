"""What the parity driver (export/parity.py) and each kind's reference share: the drive plan,
the trace a driven stream records, and the `Reference` protocol a kind's module implements.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from soundflow.runtime.bundle import BundleSpec
from soundflow.runtime.options import RuntimeOptions


@dataclass(frozen=True)
class Plan:
    """How a parity run streams: which chunks respond, and the responses' length."""

    respond_every: int  # every n-th chunk responds whatever the model's p (0: none is forced)
    own_decisions: bool  # a chunk the stream itself decides to respond on responds too
    max_tokens: int
    threshold: float | None = None  # p(<respond>) threshold; None: the manifest's


@dataclass
class Trace:
    """What one driven stream did: per decoder call, per chunk, and its own token choices."""

    inputs: list[np.ndarray] = field(default_factory=list)  # per call: embeds (q, hidden) or ids
    logits: list[np.ndarray] = field(default_factory=list)  # per call, (q, vocab)
    chunks: list[int] = field(default_factory=list)  # per call: the chunk it was made in
    evictions: list[int] = field(default_factory=list)  # per call: the cache's evictions so far
    audio_embeds: list[np.ndarray] = field(default_factory=list)  # per chunk, the encoder's
    p_respond: list[float] = field(default_factory=list)  # per chunk
    decisions: list[bool] = field(default_factory=list)  # the model's own, per chunk
    responses: list[list[int] | None] = field(default_factory=list)  # per chunk; None: none
    own: list[int] = field(default_factory=list)  # greedy choices, also where others were fed

    @property
    def tokens(self) -> list[int]:
        """Every generated token, in order."""
        return [t for r in self.responses if r for t in r]

    def unevicted(self) -> int:
        """Calls made before the cache first evicted: a full forward replays exactly these."""
        return next((i for i, e in enumerate(self.evictions) if e), len(self.evictions))


class Reference(Protocol):
    """One kind's part of parity: its torch reference engine, how it streams, what a run is
    compared on and within what (export/decoder_reference.py, export/whisper_reference.py)."""

    plan: Plan
    # the report's maxima over modes: (its key, the rows' key); "max_abs_logit_diff" first
    totals: tuple[tuple[str, str], ...]
    full_key: str  # the report's streamed-vs-one-forward maximum ...
    full_label: str  # ... and its name in the summary line

    def load(self, checkpoint: Path | str) -> Any:
        """The checkpoint's torch model."""

    def engine(self, model: Any, spec: BundleSpec) -> Any:
        """The model behind the runtime's engine interface (the kind's Engine)."""

    def ort_options(self) -> RuntimeOptions | None:
        """How the bundle's ONNX Runtime engine is opened for parity."""

    def stream_options(self, mode: str, plan: Plan) -> RuntimeOptions:
        """The run-time options of a driven stream."""

    def prepare(self, stream: Any) -> None:
        """Adjust a new driven stream (e.g. turn policy guards off)."""

    def signal(self, spec: BundleSpec, chunks: int, seed: int) -> np.ndarray:
        """The parity input: `chunks` chunks of float32 PCM."""

    def extras(self, spec: BundleSpec) -> dict:
        """Report entries about the bundle (e.g. whether it is quantized)."""

    def feeds_reference(self, spec: BundleSpec) -> bool:
        """Whether the torch run is fed the ONNX run's tokens instead of choosing its own."""

    def measure(
        self, model: Any, spec: BundleSpec, mode: str, pcm: np.ndarray, got: Trace, ref: Trace
    ) -> tuple[dict, bool]:
        """One mode's row (ONNX run `got`, torch run `ref`) and whether it passes."""
