"""An ONNX Runtime session's signature checked against the manifest's tensors: below
runtime/bundle.py and the per-branch files (tagger.py) that open graphs of a bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from soundflow.manifest import BundleError, TensorSpec

# ONNX Runtime's type strings for the manifest's numpy dtype names.
ORT_TYPES = {
    "float32": "tensor(float)",
    "int64": "tensor(int64)",
    "float16": "tensor(float16)",
    "bool": "tensor(bool)",
}
FIX = "re-run `soundflow export CHECKPOINT --out DIR`"


def check_session(
    session: Any, file: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
) -> None:
    """The graph's signature must be the manifest's: names, order-free; dtypes; fixed dims."""
    fix = f"the graph does not match manifest.json; copy the bundle again or {FIX}"
    for kind, got, want in (
        ("input", session.get_inputs(), inputs),
        ("output", session.get_outputs(), outputs),
    ):
        have = {a.name: a for a in got}
        names = {s.name for s in want}
        if set(have) != names:
            missing, extra = sorted(names - set(have)), sorted(set(have) - names)
            raise BundleError(
                f"{file}: {kind}s differ (missing {missing}, unexpected {extra}); {fix}"
            )
        for s in want:
            arg = have[s.name]
            if ORT_TYPES.get(s.dtype) != arg.type:
                raise BundleError(
                    f"{file}: {kind} {s.name} is {arg.type}, manifest says {s.dtype}; {fix}"
                )
            if len(arg.shape) != len(s.shape):
                raise BundleError(
                    f"{file}: {kind} {s.name} has rank {len(arg.shape)}, manifest says "
                    f"{list(s.shape)}; {fix}"
                )
            for dim_got, dim_want in zip(arg.shape, s.shape, strict=True):
                if isinstance(dim_want, int) and isinstance(dim_got, int) and dim_got != dim_want:
                    raise BundleError(
                        f"{file}: {kind} {s.name} has shape {arg.shape}, manifest says "
                        f"{list(s.shape)}; {fix}"
                    )
