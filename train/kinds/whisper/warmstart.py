"""A Whisper-kind training run started from a shipped bundle: the weights the bundle's
decoder.onnx holds (int8 per row, dequantized) go back into the torch model they came from.

A machine that keeps only the repository keeps no checkpoint (an fp32 tiny.en checkpoint is
150 MB), so fine-tuning that spans sessions continues from the committed bundle. Only what the
recipes train is taken from the bundle (the decoder layers, its final norm and the appended
token rows); Whisper's frozen weights (its own token rows, positions, the encoder and the
cross-attention keys/values) come from the pretrained import at full precision.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from soundflow import protocol
from soundflow.train.kinds.whisper.model import KIND, WhisperSoundFlow
from soundflow.train.kinds.whisper.recipes import RECIPES

# A fine-tuned matrix stays this close to its pretrained self (relative Frobenius distance);
# another layer's matrix of the same shape is ~1.4 away. Past it, the match is refused.
MAX_DRIFT = 0.3


class WarmStartError(ValueError):
    pass


def bundle_weights(path: Path | str) -> dict[str, np.ndarray]:
    """Every initializer of an ONNX graph, int8 pairs (`X__q`, `X__s`) dequantized to `X`
    (block-wise ones reshaped back by their `X__shape`, export/quantize.weight_only_int8),
    and MatMulNBits weights (`X__nb8`, `X__nbs`, export --int8-decoder) back to (K, N) `X`."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    raw = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    out = {}
    for name, arr in raw.items():
        if name.endswith(("__s", "__shape", protocol.NBITS_SCALES)):
            continue
        if name.endswith(protocol.NBITS_CODES):  # (N, K / block, block) uint8 codes
            base = name[: -len(protocol.NBITS_CODES)]
            n, kb, block = arr.shape
            scale = raw[base + protocol.NBITS_SCALES].reshape(n, kb, 1)
            w = (arr.astype(np.float32) - protocol.NBITS_ZERO) * scale
            out[base] = np.ascontiguousarray(w.reshape(n, kb * block).T)
            continue
        if name.endswith("__q"):
            base = name[: -len("__q")]
            w = arr.astype(np.float32) * raw[base + "__s"]
            shape = raw.get(base + "__shape")
            out[base] = w if shape is None else w.reshape(tuple(shape))
        else:
            out[name] = arr
    return out


def model_from_bundle(bundle: Path | str, whisper_dir: Path | None = None, log=print):
    """-> (model, tokenizer, report): the Whisper import with the bundle's trained weights.
    Refuses a bundle of another kind, another vocabulary or other dimensions."""
    from soundflow.train.kinds.whisper.ckpt import load_whisper

    bundle = Path(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    kind = manifest.get("decoder", {}).get("kind")
    if kind != KIND:
        raise WarmStartError(f"{bundle}: a {kind or 'decoder-only'} bundle, not {KIND}")
    special = manifest.get("special_tokens", {})
    tags = [t for t in special if protocol.TAG_PATTERN.fullmatch(t)]
    if not tags:
        raise WarmStartError(f"{bundle}: its manifest names no alert/intent tags")
    model, tok = WhisperSoundFlow.from_whisper(load_whisper(whisper_dir), tags)
    added = sorted((i, t) for t, i in special.items() if i >= model.vocab.base_size)
    if [t for _, t in added] != list(model.vocab.added):
        raise WarmStartError(
            f"{bundle}: appended tokens {[t for _, t in added]} differ from this vocabulary "
            f"{list(model.vocab.added)}"
        )
    dec = manifest["decoder"]
    want = {"cache_capacity": model.cfg.cache_capacity, "memory_frames": model.cfg.memory_frames}
    if {k: dec.get(k) for k in want} != want:
        raise WarmStartError(f"{bundle}: decoder dimensions {dec} differ from the recipe's {want}")
    weights = bundle_weights(bundle / "decoder.onnx")
    report = load_trained(model, weights)
    log(
        f"warm start from {bundle}: {report['named']} named and {report['matched']} matched "
        f"tensors, largest drift from Whisper {report['max_drift']:.3f}"
    )
    return model, tok, report


def load_trained(model: WhisperSoundFlow, weights: dict[str, np.ndarray]) -> dict:
    """Copy the trainable decoder tensors from `weights` (an exported decoder graph's) into
    `model`. Named initializers (biases, norms) map by name; the tracer's anonymous MatMul
    weights (stored transposed) are matched to the pretrained matrix they drifted from."""
    d = model.decoder
    base = d.embed_base.shape[0]
    table = next(
        (w for w in weights.values() if w.ndim == 2 and w.shape == (model.vocab.size, d.d)), None
    )
    if table is None:
        raise WarmStartError(f"decoder graph holds no ({model.vocab.size}, {d.d}) token table")
    with torch.no_grad():
        d.embed_new.copy_(torch.from_numpy(table[base:]))
    named = 1
    linears = {}
    for name, p in d.named_parameters():
        if not name.startswith("layers.") and not name.startswith("norm."):
            continue
        if "encoder_attn.k_proj" in name or "encoder_attn.v_proj" in name:
            continue  # frozen, and computed in the encoder graph
        key = "decoder." + name
        if key in weights:
            if weights[key].shape != tuple(p.shape):
                raise WarmStartError(f"{key}: shape {weights[key].shape} != {tuple(p.shape)}")
            with torch.no_grad():
                p.copy_(torch.from_numpy(np.array(weights[key])))
            named += 1
        elif p.ndim == 2:
            linears[name] = p
        # else: a bias the graph folded away (none in Whisper's decoder); left pretrained
    anonymous = {
        k: w
        for k, w in weights.items()
        if w.ndim == 2 and k.startswith("onnx::") and w.shape != table.shape
    }
    if len(anonymous) != len(linears):
        raise WarmStartError(
            f"decoder graph has {len(anonymous)} unnamed matrices, the model {len(linears)}"
        )
    taken, drifts = set(), []
    for key, w in anonymous.items():
        best = sorted(
            (_drift(w.T, p), name)
            for name, p in linears.items()
            if tuple(p.shape) == w.T.shape and name not in taken
        )
        if not best or best[0][0] > MAX_DRIFT or (len(best) > 1 and best[1][0] < 2 * best[0][0]):
            raise WarmStartError(f"{key}: no unambiguous pretrained match (best {best[:2]})")
        drift, name = best[0]
        taken.add(name)
        drifts.append(drift)
        with torch.no_grad():
            linears[name].copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
    return {"named": named, "matched": len(taken), "max_drift": max(drifts, default=0.0)}


def _drift(w: np.ndarray, p: torch.Tensor) -> float:
    ref = p.detach().numpy()
    return float(np.linalg.norm(w - ref) / (np.linalg.norm(ref) + 1e-12))


def bundle_lineage(bundle: Path | str) -> list[dict]:
    """The runs behind a bundle's weights, oldest first: its manifest's `model.lineage`, or
    for a bundle exported before lineages were recorded, its one recipe run in full."""
    model = json.loads((Path(bundle) / "manifest.json").read_text()).get("model", {})
    if model.get("lineage"):
        return list(model["lineage"])
    recipe = RECIPES.get(model.get("recipe") or "")
    return [{"recipe": recipe.name, "steps": sum(s.steps for s in recipe.stages)}] if recipe else []
