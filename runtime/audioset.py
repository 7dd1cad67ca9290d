"""The AudioSet branch (issue #30): Google's YAMNet as ONNX (export/yamnet.py) run on the
last 0.96 s of audio at every chunk, giving its 521 class scores and 1024-d embedding.

The engine owns the ONNX Runtime session; each stream owns an `AudiosetState` (the newest
0.96 s of audio), created by `new_state()`, passed to `step()`, and reset between streams.
The log-mel front end (YAMNet's own STFT and 64 mel bands) is inside the graph, so the
runtime feeds raw 16 kHz PCM and needs numpy and onnxruntime only.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from soundflow.audio import AUDIOSET_PATCH_SAMPLES, SAMPLE_RATE
from soundflow.manifest import BundleError

# The manifest section sits below runtime/bundle.py (which reads it) in its own file;
# its names stay importable from here.
from soundflow.runtime.audioset_spec import (  # noqa: F401
    EMBEDDING_DIM,
    EMBEDDINGS,
    FIX,
    LOG_MEL,
    MEL_BANDS,
    MEL_FRAMES,
    NUM_CLASSES,
    SCORES,
    SECTION,
    WAVEFORM,
    AudiosetSpec,
    HeadSpec,
    check_section,
    graph_io,
)


def read_class_map(path: Path) -> tuple[str, ...]:
    """YAMNet's display names in score order; BundleError if the CSV is not its class map."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        names = tuple(r["display_name"] for r in rows)
        order = [int(r["index"]) for r in rows]
    except (OSError, KeyError, TypeError, ValueError, UnicodeDecodeError, csv.Error) as e:
        raise BundleError(f"{path}: not YAMNet's class map ({e!r}); {FIX}") from None
    if order != list(range(NUM_CLASSES)) or not all(names):
        raise BundleError(f"{path}: must list classes 0..{NUM_CLASSES - 1} in order; {FIX}")
    return names


def open_session(file: Path, threads: int = 1, providers: list | None = None):
    """An ONNX Runtime session for the graph. The shipped graph stores its weights as int8
    (and fp16) behind DequantizeLinear/Cast nodes on constants: with ONNX Runtime's QDQ
    fusions off, those fold once at load and every call runs fp32 kernels (with them on,
    the DequantizeLinear nodes run each call, about 3x slower)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(file), opts, providers=providers or ["CPUExecutionProvider"])


class AudiosetState:
    """One stream's state: the newest `patch_samples` of audio (silence before the stream
    started) and how many of them are the stream's own."""

    def __init__(self, patch_samples: int = AUDIOSET_PATCH_SAMPLES) -> None:
        self.history = np.zeros(patch_samples, np.float32)  # (patch_samples,)
        self.heard = 0  # samples fed so far, capped at patch_samples

    def reset(self) -> None:
        self.history[:] = 0.0
        self.heard = 0

    def push(self, chunk: np.ndarray) -> None:
        """Append `chunk` (samples,) and keep the newest `patch_samples`."""
        n = len(self.history)
        chunk = chunk[-n:]
        k = len(chunk)
        if k:
            self.history[: n - k] = self.history[k:]
            self.history[n - k :] = chunk
        self.heard = min(n, self.heard + k)


@dataclass(frozen=True)
class AudiosetOutput:
    """YAMNet on the last 0.96 s after one chunk."""

    scores: np.ndarray  # (NUM_CLASSES,) float32 in [0, 1]
    embedding: np.ndarray  # (EMBEDDING_DIM,) float32
    heard_s: float  # seconds of the patch that are stream audio (< 0.96 at the start)


class AudiosetEngine:
    """Owns the YAMNet session; `step(state, chunk)` per stream chunk."""

    def __init__(self, spec: AudiosetSpec, threads: int = 1, providers: list | None = None):
        for f in (spec.file, spec.class_map, spec.notice):
            if not f.is_file():
                raise BundleError(f"{f} is missing; {FIX}")
        self.spec = spec
        self.classes = read_class_map(spec.class_map)
        try:
            self.session = open_session(spec.file, threads, providers)
        except Exception as e:  # ONNX Runtime raises its own types for a bad graph
            raise BundleError(f"{spec.file}: ONNX Runtime cannot open it ({e}); {FIX}") from None
        self._check_graph()
        self._outputs = [SCORES, EMBEDDINGS]

    @classmethod
    def from_bundle(cls, bundle_dir: Path | str | None = None, threads: int = 1):
        """The AudioSet branch of a bundle (the embedded default when None)."""
        from soundflow.runtime.bundle import load_spec

        spec = load_spec(bundle_dir)
        if spec.audioset is None:
            raise BundleError(
                f"{spec.path / 'manifest.json'} has no audioset section; add YAMNet with "
                "`python -m soundflow.export.yamnet --bundle DIR`"
            )
        return cls(spec.audioset, threads=threads)

    def _check_graph(self) -> None:
        s = self.spec
        fix = f"the graph does not match manifest.json; {FIX}"
        for kind, got, want in (
            ("input", self.session.get_inputs(), s.inputs),
            ("output", self.session.get_outputs(), s.outputs),
        ):
            have = {a.name: a for a in got}
            if set(have) != {t.name for t in want}:
                raise BundleError(f"{s.file}: {kind}s are {sorted(have)}; {fix}")
            for t in want:
                if have[t.name].type != "tensor(float)" or list(have[t.name].shape) != list(
                    t.shape
                ):
                    raise BundleError(
                        f"{s.file}: {kind} {t.name} is {have[t.name].type} "
                        f"{have[t.name].shape}, manifest says {t.dtype} {list(t.shape)}; {fix}"
                    )
        meta = self.session.get_modelmeta().custom_metadata_map
        for key, want in (
            ("sample_rate", SAMPLE_RATE),
            ("patch_samples", s.patch_samples),
            ("num_classes", s.num_classes),
        ):
            if key in meta and json.loads(meta[key]) != want:
                raise BundleError(
                    f"{s.file}: the graph's metadata says {key} = {meta[key]}, the runtime "
                    f"needs {want}; {fix}"
                )

    def new_state(self) -> AudiosetState:
        return AudiosetState(self.spec.patch_samples)

    def run_patch(self, patch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One 0.96 s patch (patch_samples,) -> scores (521,), embedding (1024,), log-mel
        (96, 64)."""
        patch = np.ascontiguousarray(patch, dtype=np.float32)
        if patch.shape != (self.spec.patch_samples,):
            raise ValueError(
                f"a patch is ({self.spec.patch_samples},) samples at {SAMPLE_RATE} Hz, got "
                f"{patch.shape}"
            )
        scores, emb, mel = self.session.run([SCORES, EMBEDDINGS, LOG_MEL], {WAVEFORM: patch})
        return scores[0], emb[0], mel

    def step(self, state: AudiosetState, chunk: np.ndarray) -> AudiosetOutput:
        """Feed one chunk (samples,) of 16 kHz float32 PCM; YAMNet on the last 0.96 s."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 1:
            raise ValueError(f"a chunk is mono (samples,) at {SAMPLE_RATE} Hz, got {chunk.shape}")
        state.push(chunk)
        scores, emb = self.session.run(self._outputs, {WAVEFORM: state.history})
        return AudiosetOutput(scores[0], emb[0], state.heard / SAMPLE_RATE)
