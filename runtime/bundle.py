"""Load and verify a bundle (ARCHITECTURE.md, Contract 3) before anything runs.

`read_manifest` checks format, version, sizes and hashes; here the manifest's fields are
parsed into a `BundleSpec`, and once ONNX Runtime has opened the graphs, every input and
output name, dtype and fixed dimension is checked against the manifest. Every failure is
a `BundleError` that names the file and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from soundflow import protocol
from soundflow.manifest import BundleError, StateSpec, TensorSpec, read_manifest
from soundflow.runtime.audioset_spec import AudiosetSpec
from soundflow.runtime.graph_check import ORT_TYPES, check_session  # noqa: F401 (importable here)
from soundflow.runtime.tagger import TaggerSpec
from soundflow.runtime.validate import validate_manifest

FIX = "re-run `soundflow export CHECKPOINT --out DIR`"


def default_bundle_dir() -> Path:
    """The embedded default bundle shipped inside the package."""
    return Path(str(resources.files("soundflow") / "assets" / "default_bundle"))


@dataclass(frozen=True)
class BundleSpec:
    """What the runtime needs from a manifest, parsed and checked once."""

    path: Path
    manifest: dict[str, Any]
    sample_rate: int
    chunk_ms: int
    chunk_samples: int
    embeds_per_chunk: int
    hidden: int
    vocab: int
    layers: int
    kv_heads: int
    head_dim: int
    cache_capacity: int
    mask_value: float
    encoder_file: Path
    decoder_file: Path
    encoder_inputs: tuple[TensorSpec, ...]
    encoder_outputs: tuple[TensorSpec, ...]
    encoder_state: tuple[StateSpec, ...]
    decoder_inputs: tuple[TensorSpec, ...]
    decoder_outputs: tuple[TensorSpec, ...]
    embeddings_file: Path | None  # decoder-only kind: the token-embedding table
    tokenizer_file: Path
    control: dict[str, int]  # silence, respond, eos, bos
    special: dict[str, int]  # every special token -> id
    tasks: dict[str, tuple[int, ...]]  # mode -> prompt ids
    decision: dict[str, Any]  # threshold, refractory_s, max_response_tokens
    trained: bool
    label: str  # a human name for banners: "smoke (untrained)"
    # "native": the model decides with <silence>/<respond> (Contract 2). "fallback": a plain
    # chat model (manifest `control.mode`); an utterance-end policy decides, and the
    # decoder is driven in chat turns: prompt, audio..., respond_ids, answer, resume_ids.
    control_mode: str = "native"
    stop_ids: tuple[int, ...] = ()  # generation ends at any of these
    respond_ids: dict[str, tuple[int, ...]] | None = None  # fallback: mode -> turn switch
    resume_ids: tuple[int, ...] = ()  # fallback: back to the user turn's audio
    # "decoder-only" (Contract 3: audio embeddings inline) or "whisper-cross" (Contract 3c:
    # a cross-attention memory of `memory_frames` frames, learned positions below
    # `max_positions`, re-prefill after eviction).
    kind: str = "decoder-only"
    memory_frames: int = 0
    max_positions: int = 0
    tagger: TaggerSpec | None = None  # cross kind, optional: alert mode's tagger (Contract 3d)
    audioset: AudiosetSpec | None = None  # optional: YAMNet on the last 0.96 s (audioset.py)

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(self.tasks)

    @property
    def tag_ids(self) -> dict[int, str]:
        """Special ids of <alert:x>/<intent:x> tags."""
        return {i: t for t, i in self.special.items() if protocol.TAG_PATTERN.fullmatch(t)}

    def prompt(self, mode: str | None) -> tuple[str, tuple[int, ...]]:
        if mode is None:
            mode = self.modes[0]
        if mode not in self.tasks:
            raise BundleError(
                f"mode {mode!r} is not one of this bundle's task prompts {list(self.modes)} "
                f"({self.path / 'manifest.json'}); pass --mode with one of them"
            )
        return mode, self.tasks[mode]


def _get(m: dict[str, Any], dotted: str, path: Path) -> Any:
    cur: Any = m
    for key in dotted.split("."):
        if not isinstance(cur, dict) or key not in cur:
            raise BundleError(f"{path}: manifest lacks `{dotted}`; {FIX} with this soundflow")
        cur = cur[key]
    return cur


def load_spec(
    bundle_dir: Path | str | None = None, verify_hashes: bool = True, variant: str = "fp32"
) -> BundleSpec:
    """Read and check `manifest.json`; `variant` "int8" picks the quantized graphs."""
    path = Path(bundle_dir) if bundle_dir is not None else default_bundle_dir()
    m = read_manifest(path, verify_hashes=verify_hashes)
    mpath = path / "manifest.json"
    validate_manifest(m, mpath)  # types, ranges, paths and memory, before any field is used
    g = lambda key: _get(m, key, mpath)  # noqa: E731
    enc_file, dec_file = g("encoder.file"), g("decoder.file")
    if variant != "fp32":
        variants = m.get("variants", {})
        if variant not in variants:
            raise BundleError(
                f"{mpath}: no {variant!r} graphs (variants: {sorted(variants) or 'none'}); "
                f"add them with `soundflow export --{variant}` or run fp32"
            )
        enc_file, dec_file = variants[variant]["encoder"], variants[variant]["decoder"]
    kind = (
        m.get("decoder", {}).get("kind", "decoder-only")
        if isinstance(m.get("decoder"), dict)
        else ""
    )
    if kind not in ("decoder-only", "whisper-cross"):
        raise BundleError(
            f"{mpath}: decoder kind {kind!r} is unknown to this soundflow; upgrade soundflow "
            "or re-export"
        )
    model = m.get("model", {})
    trained = bool(model.get("trained", False))
    name = model.get("recipe") or model.get("name") or path.name
    chunk_samples = int(g("audio.chunk_samples"))
    tasks = {t: tuple(int(i) for i in v["prompt_ids"]) for t, v in g("tasks").items()}
    if not tasks:
        raise BundleError(f"{mpath}: lists no task prompts; {FIX}")
    decision = dict(g("decision"))
    for key in ("threshold", "refractory_s", "max_response_tokens"):
        if key not in decision:
            raise BundleError(f"{mpath}: decision lacks `{key}`; {FIX}")
    control = m.get("control") or {}
    control_mode = control.get("mode", "native")
    if control_mode not in ("native", "fallback"):
        raise BundleError(
            f"{mpath}: control mode {control_mode!r} is unknown to this soundflow; "
            "upgrade soundflow or re-export"
        )
    ctrl_ids = {k: int(v) for k, v in g("control_ids").items()}
    stop_ids = tuple(int(i) for i in control.get("stop_ids") or [ctrl_ids.get("eos", -1)])
    respond_ids = resume_ids = None
    if control_mode == "fallback":
        try:
            respond_ids = {
                t: tuple(int(i) for i in v["respond_ids"]) for t, v in g("tasks").items()
            }
            resume_ids = tuple(int(i) for i in g("prompt_template")["resume_ids"])
        except (KeyError, TypeError):
            raise BundleError(
                f"{mpath}: a fallback-control bundle needs tasks.*.respond_ids and "
                f"prompt_template.resume_ids; {FIX}"
            ) from None
    return BundleSpec(
        path=path,
        manifest=m,
        sample_rate=int(g("audio.sample_rate")),
        chunk_ms=int(g("audio.chunk_ms")),
        chunk_samples=chunk_samples,
        embeds_per_chunk=int(g("encoder.embeds_per_chunk")),
        hidden=int(g("decoder.hidden_size")),
        vocab=int(g("decoder.vocab_size")),
        layers=int(g("decoder.num_layers")),
        kv_heads=int(g("decoder.num_kv_heads")),
        head_dim=int(g("decoder.head_dim")),
        cache_capacity=int(g("decoder.cache_capacity")),
        mask_value=float(m["decoder"].get("mask_value", protocol.MASK_VALUE)),
        encoder_file=path / enc_file,
        decoder_file=path / dec_file,
        encoder_inputs=tuple(TensorSpec.from_json(s) for s in g("encoder.inputs")),
        encoder_outputs=tuple(TensorSpec.from_json(s) for s in g("encoder.outputs")),
        encoder_state=tuple(StateSpec.from_json(s) for s in g("encoder.state")),
        decoder_inputs=tuple(TensorSpec.from_json(s) for s in g("decoder.inputs")),
        decoder_outputs=tuple(TensorSpec.from_json(s) for s in g("decoder.outputs")),
        embeddings_file=path / g("embeddings.file") if kind == "decoder-only" else None,
        tokenizer_file=path / g("tokenizer.file"),
        control=ctrl_ids,
        special={k: int(v) for k, v in g("special_tokens").items()},
        tasks=tasks,
        decision=decision,
        trained=trained,
        label=f"{name}" + ("" if trained else " (untrained)"),
        control_mode=control_mode,
        stop_ids=stop_ids,
        respond_ids=respond_ids,
        resume_ids=resume_ids or (),
        kind=kind,
        memory_frames=int(g("decoder.memory_frames")) if kind == "whisper-cross" else 0,
        max_positions=int(g("decoder.max_positions")) if kind == "whisper-cross" else 0,
        tagger=TaggerSpec.from_manifest(m["tagger"], path, mpath) if "tagger" in m else None,
        audioset=AudiosetSpec.from_manifest(m, path, mpath) if "audioset" in m else None,
    )


# ONNX metadata key (written by the exporter into each graph, sherpa-onnx's habit) -> the
# manifest field it must equal. A graph found on its own says how to drive it; inside a
# bundle, the runtime reads it back and refuses a graph from another export.
METADATA_FIELDS = {
    "kind": "decoder.kind",
    "sample_rate": "audio.sample_rate",
    "chunk_ms": "audio.chunk_ms",
    "chunk_samples": "audio.chunk_samples",
    "embeds_per_chunk": "encoder.embeds_per_chunk",
    "state": "encoder.state",
    "hidden_size": "decoder.hidden_size",
    "num_layers": "decoder.num_layers",
    "num_heads": "decoder.num_heads",
    "num_kv_heads": "decoder.num_kv_heads",
    "head_dim": "decoder.head_dim",
    "vocab_size": "decoder.vocab_size",
    "cache_capacity": "decoder.cache_capacity",
    "cache_layout": "decoder.cache_layout",
    "memory_frames": "decoder.memory_frames",
    "max_positions": "decoder.max_positions",
    "mask_value": "decoder.mask_value",
    "control_ids": "control_ids",
    "source_architecture": "source.architecture",
}
METADATA_DEFAULTS = {"decoder.kind": "decoder-only"}


def graph_metadata(session: Any) -> dict[str, Any]:
    """The constants a graph carries in its ONNX metadata, JSON values decoded."""
    out: dict[str, Any] = {}
    for key, raw in session.get_modelmeta().custom_metadata_map.items():
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw  # strings are stored bare
    return out


def check_metadata(session: Any, file: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Every constant the graph's metadata declares must be the manifest's (keys the graph
    does not carry are not checked); returns the metadata."""
    meta = graph_metadata(session)
    for key, dotted in METADATA_FIELDS.items():
        if key not in meta:
            continue
        cur: Any = manifest
        for part in dotted.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        want = METADATA_DEFAULTS.get(dotted) if cur is None else cur
        if want is not None and meta[key] != want:
            raise BundleError(
                f"{file}: the graph's metadata says {key} = {meta[key]!r}, manifest.json says "
                f"{dotted} = {want!r}; the graph is from another export: copy the bundle "
                f"again or {FIX}"
            )
    return meta


def check_consistency(spec: BundleSpec) -> None:
    """Cross-field checks that catch a hand-edited or mismatched manifest early."""
    mpath = spec.path / "manifest.json"
    for name in ("silence", "respond", "eos", "bos"):
        if name not in spec.control:
            raise BundleError(f"{mpath}: control_ids lacks {name!r}; {FIX}")
        if not 0 <= spec.control[name] < spec.vocab:
            raise BundleError(
                f"{mpath}: control id {name}={spec.control[name]} is outside the vocabulary; {FIX}"
            )
    if spec.chunk_samples * 1000 != spec.sample_rate * spec.chunk_ms:
        raise BundleError(f"{mpath}: chunk_samples does not match chunk_ms at sample_rate; {FIX}")
    names = {s.name for s in spec.encoder_inputs}
    for st in spec.encoder_state:
        if st.input not in names:
            raise BundleError(f"{mpath}: encoder state {st.input} is not an encoder input; {FIX}")
