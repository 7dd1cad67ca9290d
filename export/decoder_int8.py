"""`int8_decoder`: a Whisper-kind bundle's decoder layers as int8 matmuls (ONNX Runtime's
MatMulNBits, 8 bits), in place, with a report of the step time and the change in the logits.

Why: a decoder call of one token spent ~4 of its ~7 ms on one core reading its 32 layer
matrices as fp32 (7 M weights, 28 MB a call); as 8-bit blocks with int8 arithmetic it is a
quarter of the bytes. Why MatMulNBits and not dynamic quantization (MatMulInteger): it
quantizes each row of the activations on its own (per block of `block` values), so a row's
result does not depend on the rows beside it. A drafted reading's tokens, or the streams
the server stacks into one call, get what each gets alone, as `--int8-logits` already does.
The tied logits table is left as it is (its int8 way is `--int8-logits`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from soundflow import protocol
from soundflow.manifest import read_manifest, write_manifest

BITS = 8
BLOCK = 64  # values of K per weight scale and per activation scale
ACCURACY_LEVEL = 4  # MatMulNBits: int8 arithmetic (activations quantized per row and block)


def pack(w: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(K, N) float weight -> MatMulNBits' B (N, K / block, block) uint8 and its scales
    (N, K / block) float32: symmetric, one scale per `block` values of each column."""
    k, n = w.shape
    if k % block:
        raise ValueError(f"K={k} is not a multiple of the block {block}")
    blocks = np.ascontiguousarray(w.T, dtype=np.float32).reshape(n, k // block, block)
    scale = np.abs(blocks).max(axis=-1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(blocks / scale[..., None]), -127, 127)
    return (q + protocol.NBITS_ZERO).astype(np.uint8), scale.astype(np.float32)


def unpack(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """`pack`'s inverse up to rounding: B and scales -> the (K, N) float32 weight."""
    n, kb, block = codes.shape
    w = (codes.astype(np.float32) - protocol.NBITS_ZERO) * scale.reshape(n, kb, 1)
    return np.ascontiguousarray(w.reshape(n, kb * block).T)


def int8_decoder_graph(src: Path | str, dst: Path | str, block: int = BLOCK) -> int:
    """Rewrite every top-level MatMul of `src` whose weight is stored (an initializer, or a
    weight-only int8 one: export/quantize.weight_only_int8's `X__q`/`X__s`) as MatMulNBits
    on `X` + protocol.NBITS_CODES / NBITS_SCALES. The tied logits MatMul reads a computed
    Transpose and is not touched. Returns how many were rewritten."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, int] = {}
    for n in g.node:
        for name in n.input:
            readers[name] = readers.get(name, 0) + 1

    def stored(name: str) -> tuple[np.ndarray, list] | None:
        """The weight named `name` as float32 and the dequantizing nodes that made it."""
        if name in inits:
            return numpy_helper.to_array(inits[name]).astype(np.float32), []
        if name + "__q" not in inits:
            return None
        q = numpy_helper.to_array(inits[name + "__q"]).astype(np.float32)
        s = numpy_helper.to_array(inits[name + "__s"])
        chain = [producer[name]]
        if name + "__shape" in inits:  # block-wise: Reshape(Mul(Cast(q), s))
            chain.append(producer[chain[0].input[0]])
            w = (q * s).reshape(tuple(numpy_helper.to_array(inits[name + "__shape"])))
        else:
            w = q * s
        chain.append(producer[chain[-1].input[0]])  # the Cast
        return w, chain

    drop_nodes, drop_inits, new_inits, count = set(), set(), [], 0
    nodes = []
    for n in g.node:
        found = stored(n.input[1]) if n.op_type == "MatMul" else None
        if found is None or found[0].ndim != 2 or readers.get(n.input[1], 0) != 1:
            nodes.append(n)
            continue
        w, chain = found
        k, cols = w.shape
        if k % block:
            nodes.append(n)
            continue
        codes, scale = pack(w, block)
        name = n.input[1]
        new_inits += [
            numpy_helper.from_array(codes, name + protocol.NBITS_CODES),
            numpy_helper.from_array(scale, name + protocol.NBITS_SCALES),
        ]
        drop_nodes.update(id(c) for c in chain)
        drop_inits.update({name, name + "__q", name + "__s", name + "__shape"})
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [n.input[0], name + protocol.NBITS_CODES, name + protocol.NBITS_SCALES],
                list(n.output),
                name=(n.name or name) + "/nbits",
                domain="com.microsoft",
                K=k,
                N=cols,
                bits=BITS,
                block_size=block,
                accuracy_level=ACCURACY_LEVEL,
            )
        )
        count += 1
    kept = [n for n in nodes if id(n) not in drop_nodes]
    still_read = {name for n in kept for name in n.input}
    del g.node[:]
    g.node.extend(kept)
    remaining = [i for i in g.initializer if i.name not in drop_inits or i.name in still_read]
    del g.initializer[:]
    g.initializer.extend(remaining + new_inits)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))
    return count


def int8_decoder(bundle: Path | str, log=print) -> dict:
    """`int8_decoder_graph` on a bundle's decoder.onnx, in place; the manifest records
    `export.decoder_quantization`. The report gives a one-token step's time before and
    after and how far the logits moved, on seeded inputs (the bundle's own checks, eval and
    calibrate, are what judge it)."""
    import tempfile

    from soundflow.export.quantize import seeded_decoder_feeds, timed_run

    bundle = Path(bundle)
    path = bundle / "decoder.onnx"
    manifest = read_manifest(bundle)  # checked against the files before one changes
    if manifest.get("export", {}).get("decoder_quantization"):
        raise ValueError(f"{bundle}: the decoder's layers are already int8")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "decoder.onnx"
        count = int8_decoder_graph(path, out)
        if not count:
            raise ValueError(f"{path}: no stored MatMul weight to quantize")
        feeds = seeded_decoder_feeds(path)
        (ref, *_), before = timed_run(path, feeds)
        (got, *_), after = timed_run(out, feeds)
        staged = path.with_suffix(".onnx.tmp")
        out.replace(staged)
    staged.replace(path)
    manifest.setdefault("export", {})["decoder_quantization"] = protocol.DECODER_NBITS_INT8
    manifest.pop("files", None)
    write_manifest(bundle, manifest)
    report = {
        "matmuls": count,
        "decoder_mb": round(path.stat().st_size / 1e6, 2),
        "max_abs_logit_diff": round(float(np.abs(got - ref).max()), 4),
        "argmax_agrees": bool((got.argmax(-1) == ref.argmax(-1)).all()),
        "step_ms_before": round(before, 2),
        "step_ms_after": round(after, 2),
    }
    log(f"decoder layers with int8 matmuls: {report}")
    return report
