"""The AudioSet branch's manifest section (`audioset`, with its alert head `audioset.head`),
parsed and checked: below runtime/bundle.py, which reads it, and the engines that run it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soundflow.audio import AUDIOSET_PATCH_SAMPLES, SAMPLE_RATE
from soundflow.manifest import BundleError, TensorSpec

WAVEFORM = "waveform"  # (AUDIOSET_PATCH_SAMPLES,) float32 PCM at SAMPLE_RATE, in [-1, 1]
SCORES = "scores"  # (1, NUM_CLASSES) float32: per-class sigmoid scores of the patch
EMBEDDINGS = "embeddings"  # (1, EMBEDDING_DIM) float32: the pooled last conv layer
LOG_MEL = "log_mel"  # (MEL_FRAMES, MEL_BANDS) float32: YAMNet's own log-mel of the patch
NUM_CLASSES = 521  # AudioSet's ontology as YAMNet's class map lists it
EMBEDDING_DIM = 1024
MEL_FRAMES = 96  # 10 ms hops in one 0.96 s patch
MEL_BANDS = 64
SECTION = "audioset"  # the manifest's section
FIX = (
    "re-run `python -m soundflow.export.yamnet --bundle DIR` or remove the manifest's "
    "audioset section"
)


def graph_io() -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs as the manifest declares them."""
    return (
        [TensorSpec(WAVEFORM, "float32", (AUDIOSET_PATCH_SAMPLES,))],
        [
            TensorSpec(SCORES, "float32", (1, NUM_CLASSES)),
            TensorSpec(EMBEDDINGS, "float32", (1, EMBEDDING_DIM)),
            TensorSpec(LOG_MEL, "float32", (MEL_FRAMES, MEL_BANDS)),
        ],
    )


