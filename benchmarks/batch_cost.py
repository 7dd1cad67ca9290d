"""What batching streams would buy on CPU: the embedded default's encoder and decoder graphs
timed at batch 1, 4 and 8 (ms per stream), the encoder also rebuilt fp32 and MatMulNBits.

    python -m soundflow.benchmarks.batch_cost --json benchmarks/results/batch_cost.json

The shipped encoder's dynamic int8 MatMuls quantize a whole call's activations with one
scale, so its windows cannot be stacked without changing each one's output
(`runtime/serve/batching.BatchEncoder.stackable`); the variants here quantize weights only
(fp32 activations, or per-row 8-bit ones: MatMulNBits, accuracy level 4), stack exactly,
and show what a stackable encoder would cost. One ONNX Runtime thread, random inputs (the
graphs' cost does not depend on the audio).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

BATCHES = (1, 4, 8)


def fp32_encoder(src: Path, out: Path) -> Path:
    """The shipped encoder with each DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul
    replaced by a float MatMul on the dequantized weight (the int8 codes times their scale)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(src)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    drop, swaps = set(), []
    for n in g.node:
        if n.op_type != "MatMulInteger":
            continue
        xq, wq, _, wzp = n.input
        weight = wq.removesuffix("_quantized")
        codes = numpy_helper.to_array(inits[wq]).astype(np.float32)
        zero = numpy_helper.to_array(inits[wzp]).astype(np.float32)
        scale = numpy_helper.to_array(inits[weight + "_scale"]).astype(np.float32)
        (cast,) = consumers[n.output[0]]
        (mul,) = consumers[cast.output[0]]
        g.initializer.append(numpy_helper.from_array((codes - zero) * scale, weight + "_fp32"))
        x = producer[xq].input[0]
        swaps.append((n, helper.make_node("MatMul", [x, weight + "_fp32"], [mul.output[0]])))
        drop |= {id(cast), id(mul), id(producer[mul.input[1]])}
    for old, new in swaps:
        g.node.insert(list(g.node).index(old), new)
        g.node.remove(old)
    kept = [n for n in g.node if id(n) not in drop]
    used = {x for n in kept for x in n.input} | {o.name for o in g.output}
    kept = [
        n for n in kept if not (n.op_type == "DynamicQuantizeLinear" and not set(n.output) & used)
    ]
    del g.node[:]
    g.node.extend(kept)
    used = {x for n in g.node for x in n.input}
    initializers = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(initializers)
    onnx.checker.check_model(m)
    onnx.save(m, out)
    return out


def nbits_encoder(fp32: Path, out: Path, bits: int) -> Path:
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(
        block_size=32, is_symmetric=True, accuracy_level=4, bits=bits
    )
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)  # a line a node
    q = MatMulNBitsQuantizer(onnx.load(fp32), algo_config=config)
    q.process()
    q.model.save_model_to_file(str(out))
    return out


def _session(path: Path):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = o.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def _ms(session, feed: dict, calls: int) -> float:
    session.run(None, feed)
    t = time.perf_counter()
    for _ in range(calls):
        session.run(None, feed)
    return (time.perf_counter() - t) / calls * 1e3


def time_encoder(path: Path, chunk: int, history: int, rng) -> dict:
    """ms per window at each batch, and whether a stacked call gives each window's own output."""
    s = _session(path)
    audio = (rng.standard_normal((max(BATCHES), chunk)) * 0.1).astype(np.float32)
    past = (rng.standard_normal((max(BATCHES), history)) * 0.1).astype(np.float32)
    row = {}
    for b in BATCHES:
        ms = _ms(s, {"audio": audio[:b], "history": past[:b]}, max(3, 24 // b))
        row[f"ms_per_window_b{b}"] = round(ms / b, 2)
    stacked = s.run(None, {"audio": audio[:2], "history": past[:2]})
    alone = [s.run(None, {"audio": audio[i : i + 1], "history": past[i : i + 1]}) for i in (0, 1)]
    row["stacked_max_abs_diff"] = float(
        max(np.abs(stacked[k][i] - alone[i][k][0]).max() for i in (0, 1) for k in range(1, 3))
    )
    return row


def time_decoder(path: Path, spec, rng) -> list[dict]:
    """ms per stream of one decoder call of q tokens (a reading's draft), at each batch."""
    s = _session(path)
    names = [i.name for i in s.get_inputs()]
    rows = []
    cap, frames, h, d = spec.cache_capacity, spec.memory_frames, spec.kv_heads, spec.head_dim
    for q in (1, 4, 12):
        row = {"query_tokens": q}
        for b in BATCHES:
            feed = {
                "input_ids": rng.integers(0, 50000, (b, q)),
                "position_ids": np.tile(np.arange(40, 40 + q), (b, 1)),
                "attention_mask": np.where(np.arange(cap + q) < 40, 0.0, -1e4)
                .astype(np.float32)[None, None, None]
                .repeat(b, 0)
                .repeat(q, 2),
                "encoder_attention_mask": np.zeros((b, 1, q, frames), np.float32),
            }
            for n in names:
                if n.startswith("past_key_values"):
                    length = cap if ".decoder." in n else frames
                    feed[n] = (rng.standard_normal((b, h, length, d)) * 0.3).astype(np.float32)
            if "logits_int8" in names:
                feed["logits_int8"] = np.array(True)  # as a window reading runs it
            row[f"ms_per_stream_b{b}"] = round(_ms(s, feed, max(5, 40 // b)) / b, 2)
        rows.append(row)
    return rows


def run() -> dict:
    from soundflow.runtime.bundle import load_spec

    spec = load_spec(None)
    history = int(spec.manifest["encoder"]["history_samples"])
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = fp32_encoder(spec.encoder_file, Path(tmp) / "encoder_fp32.onnx")
        graphs = {
            "shipped (dynamic int8)": spec.encoder_file,
            "fp32": fp32,
            "MatMulNBits 8-bit": nbits_encoder(fp32, Path(tmp) / "nb8.onnx", 8),
            "MatMulNBits 4-bit": nbits_encoder(fp32, Path(tmp) / "nb4.onnx", 4),
        }
        encoder = {k: time_encoder(p, spec.chunk_samples, history, rng) for k, p in graphs.items()}
    return {
        "bench": "batch_cost",
        "machine": f"{platform.processor() or platform.machine()}, {_cores()} cores",
        "cpu": _cpu_name(),
        "onnxruntime_threads": 1,
        "encoder": encoder,
        "decoder": time_decoder(spec.decoder_file, spec, rng),
    }


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    a = ap.parse_args()
    result = run()
    for name, row in result["encoder"].items():
        print(f"encoder {name:24s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    for row in result["decoder"]:
        print("decoder " + "  ".join(f"{k}={v}" for k, v in row.items()))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
