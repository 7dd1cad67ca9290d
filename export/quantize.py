"""Optional engine variants of a bundle: int8 (ONNX Runtime dynamic quantization) and
TensorRT plans, recorded in the manifest under `variants` beside the fp32 graphs; weight-only
int8 storage; and `dynamic_encoder`, which gives a bundle's encoder int8 MatMuls in place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from soundflow import protocol
from soundflow.manifest import read_manifest, write_manifest


def quantize_int8(bundle: Path | str) -> None:
    """Write int8 graphs beside the fp32 ones (weights int8, activations float: ONNX
    Runtime dynamic quantization) and record them in the manifest's `variants`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bundle = Path(bundle)
    for part in ("encoder", "decoder"):
        quantize_dynamic(
            bundle / f"{part}.onnx", bundle / f"{part}.int8.onnx", weight_type=QuantType.QInt8
        )
    manifest = read_manifest(bundle)
    manifest.setdefault("variants", {})["int8"] = {
        "encoder": "encoder.int8.onnx",
        "decoder": "decoder.int8.onnx",
        "quantization": "onnxruntime dynamic, weights int8",
    }
    manifest.pop("files", None)
    write_manifest(bundle, manifest)


def add_int8(bundle: Path | str, log=print) -> dict:
    """`quantize_int8`, then how often the int8 graphs agree with fp32 (reported)."""
    from soundflow.export.parity import agreement

    bundle = Path(bundle)
    quantize_int8(bundle)
    report = agreement(bundle, "int8")
    sizes = {
        p: round((bundle / f"{p}.int8.onnx").stat().st_size / 1e6, 2)
        for p in ("encoder", "decoder")
    }
    log(f"int8 graphs (MB): {sizes}; agreement with fp32 (reported, not asserted):")
    log(json.dumps(report, indent=2))
    return report


def dynamic_encoder(bundle: Path | str, log=print) -> dict:
    """Rewrite `bundle`'s encoder.onnx with int8 MatMuls (ONNX Runtime dynamic quantization:
    weights int8 per tensor, activations quantized per call, MatMulInteger), in place.

    For the whisper-cross kind the encoder re-encodes a 4.4 s window every chunk and is most
    of the decision latency; int8 MatMuls halve it on CPU (README, The default model). Its
    outputs move by a few percent, so the report says how far, on a fixed input; the
    bundle's own checks (eval, calibrate) are what judge it. Graph metadata is kept."""
    import tempfile

    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bundle = Path(bundle)
    path = bundle / "encoder.onnx"
    manifest = read_manifest(bundle)  # checked against the files before one changes
    original = onnx.load(str(path), load_external_data=False)
    with tempfile.TemporaryDirectory() as tmp:
        folded, quantized = Path(tmp) / "folded.onnx", Path(tmp) / "dynamic.onnx"
        so = ort.SessionOptions()  # fold weight-only int8 (Cast+Mul) into plain initializers
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(folded)
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        quantize_dynamic(
            folded, quantized, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"]
        )
        model = onnx.load(str(quantized))
    del model.metadata_props[:]
    model.metadata_props.extend(original.metadata_props)
    feeds = _fixed_feeds(path)
    before = _run_graph(path, feeds)
    tmp_out = path.with_suffix(".onnx.tmp")
    onnx.save(model, str(tmp_out))
    after = _run_graph(tmp_out, feeds)
    tmp_out.replace(path)
    rel = max(
        float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12))
        for a, b in zip(before, after, strict=True)
        if a.size and a.dtype == np.float32
    )
    manifest.setdefault("export", {})["encoder_quantization"] = protocol.ENCODER_DYNAMIC_INT8
    manifest.pop("files", None)
    write_manifest(bundle, manifest)
    report = {"encoder_mb": round(path.stat().st_size / 1e6, 2), "max_rel_diff": round(rel, 4)}
    log(f"encoder with int8 MatMuls: {report}")
    return report


def _fixed_feeds(path: Path) -> dict:
    """Seeded inputs at the graph's full (steady-state) shapes: a chunk and a full history."""
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        shape = [1 if not isinstance(d, int) else d for d in i.shape]
        if i.name == "history":  # the cross kind's PCM history: its longest
            meta = sess.get_modelmeta().custom_metadata_map
            shape = [1, int(meta.get("history_samples", 64000))]
        feeds[i.name] = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    return feeds


