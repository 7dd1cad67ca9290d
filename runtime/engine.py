"""Engines: the weights. ONNX Runtime sessions for the encoder and the decoder behind one
backend interface (`new_state`/`reset`, `encode`, `decode_step`), chosen by `provider=`.

The engine owns the weights and is shared; a stream owns the state (encoder state
tensors, the KV cache) and passes it in. Decoder calls use IO binding: the fixed-capacity
cache arrays are bound once per stream, zero-copy on CPU, and updated in place between
calls, so a step binds only its few new tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from soundflow import protocol
from soundflow.manifest import BundleError
from soundflow.runtime.bundle import (
    BundleSpec,
    check_consistency,
    check_metadata,
    check_session,
    load_spec,
)
from soundflow.runtime.detokenize import Detokenizer
from soundflow.runtime.kvcache import KVCache
from soundflow.runtime.options import RuntimeOptions

PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
GPU_HINT = "pip install onnxruntime-gpu (CUDA 12) and check `nvidia-smi`"
# What an export may have put in a graph (manifest `export`) and the first onnxruntime that
# runs it: older ones fail at load with an operator message that names no fix.
NEEDS_ORT = {
    ("decoder_quantization", protocol.DECODER_NBITS_INT8): (
        (1, 22),
        "8-bit MatMulNBits decoder layers (soundflow export --int8-decoder)",
    ),
}


def check_onnxruntime(manifest: dict, version: str = ort.__version__) -> None:
    """Refuse, with the fix, a bundle whose graphs need a newer onnxruntime than `version`."""
    have = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    export = manifest.get("export") or {}
    for (key, value), (need, what) in NEEDS_ORT.items():
        if export.get(key) == value and have < need:
            want = ".".join(map(str, need))
            raise BundleError(
                f"this bundle has {what}, which onnxruntime {version} cannot run: they need "
                f"onnxruntime >= {want}: pip install -U 'onnxruntime>={want}' (or use a bundle "
                "exported without that option)"
            )


def _trt_options(cache_dir: Path) -> dict[str, Any]:
    """TensorRT EP: fp16, and engines cached across runs (building one takes minutes)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    return {
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
    }


def select_providers(provider: str, cache_dir: Path | None = None) -> list[Any]:
    """Execution providers for a flag value, from what this onnxruntime has."""
    available = ort.get_available_providers()
    if provider == "auto":
        return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + [
            "CPUExecutionProvider"
        ]
    name = PROVIDER_NAMES[provider]
    if name not in available:
        raise BundleError(
            f"execution provider {provider!r} is not available in this onnxruntime "
            f"(available: {available}); {GPU_HINT}, or use --provider cpu"
        )
    chain: list[Any] = [name]
    if provider == "tensorrt":
        where = cache_dir or Path.home() / ".cache" / "soundflow" / "trt"
        chain = [(name, _trt_options(where)), "CUDAExecutionProvider"]  # CUDA: what TRT declines
    return chain + ([] if name == "CPUExecutionProvider" else ["CPUExecutionProvider"])


