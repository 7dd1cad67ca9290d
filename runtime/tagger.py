"""The alert tagger (ARCHITECTURE.md, Contract 3d): a small head over the newest encoder
frames that names alert-worthy sounds, and the per-stream rule that turns its probabilities
into alerts (a threshold per label, patience, a refractory time per label), where a label
may also be confirmed by words Whisper reads in the window (`VerifySpec`).

A whisper-cross bundle may carry one (`soundflow tagger` trains it on the bundle's own
encoder); alert mode then decides by it instead of the decoder's <respond> step. Its optional
speech output gates transcribe mode's window readings (`SpeechGate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from soundflow import protocol
from soundflow.manifest import BundleError, TensorSpec
from soundflow.runtime.graph_check import check_session


@dataclass(frozen=True)
class GateSpec:
    """The manifest's `tagger.speech`: which output is p(speech), the threshold calibrated
    on a dev split, and how many chunks a window reading hears."""

    column: int
    threshold: float
    window_chunks: int


@dataclass(frozen=True)
class VerifySpec:
    """The manifest's `tagger.verify.LABEL`: a chunk whose p(LABEL) met `threshold` (below the
    label's own) alerts where a reading of the window with Whisper's transcription prompt
    holds one of `words`. For labels that are speech (a shout for help): the tagger hears a
    raised voice, Whisper hears what it says. `decision.verify.MODE.TAG` is the same rule
    for the decoder's responses (runtime/kinds/whisper.py: an assist intent)."""

    threshold: float
    words: tuple[str, ...]