def _run_graph(path: Path, feeds: dict) -> list:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def add_tensorrt(bundle: Path | str, max_query: int = 64, log=print) -> None:
    """Build TensorRT plans with optimization profiles over query and cache length.

    Needs `tensorrt` and an NVIDIA GPU. Not exercised on soundflow's CI (no GPU there);
    ONNX Runtime's TensorRT execution provider runs the same ONNX graphs instead.
    """
    try:
        import tensorrt as trt
    except ImportError:
        raise RuntimeError(
            "--tensorrt needs the `tensorrt` Python package and an NVIDIA GPU: "
            "pip install 'soundflow[gpu]' on the target machine (e.g. a Jetson with JetPack), "
            "or run the fp32 bundle with `soundflow listen --provider tensorrt` "
            "(ONNX Runtime's TensorRT execution provider)"
        ) from None
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    dec = manifest["decoder"]
    capacity = dec["cache_capacity"]
    logger = trt.Logger(trt.Logger.WARNING)
    plans = {}
    for part in ("encoder", "decoder"):
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(bundle / f"{part}.onnx")):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {part}.onnx: {errors}")
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        for spec in manifest[part]["inputs"]:
            shape = spec["shape"]
            points = [_dims(shape, q, capacity) for q in (1, 8, max_query)]
            profile.set_shape(spec["name"], *points)
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise RuntimeError(f"TensorRT failed to build {part}.onnx")
        (bundle / f"{part}.plan").write_bytes(bytes(plan))
        plans[part] = f"{part}.plan"
    manifest.setdefault("variants", {})["tensorrt"] = {
        **plans,
        "max_query_len": max_query,
        "tensorrt_version": trt.__version__,
    }
    manifest.pop("files", None)
    write_manifest(bundle, manifest)
    log(f"TensorRT plans written: {plans}")


def _dims(shape: list, query: int, cache: int) -> tuple[int, ...]:
    """A concrete shape for one TensorRT profile point (batch 1, the full cache)."""
    size = {
        "batch": 1,
        "query_len": query,
        "cache_len": cache,
        "cache_len+query_len": cache + query,
    }
    return tuple(size[d] if isinstance(d, str) else d for d in shape)


# Ops whose weight inputs weight_only_int8 packs (anything else keeps fp32 weights).
PACKED_CONSUMERS = frozenset({"MatMul", "Gemm", "Gather", "Transpose"})