def load_session(path, providers: list[str], threads: int) -> ort.InferenceSession:
    """One graph's ONNX Runtime session (threads that sleep when idle), or a BundleError."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Two sessions share the cores in async mode: idle threads must sleep, not spin.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=providers)
    except (
        ort.capi.onnxruntime_pybind11_state.Fail,
        ort.capi.onnxruntime_pybind11_state.InvalidGraph,
        ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
        ort.capi.onnxruntime_pybind11_state.NoSuchFile,
    ) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise BundleError(
            f"{path}: ONNX Runtime cannot load it ({first}); the file is corrupt or from an "
            "incompatible exporter: copy the bundle again or re-run `soundflow export`"
        ) from None


def _digest(spec: BundleSpec) -> str:
    """A name for this bundle's compiled engines: the graphs' hashes from the manifest."""
    files = spec.manifest.get("files", {})
    parts = [
        files.get(p.name, {}).get("sha256", p.name) for p in (spec.encoder_file, spec.decoder_file)
    ]
    return "-".join(x[:12] for x in parts)


def _zeros(shape, dtype: str) -> np.ndarray:
    return np.zeros([1 if isinstance(d, str) else d for d in shape], dtype=dtype)


def zero_state(spec: BundleSpec) -> dict[str, np.ndarray]:
    """Fresh encoder state: zeros for every carried tensor (stream start), batch 1."""
    return {s.input: _zeros(s.shape, s.dtype) for s in spec.encoder_state}


def contract_names(spec: BundleSpec) -> tuple[list[str], list[str]]:
    """The decoder-only graph's cache names (soundflow/protocol.py), checked against the
    manifest's signature: -> (past names, present names), (key, value) per layer."""
    past, present = protocol.past_names(spec.layers), protocol.present_names(spec.layers)
    want = {
        "encoder inputs": ({protocol.AUDIO}, spec.encoder_inputs),
        "encoder outputs": ({protocol.AUDIO_EMBEDS}, spec.encoder_outputs),
        "decoder inputs": (
            {protocol.INPUTS_EMBEDS, protocol.ATTENTION_MASK, protocol.POSITION_IDS, *past},
            spec.decoder_inputs,
        ),
        "decoder outputs": ({protocol.LOGITS, *present}, spec.decoder_outputs),
    }
    for what, (names, specs) in want.items():
        missing = sorted(names - {s.name for s in specs})
        if missing:
            raise BundleError(
                f"{spec.path / 'manifest.json'}: {what} lack {missing} (soundflow's graph "
                "contract); re-run `soundflow export`"
            )
    return past, present


