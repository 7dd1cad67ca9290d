"""Weight-only int8 (export/quantize.weight_only_int8): MatMul weights packed in 64-value blocks
and dequantized inside the graph, convolution kernels left fp32, and the warm start's reader
(train/kinds/whisper/warmstart.bundle_weights) getting the weights back within block rounding."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def _graph(path, rng) -> dict[str, np.ndarray]:
    w = rng.standard_normal((128, 256)).astype(np.float32)
    w[3, 7] = 40.0  # an outlier: with one scale per row it would coarsen all of row 3
    k = rng.standard_normal((8, 4, 3)).astype(np.float32) * 0.1
    k = np.repeat(k, 512, axis=0)  # 4096+ values, so only the op rule keeps it fp32
    inits = {"w": w, "k": k}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"]),
        helper.make_node("Conv", ["s", "k"], ["z"], pads=[1, 1]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 4, 16]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4096, 16]),
        ],
        [numpy_helper.from_array(v, n) for n, v in inits.items()],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return inits


def _run(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_matmul_weights_packed_in_blocks_conv_kept(tmp_path):
    from soundflow.export.quantize import weight_only_int8
    from soundflow.train.kinds.whisper.warmstart import bundle_weights

    rng = np.random.default_rng(0)
    weights = _graph(tmp_path / "fp32.onnx", rng)
    report = weight_only_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
    assert report["int8_weights"] == 128 * 256

    stored = {i.name: i for i in onnx.load(str(tmp_path / "int8.onnx")).graph.initializer}
    assert stored["w__q"].data_type == TensorProto.INT8 and "w" not in stored
    assert stored["k"].data_type == TensorProto.FLOAT  # the conv kernel: not packed

    back = bundle_weights(tmp_path / "int8.onnx")
    assert back["w"].shape == weights["w"].shape
    np.testing.assert_array_equal(back["k"], weights["k"])
    # Each 64-value block has its own scale, so row 3's outlier only coarsens its own block.
    err = np.abs(back["w"] - weights["w"])
    blocks = np.abs(weights["w"]).reshape(128, 4, 64).max(axis=2) / 127
    assert (err.reshape(128, 4, 64) <= blocks[..., None] / 2 + 1e-6).all()
    assert err[3, 64:].max() < 0.05  # the outlier's row, outside its block

    feeds = {
        "x": rng.standard_normal((1, 128)).astype(np.float32),
        "s": rng.standard_normal((1, 4, 16)).astype(np.float32),
    }
    (y0, z0), (y1, z1) = _run(tmp_path / "fp32.onnx", feeds), _run(tmp_path / "int8.onnx", feeds)
    np.testing.assert_allclose(y1, feeds["x"] @ back["w"], rtol=1e-4, atol=1e-4)
    assert np.abs(y1 - y0).max() < 0.02 * np.abs(y0).max()
    np.testing.assert_array_equal(z1, z0)
