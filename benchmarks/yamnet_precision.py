"""YAMNet's ONNX graph at fp32, fp16 weights, w8 (int8 weights, fp32 compute; shipped) and
static int8 (QDQ and QOperator, per channel):
size, ms per 0.96 s patch on one thread, and decisions against fp32 on real clips.

    python -m soundflow.benchmarks.yamnet_precision FP32_ONNX [--out DIR]

FP32_ONNX is `python -m soundflow.export.yamnet DIR --precision fp32`'s graph. Decisions are
compared on sound-theme-freedesktop (export/yamnet.py `check_clips`), and static int8 is
calibrated on the same clips: the setting most favourable to it (the only other real sounds
installed here, Tux Paint's, are the project's held-out set, train/heldout.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from soundflow.export import yamnet as Y
from soundflow.runtime import audioset as A

THRESHOLD = 0.5  # a class "fires" at this score; flips against fp32 are counted
ROUNDS = 5


def fp16_weights(fp32: Path, out: Path) -> Path:
    """Conv/Gemm weights stored as fp16 and cast back to fp32 at load (compute in fp32);
    the front end's DFT and mel matrices stay fp32."""
    m = onnx.load(str(fp32))
    g = m.graph
    used = {
        i
        for n in g.node
        if n.op_type in ("Conv", "Gemm") and Y.FRONTEND_SCOPE not in n.name  # front end: fp32
        for i in n.input
    }
    inits, casts = [], []
    for t in g.initializer:
        w = numpy_helper.to_array(t)
        if t.name in used and w.dtype == np.float32 and w.size >= 1024:
            inits.append(numpy_helper.from_array(w.astype(np.float16), t.name + "_fp16"))
            casts.append(
                helper.make_node("Cast", [t.name + "_fp16"], [t.name], to=TensorProto.FLOAT)
            )
        else:
            inits.append(t)
    del g.initializer[:]
    g.initializer.extend(inits)
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(m, str(out))
    return out


def int8(fp32: Path, out: Path, calibration: list[np.ndarray], fmt: str) -> Path:
    """Static int8 (weights and activations, per channel) of the conv layers and logits,
    calibrated on real sounds; the front end stays fp32."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {A.WAVEFORM: x}

    nodes = onnx.load(str(fp32)).graph.node
    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv", "Gemm"],
        nodes_to_exclude=[n.name for n in nodes if Y.FRONTEND_SCOPE in n.name],
    )
    return out


def session(path: Path) -> ort.InferenceSession:
    """One thread; static int8 with ONNX Runtime's QDQ fusions (its fast kernels), the
    others as the runtime opens them (weights folded at load)."""
    if "int8" not in path.name:
        return A.open_session(path, threads=1)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ms_per_patch(sess: ort.InferenceSession, patch: np.ndarray, runs: int = 200) -> float:
    for _ in range(20):
        sess.run([A.SCORES, A.EMBEDDINGS], {A.WAVEFORM: patch})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run([A.SCORES, A.EMBEDDINGS], {A.WAVEFORM: patch})
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def scores(sess: ort.InferenceSession, patches: list[np.ndarray]) -> np.ndarray:
    return np.stack([sess.run([A.SCORES], {A.WAVEFORM: p})[0][0] for p in patches])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("fp32", type=Path)
    ap.add_argument("--out", type=Path, default=Path("/tmp/yamnet_precision"))
    ap.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    clips = [Y.load_clip(f) for f in Y.check_clips()]
    patches = [p for c in clips for p in Y.patches(c)]
    calibration = patches
    graphs = {
        "fp32": args.fp32,
        "fp16-weights": fp16_weights(args.fp32, args.out / "yamnet_fp16w.onnx"),
        "w8 (shipped)": Y.compress_weights(args.fp32, args.out / "yamnet_w8.onnx"),
        "int8-qdq": int8(args.fp32, args.out / "yamnet_int8_qdq.onnx", calibration, "qdq"),
        "int8-qop": int8(args.fp32, args.out / "yamnet_int8_qop.onnx", calibration, "qop"),
    }
    print(f"{len(calibration)} calibration patches; {len(patches)} patches of {len(clips)} clips")
    ref = scores(session(args.fp32), patches)
    top1 = ref.argmax(1)
    top5 = np.argsort(-ref, 1)[:, :5]
    srt = np.sort(ref, 1)
    gap = srt[:, -1] - srt[:, -2]  # fp32's top-1 margin: a smaller one is a near-tie
    print(
        "precision       MB   ms/patch  top1=  top5 sets=  max|d|  mean|d|  flips@0.5  "
        "top1 misses' fp32 margin"
    )
    sessions = {name: session(path) for name, path in graphs.items()}
    # Interleaved rounds on a shared machine: each graph's best round median.
    ms = {name: float("inf") for name in graphs}
    for _ in range(ROUNDS):
        for name, sess in sessions.items():
            ms[name] = min(ms[name], ms_per_patch(sess, patches[0]))
    rows = []
    for name, path in graphs.items():
        sess = sessions[name]
        s = scores(sess, patches)
        d = np.abs(s - ref)
        same5 = np.mean(
            [set(a) == set(b) for a, b in zip(np.argsort(-s, 1)[:, :5], top5, strict=True)]
        )
        flips = int(((s >= THRESHOLD) != (ref >= THRESHOLD)).sum())
        print(
            f"{name:14s} {path.stat().st_size / 1e6:5.2f}  {ms[name]:7.2f}"
            f"  {np.mean(s.argmax(1) == top1):5.3f}  {same5:9.3f}  {d.max():6.4f}  "
            f"{d.mean():7.5f}  {flips:5d}  {np.round(gap[s.argmax(1) != top1], 4)[:6]}"
        )
        rows.append(
            {
                "precision": name,
                "mb": round(path.stat().st_size / 1e6, 2),
                "ms_per_patch_1_thread": round(ms[name], 2),
                "top1_equal": round(float(np.mean(s.argmax(1) == top1)), 3),
                "top5_set_equal": round(float(same5), 3),
                "max_abs_score_delta": round(float(d.max()), 4),
                "flips_at_0.5": flips,
            }
        )
    if args.json is not None:
        from soundflow.benchmarks.common import machine

        report = {"benchmark": "yamnet_precision", "machine": machine(), "patches": len(patches)}
        args.json.write_text(json.dumps({**report, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