@dataclass(frozen=True)
class AudiosetSpec:
    """The manifest's `audioset` section, parsed and checked (runtime/validate.py checks
    the types first)."""

    file: Path  # the YAMNet graph inside the bundle
    class_map: Path  # YAMNet's CSV: index, mid, display_name
    notice: Path  # Google's Apache-2.0 notice for the weights
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    patch_samples: int  # samples of audio one call hears: 15360 (0.96 s)
    num_classes: int
    embedding_dim: int
    licence: str
    precision: str  # "w8" (int8/fp16 weights, fp32 compute) or "fp32"
    head: Any = None  # `audioset.head`: the alert head (HeadSpec below)

    @classmethod
    def from_manifest(cls, m: dict[str, Any], path: Path, mpath: Path) -> AudiosetSpec:
        """The section of manifest `m` (of the bundle at `path`), checked."""
        check_section(m, mpath)
        a = m[SECTION]
        try:
            spec = cls(
                file=path / a["file"],
                class_map=path / a["class_map"],
                notice=path / a["notice"],
                inputs=tuple(TensorSpec.from_json(s) for s in a["inputs"]),
                outputs=tuple(TensorSpec.from_json(s) for s in a["outputs"]),
                patch_samples=int(a["patch_samples"]),
                num_classes=int(a["num_classes"]),
                embedding_dim=int(a["embedding_dim"]),
                licence=str(a["licence"]),
                precision=str(a.get("precision", "fp32")),
                head=_head(a, path, mpath),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BundleError(f"{mpath}: audioset section is malformed ({e!r}); {FIX}") from None
        inputs, outputs = graph_io()
        if spec.inputs != tuple(inputs) or spec.outputs != tuple(outputs):
            raise BundleError(
                f"{mpath}: audioset inputs/outputs are not YAMNet's {[t.to_json() for t in inputs]}"
                f" -> {[t.name for t in outputs]}; {FIX}"
            )
        if (spec.patch_samples, spec.num_classes, spec.embedding_dim) != (
            AUDIOSET_PATCH_SAMPLES,
            NUM_CLASSES,
            EMBEDDING_DIM,
        ):
            raise BundleError(
                f"{mpath}: audioset patch_samples/num_classes/embedding_dim must be "
                f"{AUDIOSET_PATCH_SAMPLES}/{NUM_CLASSES}/{EMBEDDING_DIM}; {FIX}"
            )
        return spec


def _head(a: dict[str, Any], path: Path, mpath: Path) -> HeadSpec | None:
    if "head" not in a:
        return None
    return HeadSpec.from_manifest(a["head"], path, mpath)


def check_section(manifest: dict[str, Any], mpath: Path) -> None:
    """Types and ranges of the manifest's `audioset` section, before any field is used
    (runtime/validate.py's checker; the files must be listed, so hashed, in `files`)."""
    from soundflow.runtime.validate import Checker

    c = Checker(manifest, Path(mpath))
    c.obj(SECTION)
    for key in ("file", "class_map", "notice"):
        c.file(f"{SECTION}.{key}", c.str(f"{SECTION}.{key}"))
    c.tensors(f"{SECTION}.inputs")
    c.tensors(f"{SECTION}.outputs")
    for key, want in (("sample_rate", SAMPLE_RATE), ("patch_samples", AUDIOSET_PATCH_SAMPLES)):
        got = c.int(f"{SECTION}.{key}", 1, 1 << 24)
        if got != want:
            raise c.fail(f"{SECTION}.{key}", f"is {got}; the runtime feeds {want}", FIX)
    c.int(f"{SECTION}.num_classes", 1, 1 << 16)
    c.int(f"{SECTION}.embedding_dim", 1, 1 << 16)
    c.str(f"{SECTION}.licence")
    c.str(f"{SECTION}.precision", required=False)
    if "head" in manifest[SECTION]:
        check_head_section(c)


HEAD_SECTION = "head"  # manifest `audioset.head`
HEAD_ARRAYS = ("mean", "std", "w1", "b1", "w2", "b2", "labels")
HEAD_FIX = "re-run `python -m soundflow.train.alert_head --bundle DIR` or remove `audioset.head`"


@dataclass(frozen=True)
class HeadSpec:
    """The manifest's `audioset.head`, parsed and checked."""

    file: Path
    labels: tuple[str, ...]  # the head's output order
    thresholds: dict[str, float]  # every label's calibrated threshold
    captions: dict[str, str]  # every label's response text
    defaults: tuple[str, ...]  # the labels that alert without --only
    input_dim: int  # EMBEDDING_DIM + NUM_CLASSES
    hidden: int
    persistence: int  # chunks in a row at or over the threshold before an alert
    refractory_s: float  # no second alert of a label within this
    decides: bool  # alert mode decides by the head unless --alerts says otherwise
    # patches heard: 1, the last alone; K > 1, the last beside the mean of the last K
    # (input_dim then doubles: features of the patch, then their mean)
    context: int = 1

    @classmethod
    def from_manifest(cls, h: dict[str, Any], path: Path, mpath: Path) -> HeadSpec:
        try:
            alerts = h["alerts"]
            spec = cls(
                file=path / h["file"],
                labels=tuple(str(x) for x in h["labels"]),
                thresholds={str(k): float(v["threshold"]) for k, v in alerts.items()},
                captions={str(k): str(v["caption"]) for k, v in alerts.items()},
                defaults=tuple(str(k) for k, v in alerts.items() if v.get("default", True)),
                input_dim=int(h["input_dim"]),
                hidden=int(h["hidden"]),
                persistence=int(h.get("persistence", 1)),
                refractory_s=float(h.get("refractory_s", 8.0)),
                decides=bool(h.get("decides", False)),
                context=int(h.get("context", 1)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BundleError(f"{mpath}: audioset.head is malformed ({e!r}); {HEAD_FIX}") from None
        if set(spec.thresholds) != set(spec.labels) or len(set(spec.labels)) != len(spec.labels):
            raise BundleError(
                f"{mpath}: audioset.head.alerts must name each label once; {HEAD_FIX}"
            )
        if not all(re.fullmatch(r"[a-z0-9_]+", lab) for lab in spec.labels):
            raise BundleError(f"{mpath}: audioset.head labels must be [a-z0-9_]; {HEAD_FIX}")
        if not all(0.0 <= v <= 1.0 for v in spec.thresholds.values()):
            raise BundleError(f"{mpath}: audioset.head thresholds must lie in [0, 1]; {HEAD_FIX}")
        if not 1 <= spec.context <= 64:
            raise BundleError(f"{mpath}: audioset.head context must be 1 to 64; {HEAD_FIX}")
        want = (EMBEDDING_DIM + NUM_CLASSES) * (2 if spec.context > 1 else 1)
        if spec.input_dim != want or spec.hidden < 1:
            raise BundleError(
                f"{mpath}: audioset.head with context {spec.context} reads {want} features "
                f"(embedding, scores{', their mean' if spec.context > 1 else ''}); got "
                f"input_dim {spec.input_dim}; {HEAD_FIX}"
            )
        if spec.persistence < 1 or spec.refractory_s < 0:
            raise BundleError(
                f"{mpath}: audioset.head persistence >= 1, refractory_s >= 0; {HEAD_FIX}"
            )
        return spec


def check_head_section(c: Any) -> None:
    """Types of `audioset.head` (runtime/validate.py's checker `c`); the file must be listed."""
    key = "audioset.head"
    c.obj(key)
    c.file(f"{key}.file", c.str(f"{key}.file"))
    c.int(f"{key}.input_dim", 1, 1 << 16)
    c.int(f"{key}.hidden", 1, 1 << 16)
    c.int(f"{key}.persistence", 1, 100, required=False)
    c.int(f"{key}.context", 1, 64, required=False)
    c.num(f"{key}.refractory_s", 0.0, 3600.0, required=False)
    for label in c.obj(f"{key}.alerts"):
        c.num(f"{key}.alerts.{label}.threshold", 0.0, 1.0)
        c.str(f"{key}.alerts.{label}.caption")