def weight_only_int8(
    src: Path | str, dst: Path | str, min_elements: int = 4096, block: int = 64
) -> dict:
    """Store every large float initializer as int8 with one scale per `block` consecutive
    values of its last axis (per row where the axis does not divide), dequantized by Cast, Mul
    and Reshape nodes on constants, which ONNX Runtime folds once at session load: the file is
    ~3.8x smaller and the arithmetic stays fp32 (no activation quantization error).

    Only weights that feed MatMul, Gemm or Gather (and the Transpose of a tied table) are
    packed; convolution kernels and tables used any other way (Whisper's encoder positions,
    sliced) stay fp32. Measured on the fine-tuned Whisper default against its fp32 torch
    model, under the parity driver: int8 conv kernels and positions in the encoder moved
    p(respond) by up to 0.26 (logits by 3.5); MatMul weights alone by 0.04 (1.4), for 1.9 MB.
    Blocks rather than one scale per row: a row's outlier no longer coarsens all of it."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    consumers: dict[str, set[str]] = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    nodes, kept, packed = [], [], 0
    for init in g.initializer:
        n = int(np.prod(init.dims)) if init.dims else 1
        if (
            init.data_type != TensorProto.FLOAT
            or n < min_elements
            or len(init.dims) < 2
            or not consumers.get(init.name, set()) <= PACKED_CONSUMERS
        ):
            kept.append(init)
            continue
        w = numpy_helper.to_array(init)
        blocked = block > 0 and w.shape[-1] % block == 0
        rows = w.reshape(-1, block) if blocked else w.reshape(w.shape[0], -1)
        scale = np.abs(rows).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8)
        name = init.name
        if blocked:  # (values / block, block) and one scale per block, reshaped back after
            s = scale.astype(np.float32)[:, None]
            shape = numpy_helper.from_array(np.array(w.shape, np.int64), name + "__shape")
            kept += [numpy_helper.from_array(q, name + "__q"), shape]
            scaled = name + "__m"
            tail = [helper.make_node("Reshape", [scaled, name + "__shape"], [name])]
        else:
            s = scale.astype(np.float32).reshape((w.shape[0],) + (1,) * (w.ndim - 1))
            kept.append(numpy_helper.from_array(q.reshape(w.shape), name + "__q"))
            scaled, tail = name, []
        kept.append(numpy_helper.from_array(s, name + "__s"))
        nodes += [
            helper.make_node("Cast", [name + "__q"], [name + "__f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [name + "__f", name + "__s"], [scaled]),
            *tail,
        ]
        packed += n
    rewrite_constants(g, kept, nodes)
    onnx.save(m, str(dst))
    return {"int8_weights": packed, "block": block}


def rewrite_constants(graph, initializers: list, nodes: list) -> None:
    """Replace a graph's initializers and put `nodes` (which compute the removed ones from
    the kept ones) first, so every consumer still finds its input by name."""
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old)


LOGITS_QUANTIZATION = "int8-matmul: table per row, hidden per row"  # export.logits_quantization


def int8_logits(bundle: Path | str, log=print) -> dict:
    """`int8_logits_graph` on a bundle's decoder.onnx, in place; the manifest declares the
    new input and records `export.logits_quantization` (the runtime feeds `logits_int8`
    true for window readings, false for every other call). The
    report gives one decoder step's time each way and how far the int8 logits are from
    fp32, on seeded inputs."""
    import tempfile

    import numpy as np

    bundle = Path(bundle)
    path = bundle / "decoder.onnx"
    manifest = read_manifest(bundle)  # checked against the files before one changes
    if manifest.get("export", {}).get("logits_quantization"):
        raise ValueError(f"{bundle}: the decoder already has int8 logits")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "decoder.onnx"
        int8_logits_graph(path, out)
        feeds = seeded_decoder_feeds(out)
        (ref, *_), t_fp32 = timed_run(out, {**feeds, protocol.LOGITS_INT8: np.array(False)})
        (got, *_), t_int8 = timed_run(out, {**feeds, protocol.LOGITS_INT8: np.array(True)})
        staged = path.with_suffix(".onnx.tmp")
        shutil.move(out, staged)
    staged.replace(path)
    flag = {"name": protocol.LOGITS_INT8, "dtype": "bool", "shape": []}
    manifest["decoder"]["inputs"].append(flag)
    manifest.setdefault("export", {})["logits_quantization"] = LOGITS_QUANTIZATION
    manifest.pop("files", None)
    write_manifest(bundle, manifest)
    report = {
        "max_abs_logit_diff": round(float(np.abs(got - ref).max()), 4),
        "argmax_agrees": bool((got.argmax(-1) == ref.argmax(-1)).all()),
        "step_ms_fp32_logits": round(t_fp32, 2),
        "step_ms_int8_logits": round(t_int8, 2),
    }
    log(f"decoder with a choice of int8 logits: {report}")
    return report


def int8_logits_graph(src: Path | str, dst: Path | str) -> None:
    """Give a decoder graph an int8 way to its logits, chosen per call: its logits
    projection, MatMul(hidden, Transpose(table)) on the table its embedding Gather reads
    (export/whisper_export.share_transposed), becomes an If on a new boolean scalar input
    `logits_int8`: false runs the fp32 MatMul as before, true an integer matmul. (An input
    with a default would spare callers the feed, but IO bindings cannot bind one.)

    The table is requantized to int8, one scale per row, by nodes on constants that ONNX
    Runtime folds once at session load, so the file does not grow and a weight-only int8
    graph keeps its one stored copy. Each hidden row is quantized per call with its own scale
    (symmetric, shifted to uint8), so rows stay independent: a batch of streams, or a drafted
    reading's tokens, give each row what it gets alone. Weights are uint8 with zero point 128
    (u8u8): ONNX Runtime's AVX2 u8s8 kernel can saturate, u8u8 cannot. This is CTranslate2's
    int8 scheme (per-row weights and activations).
    Why: read as fp32, the 51,886 x 384 table is 80 MB per decoder step and most of its time.
    Why a choice and not a replacement: window readings (runtime/captions.py) take the int8
    branch and lost no held-out WER, but the protocol's calibrated decisions moved (one
    alert event and two instructions of the eval split) when they took it too. Why an If
    and not a second output: ONNX Runtime runs every node of the graph whatever is fetched."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    gathered = {n.input[0] for n in g.node if n.op_type == "Gather"}
    found = []  # MatMul(hidden, Transpose(table)) where the table is also the embedding
    for n in g.node:
        t = producer.get(n.input[1]) if n.op_type == "MatMul" else None
        if t is not None and t.op_type == "Transpose" and t.input[0] in gathered:
            found.append((n, t))
    if len(found) != 1:
        raise ValueError(f"{src}: expected one tied logits MatMul, found {len(found)}")
    matmul, transpose = found[0]
    hidden, table = matmul.input[0], transpose.input[0]
    (logits,) = matmul.output
    p = "logits_int8/"
    consts = [
        numpy_helper.from_array(np.array(1e-8, np.float32), p + "eps"),
        numpy_helper.from_array(np.array(127.0, np.float32), p + "qmax"),
        numpy_helper.from_array(np.array(128.0, np.float32), p + "shift"),
        numpy_helper.from_array(np.array(128, np.uint8), p + "zero"),
        numpy_helper.from_array(np.array([-1], np.int64), p + "flat"),
    ]

    def quantize_rows(x: str, tag: str) -> list:  # (..., K) -> uint8 codes, scale (..., 1)
        return [
            helper.make_node("Abs", [x], [p + tag + "_abs"]),
            helper.make_node("ReduceMax", [p + tag + "_abs"], [p + tag + "_max"], axes=[-1]),
            helper.make_node("Max", [p + tag + "_max", p + "eps"], [p + tag + "_maxe"]),
            helper.make_node("Div", [p + tag + "_maxe", p + "qmax"], [p + tag + "_scale"]),
            helper.make_node("Div", [x, p + tag + "_scale"], [p + tag + "_div"]),
            helper.make_node("Round", [p + tag + "_div"], [p + tag + "_round"]),
            helper.make_node("Add", [p + tag + "_round", p + "shift"], [p + tag + "_shifted"]),
            helper.make_node("Cast", [p + tag + "_shifted"], [p + tag + "_u8"], to=UINT8),
        ]

    UINT8 = TensorProto.UINT8
    # In the main graph: the table's codes and scales, constants folded at load.
    folded = [
        *quantize_rows(table, "w"),
        helper.make_node("Transpose", [p + "w_u8"], [p + "w_t"], perm=[1, 0]),
        helper.make_node("Reshape", [p + "w_scale", p + "flat"], [p + "w_row"]),
    ]
    int8_branch = [
        *quantize_rows(hidden, "a"),
        helper.make_node(
            "MatMulInteger", [p + "a_u8", p + "w_t", p + "zero", p + "zero"], [p + "acc"]
        ),
        helper.make_node("Cast", [p + "acc"], [p + "accf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [p + "a_scale", p + "w_row"], [p + "outer"]),
        helper.make_node("Mul", [p + "accf", p + "outer"], [p + "int8"]),
    ]
    fp32_branch = [helper.make_node("MatMul", list(matmul.input), [p + "fp32"])]

    def branch(nodes: list, out: str):
        result = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
        return helper.make_graph(nodes, p + out, [], [result])

    choose = helper.make_node(
        "If",
        [protocol.LOGITS_INT8],
        [logits],
        name=p + "choose",
        then_branch=branch(int8_branch, p + "int8"),
        else_branch=branch(fp32_branch, p + "fp32"),
    )
    at = list(g.node).index(matmul)
    old = [n for n in g.node if n is not matmul]
    del g.node[:]
    g.node.extend(old[:at] + folded + [choose] + old[at:])
    g.initializer.extend(consts)
    g.input.append(helper.make_tensor_value_info(protocol.LOGITS_INT8, TensorProto.BOOL, []))
    onnx.save(model, str(dst))


def seeded_decoder_feeds(path: Path, cache: int = 32, memory: int = 220, seed: int = 0) -> dict:
    """Seeded inputs for one decoder step: a token after `cache` entries, a full memory."""
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    size = {"batch": 1, "query_len": 1, "cache_len": cache, "cache_len+query_len": cache + 1}
    size["memory_len"] = memory
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else size[d] for d in i.shape]
        if i.type == "tensor(bool)":
            feeds[i.name] = np.array(False)
        elif i.type == "tensor(int64)":
            feeds[i.name] = rng.integers(0, 40, shape).astype(np.int64)
        elif "mask" in i.name:
            feeds[i.name] = np.zeros(shape, np.float32)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def timed_run(path: Path, feeds: dict, repeat: int = 20) -> tuple[list, float]:
    """(outputs, median ms per call) of one graph on `feeds`."""
    import time

    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, feeds)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t)
    return out, float(np.median(times) * 1e3)