@dataclass(frozen=True)
class TaggerSpec:
    """The manifest's `tagger` section, parsed and checked."""

    file: Any  # Path inside the bundle
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    source: str  # the encoder output the frames come from ("present.0.encoder.value")
    frames: int  # newest frames of the window the head reads
    labels: tuple[str, ...]  # the graph's output order (alert labels and auxiliary sounds)
    thresholds: dict[str, float]  # alert label -> threshold (labels it may raise)
    responses: dict[str, tuple[int, ...]]  # alert label -> response ids after its tag
    patience: int  # chunks in a row at or over the threshold before an alert
    speech: GateSpec | None = None  # transcribe mode's speech gate, where the head has one
    verify: dict[str, VerifySpec] | None = None  # alert labels also raised when words confirm

    @classmethod
    def from_manifest(cls, t: dict[str, Any], path, mpath) -> TaggerSpec:
        fix = "re-run `soundflow tagger` or remove the manifest's tagger section"
        try:
            labels = tuple(str(x) for x in t["labels"])
            alerts = t["alerts"]
            spec = cls(
                file=path / t["file"],
                inputs=tuple(TensorSpec.from_json(s) for s in t["inputs"]),
                outputs=tuple(TensorSpec.from_json(s) for s in t["outputs"]),
                source=str(t["source"]),
                frames=int(t["frames"]),
                labels=labels,
                thresholds={str(k): float(v["threshold"]) for k, v in alerts.items()},
                responses={
                    str(k): tuple(int(i) for i in v["response_ids"]) for k, v in alerts.items()
                },
                patience=int(t.get("patience", 1)),
                speech=_gate(t["speech"], labels) if "speech" in t else None,
                verify={
                    str(k): VerifySpec(float(v["threshold"]), tuple(str(w) for w in v["words"]))
                    for k, v in t.get("verify", {}).items()
                }
                or None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BundleError(f"{mpath}: tagger section is malformed ({e!r}); {fix}") from None
        unknown = sorted(set(spec.thresholds) - set(labels))
        if unknown:
            raise BundleError(f"{mpath}: tagger alerts {unknown} are not among its labels; {fix}")
        if spec.frames < 1 or spec.patience < 1:
            raise BundleError(f"{mpath}: tagger frames and patience must be >= 1; {fix}")
        if not all(0.0 <= v <= 1.0 for v in spec.thresholds.values()):
            raise BundleError(f"{mpath}: tagger thresholds must lie in [0, 1]; {fix}")
        for label, v in (spec.verify or {}).items():
            if label not in spec.thresholds or not 0.0 <= v.threshold <= 1.0 or not v.words:
                raise BundleError(
                    f"{mpath}: tagger.verify.{label} needs an alert label, a threshold in "
                    f"[0, 1] and words; {fix}"
                )
        g = spec.speech
        if g is not None and not (0.0 <= g.threshold <= 1.0 and g.window_chunks >= 1):
            raise BundleError(
                f"{mpath}: tagger.speech needs a threshold in [0, 1] and window_chunks >= 1; {fix}"
            )
        return spec


def _gate(g: dict[str, Any], labels: tuple[str, ...]) -> GateSpec:
    label = str(g["label"])
    if label not in labels:
        raise ValueError(f"speech label {label!r} is not among the tagger's labels")
    return GateSpec(labels.index(label), float(g["threshold"]), int(g["window_chunks"]))


def source_index(source: str, layers: int) -> tuple[int, int]:
    """'present.L.encoder.key|value' -> (L, 0|1): where the frames sit in a memory entry
    (layers, 2, heads, frames, head_dim)."""
    parts = source.split(".")
    if (
        len(parts) != 4
        or parts[0] != "present"
        or parts[2] != "encoder"
        or parts[3] not in ("key", "value")
        or not parts[1].isdigit()
        or int(parts[1]) >= layers
    ):
        raise BundleError(f"tagger source {source!r} is not one of the encoder's outputs")
    return int(parts[1]), 0 if parts[3] == "key" else 1


def newest_frames(entry: np.ndarray, layer: int, kv: int, frames: int) -> np.ndarray:
    """The newest `frames` frames of one encoder output in a memory entry, heads
    concatenated: (1, frames, heads * head_dim). A window shorter than that (the stream's
    first chunks) repeats its first frame, as training saw it."""
    x = entry[layer, kv]  # (heads, window, head_dim)
    x = x[:, -frames:].transpose(1, 0, 2).reshape(-1, x.shape[0] * x.shape[2])
    if x.shape[0] < frames:
        x = np.concatenate([np.repeat(x[:1], frames - x.shape[0], 0), x])
    return np.ascontiguousarray(x[None], dtype=np.float32)


class AlertRule:
    """One stream's alert decisions from the tagger's probabilities: a label may fire once
    its probability has met its threshold for `patience` chunks in a row, and not again
    within `refractory_s` of its last alert (the same ongoing alarm). A label with a
    `VerifySpec` is also ready when `confirm` says a reading of the window held its words."""

    def __init__(self, spec: TaggerSpec, refractory_s: float, threshold: float | None = None):
        self.labels = [lab for lab in spec.labels if lab in spec.thresholds]
        self.columns = np.array([spec.labels.index(lab) for lab in self.labels], np.int64)
        # an explicit --threshold replaces every calibrated one, as for the decoder's step
        self.thresholds = np.array(
            [spec.thresholds[lab] if threshold is None else threshold for lab in self.labels],
            np.float32,
        )
        self.patience, self.refractory_s = spec.patience, refractory_s
        self.verify = {} if threshold is not None else dict(spec.verify or {})
        self.reset()

    def restrict(self, only) -> None:
        """Raise only the labels `only` names (`listen --only`); BundleError if one is not
        among this rule's alert labels."""
        unknown = [lab for lab in only if lab not in self.labels]
        if unknown:
            raise BundleError(
                f"--only {','.join(unknown)}: not among the tagger's alert labels "
                f"{self.labels} (`soundflow labels` lists them)"
            )
        keep = [i for i, lab in enumerate(self.labels) if lab in only]
        self.labels = [self.labels[i] for i in keep]
        self.columns, self.thresholds = self.columns[keep], self.thresholds[keep]
        self.verify = {k: v for k, v in self.verify.items() if k in only}
        self.reset()

    def reset(self) -> None:
        self.run = np.zeros(len(self.labels), np.int64)
        self.last: dict[str, float] = {}
        self.p = np.zeros(len(self.labels), np.float32)

    def update(self, probs: np.ndarray) -> float:
        """Take one chunk's probabilities (every label); return the highest alert one."""
        self.p = np.asarray(probs, np.float32).reshape(-1)[self.columns]
        self.run = np.where(self.p >= self.thresholds, self.run + 1, 0)
        return float(self.p.max()) if len(self.p) else 0.0

    def to_verify(self, t: float) -> list[str]:
        """Labels a reading of this chunk's window could confirm: p met their verify
        threshold, they are not ready on their own, and not in refractory at stream time t."""
        out = []
        for label, v in self.verify.items():
            i = self.labels.index(label)
            if self.p[i] >= v.threshold and self.run[i] < self.patience:
                if t - self.last.get(label, -np.inf) >= self.refractory_s:
                    out.append(label)
        return out

    def confirm(self, label: str, text_words: set[str]) -> bool:
        """A reading of the window heard `text_words`: the label is ready if one is its."""
        if not text_words & set(self.verify[label].words):
            return False
        self.run[self.labels.index(label)] = self.patience
        return True

    @property
    def ready(self) -> bool:
        return bool((self.run >= self.patience).any())

    def fire(self, t: float) -> str | None:
        """The label to alert at stream time t, if any (the most probable of those ready
        and out of refractory); it starts its refractory time."""
        best = None
        for i in np.flatnonzero(self.run >= self.patience):
            lab = self.labels[i]
            if t - self.last.get(lab, -np.inf) < self.refractory_s:
                continue
            if best is None or self.p[i] > self.p[best]:
                best = i
        if best is None:
            return None
        self.last[self.labels[best]] = t
        return self.labels[best]


class SpeechGate:
    """One transcribe stream's speech gate: open while p(speech) met its threshold on one of
    the last `window_chunks` chunks, i.e. while a window reading could hear speech. A reading
    of a window without speech costs decoder steps and, at best, reads nothing (at worst a
    hallucinated caption): the gate skips it for the price of the tagger's one small call."""

    def __init__(self, spec: GateSpec) -> None:
        self.spec = spec
        self.reset()

    def reset(self) -> None:
        self.since = self.spec.window_chunks  # chunks since speech was last heard: closed
        self.p = 0.0

    def update(self, probs: np.ndarray) -> bool:
        """Take one chunk's tagger probabilities (every label); return whether it is open."""
        self.p = float(np.asarray(probs).reshape(-1)[self.spec.column])
        self.since = 0 if self.p >= self.spec.threshold else self.since + 1
        return self.open

    def skip(self) -> bool:
        """A chunk whose window was not encoded (no probabilities): after speech it is taken
        as more of it (the next window's newest frames hear it), after quiet as more quiet."""
        if self.since:
            self.since += 1
        return self.open

    @property
    def open(self) -> bool:
        return self.since < self.spec.window_chunks


def check_tagger_graph(session: Any, spec: TaggerSpec, width: int) -> None:
    """The graph must read (batch, frames, width) and return one probability per label."""
    check_session(session, spec.file, spec.inputs, spec.outputs)
    names = ({s.name for s in spec.inputs}, {s.name for s in spec.outputs})
    if names != ({protocol.TAGGER_FRAMES}, {protocol.TAGGER_PROBS}):
        raise BundleError(
            f"{spec.file}: a tagger reads {protocol.TAGGER_FRAMES!r} and returns "
            f"{protocol.TAGGER_PROBS!r}; re-run `soundflow tagger`"
        )
    shape_in, shape_out = spec.inputs[0].shape, spec.outputs[0].shape
    if tuple(shape_in[1:]) != (spec.frames, width) or shape_out[-1] != len(spec.labels):
        raise BundleError(
            f"{spec.file}: reads {list(shape_in)} and returns {list(shape_out)}, but the "
            f"manifest asks for {spec.frames} frames of width {width} and "
            f"{len(spec.labels)} labels; re-run `soundflow tagger`"
        )