class OrtEngine:
    """Encoder + decoder sessions, the token-embedding table and the detokenizer.

    The decoder-only kind's engine; `runtime.kinds.open_engine(bundle)` opens whichever
    kind a bundle's manifest says (a whisper-cross bundle: `runtime.kinds.whisper.CrossEngine`)."""

    def __init__(
        self,
        bundle: BundleSpec | str | None = None,
        options: RuntimeOptions | None = None,
        variant: str = "fp32",
    ) -> None:
        self.options = options or RuntimeOptions()
        spec = bundle if isinstance(bundle, BundleSpec) else load_spec(bundle, variant=variant)
        if spec.kind != "decoder-only":
            raise BundleError(
                f"{spec.path}: a {spec.kind} bundle; open it with "
                "soundflow.runtime.kinds.open_engine (it picks the kind's engine)"
            )
        self.spec = spec
        self._open_sessions(spec)
        try:
            self.embed_tokens = np.load(spec.embeddings_file, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise BundleError(
                f"{spec.embeddings_file}: unreadable ({e}); re-run `soundflow export`"
            ) from None
        if self.embed_tokens.shape != (spec.vocab, spec.hidden):
            raise BundleError(
                f"{spec.embeddings_file}: shape {self.embed_tokens.shape}, the decoder needs "
                f"({spec.vocab}, {spec.hidden}); re-run `soundflow export`"
            )
        self.embed_tokens = self.embed_tokens.astype(np.float32, copy=False)
        self.detokenizer = Detokenizer.from_file(spec.tokenizer_file)
        self.past_names, self.present_names = contract_names(spec)
        self.audio_name = protocol.AUDIO  # the encoder's PCM input
        self.embeds_name = protocol.AUDIO_EMBEDS  # its embeddings output (this kind's)
        self._state_out = [s.output for s in spec.encoder_state]
        self.encoder_outputs = [self.embeds_name, *self._state_out]  # run order
        self._dec_outputs = [protocol.LOGITS, *self.present_names]

    def _open_sessions(self, spec: BundleSpec) -> None:
        """Both sessions on the chosen providers, each checked against the manifest: its
        signature (names, dtypes, fixed dims) and its metadata (the constants it carries)."""
        check_consistency(spec)
        check_onnxruntime(spec.manifest)
        cache = Path.home() / ".cache" / "soundflow" / "trt" / _digest(spec)
        self.providers = select_providers(self.options.engine.provider, cache)
        threads = self.options.engine.session_threads()
        self.encoder = load_session(spec.encoder_file, self.providers, threads)
        check_session(self.encoder, spec.encoder_file, spec.encoder_inputs, spec.encoder_outputs)
        self.decoder = load_session(spec.decoder_file, self.providers, threads)
        check_session(self.decoder, spec.decoder_file, spec.decoder_inputs, spec.decoder_outputs)
        check_metadata(self.encoder, spec.encoder_file, spec.manifest)
        check_metadata(self.decoder, spec.decoder_file, spec.manifest)

    @property
    def provider(self) -> str:
        """The execution provider the decoder actually runs on."""
        return self.decoder.get_providers()[0]

    # ------------------------------------------------------------------ encoder
    def new_state(self) -> dict[str, np.ndarray]:
        """Fresh encoder state: zeros for every carried tensor (stream start)."""
        return zero_state(self.spec)

    reset = new_state

    def encode(
        self, audio: np.ndarray, state: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """audio (1, chunk_samples) float32 -> (embeds (n, hidden), next state)."""
        if audio.shape != (1, self.spec.chunk_samples):
            raise ValueError(
                f"encoder takes (1, {self.spec.chunk_samples}) samples per chunk, got {audio.shape}"
            )
        outs = self.encoder.run(self.encoder_outputs, {self.audio_name: audio, **state})
        new = {s.input: o for s, o in zip(self.spec.encoder_state, outs[1:], strict=True)}
        return outs[0][0], new

    # ------------------------------------------------------------------ decoder
    def bind_cache(self, cache: KVCache) -> Any:
        """An IO binding with the cache arrays bound once (they are updated in place)."""
        binding = self.decoder.io_binding()
        for i in range(self.spec.layers):
            binding.bind_cpu_input(self.past_names[2 * i], cache.keys[i])
            binding.bind_cpu_input(self.past_names[2 * i + 1], cache.values[i])
        return binding

    def decode_step(
        self, binding: Any, embeds: np.ndarray, mask: np.ndarray, positions: np.ndarray
    ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """embeds (q, hidden); mask (1,1,q,C+q); positions (1,C+q) ->
        (logits (q, vocab), per layer (key, value) new entries (1, kv_heads, q, head_dim))."""
        x = np.ascontiguousarray(embeds[None], np.float32)
        binding.bind_cpu_input(protocol.INPUTS_EMBEDS, x)
        binding.bind_cpu_input(protocol.ATTENTION_MASK, mask)
        binding.bind_cpu_input(protocol.POSITION_IDS, positions)
        return self._run_bound(binding)

    def decoder_feeds(
        self, embeds: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list[np.ndarray]
    ) -> dict[str, np.ndarray]:
        """One decoder call as a plain `session.run` feed dict (no binding): embeds (q,
        hidden), mask and positions as `decode_step` takes them, past (key, value) per layer
        in order. For the benchmarks' bare calls, which time ORT without the stream."""
        feeds = {
            protocol.INPUTS_EMBEDS: np.ascontiguousarray(embeds[None], np.float32),
            protocol.ATTENTION_MASK: mask,
            protocol.POSITION_IDS: positions,
        }
        feeds.update(zip(self.past_names, past, strict=True))
        return feeds

    def _run_bound(self, binding: Any) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """Run a decoder call whose inputs are bound -> (logits (q, vocab), per layer new
        (key, value)). Output shapes follow the query length, so ORT allocates them fresh."""
        binding.clear_binding_outputs()
        for name in self._dec_outputs:
            binding.bind_output(name, "cpu")
        self.decoder.run_with_iobinding(binding)
        outs = binding.copy_outputs_to_cpu()
        presents = [(outs[1 + 2 * i], outs[2 + 2 * i]) for i in range(self.spec.layers)]
        return outs[0][0], presents

    def embed(self, ids: list[int] | tuple[int, ...]) -> np.ndarray:
        return self.embed_tokens[list(ids)]
