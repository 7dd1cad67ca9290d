"""The Whisper-based soundflow model: the streamed tiny.en encoder, Whisper's decoder with
soundflow's tokens, their frozen config, the protocol's training layout and the checkpoint.

Cross-attention protocol (ARCHITECTURE.md, Contract 2b). After chunk c's frames join the memory:

    chunk 0:    <|startoftranscript|> <|task:M|> <|notimestamps|>  -> the last logits decide
    chunk c>0:  <silence> (or <eos> after a response)              -> its logits decide CTRL(c)
    respond:    <respond> r_1 .. r_k <eos>                          (all see frames <= c)

Each token sees the memory as it was when it was fed: the newest `memory_frames` frames up to
the end of its chunk. Training masks the cross-attention per token to reproduce that exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from soundflow import protocol
from soundflow.train.whisper_decoder import (
    MASK_VALUE,
    CrossDecoder,
    ResponseTokenizer,
    WhisperVocab,
)
from soundflow.train.whisper_encoder import WhisperWindowEncoder, WindowConfig

IGNORE = -100


@dataclass(frozen=True)
class WhisperModelConfig:
    """Dimensions fixed at training time, saved in the checkpoint (run-time options apart)."""

    window: WindowConfig = field(default_factory=WindowConfig)
    memory_frames: int = 400  # cross-attention memory: 8 s of 20 ms frames
    cache_capacity: int = 256  # self-attention slots (Whisper has 448 positions)
    whisper: dict = field(default_factory=dict)  # the WhisperConfig it was built from
    vocab: dict = field(default_factory=dict)  # WhisperVocab.to_dict()
    source: str = ""  # where the pretrained weights came from

    def __post_init__(self) -> None:
        limit = self.whisper.get("max_target_positions", 448)
        if self.cache_capacity + 64 > limit:
            raise ValueError(
                f"cache capacity {self.cache_capacity} leaves positions past Whisper's {limit}"
            )

    @property
    def chunk_ms(self) -> int:
        return self.window.chunk_ms

    @property
    def frames_per_chunk(self) -> int:
        return self.window.frames_per_chunk

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = "whisper-cross"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WhisperModelConfig:
        known = {"window", "memory_frames", "cache_capacity", "whisper", "vocab", "source"}
        unknown = set(d) - known - {"kind", "training"}
        if unknown:
            raise ValueError(f"config.json: unknown fields {sorted(unknown)}")
        args = {k: v for k, v in d.items() if k in known}
        args["window"] = WindowConfig(**args.get("window", {}))
        return cls(**args)


class WhisperSoundFlow(nn.Module):
    def __init__(self, cfg: WhisperModelConfig, hf_model, init: dict[str, list[int]] | None = None):
        super().__init__()
        self.cfg = cfg
        self.vocab = WhisperVocab.from_dict(cfg.vocab)
        self.encoder = WhisperWindowEncoder(hf_model.model.encoder, cfg.window)
        self.decoder = CrossDecoder(hf_model.model.decoder, self.vocab, init)

    @classmethod
    def from_whisper(
        cls, ckpt, tags: list[str], **dims
    ) -> tuple[WhisperSoundFlow, ResponseTokenizer]:
        """A new model from an imported Whisper checkpoint (train/whisper_ckpt.py)."""
        vocab = WhisperVocab.build(ckpt.config.vocab_size, ckpt.token_ids, tags)
        cfg = WhisperModelConfig(
            whisper=ckpt.config.to_diff_dict()
            | {"max_target_positions": ckpt.config.max_target_positions},
            vocab=vocab.to_dict(),
            source=str(ckpt.source),
            **dims,
        )
        tok = ResponseTokenizer(ckpt.tokenizer_file, vocab)
        init = {}
        for token in vocab.added:
            m = protocol.TAG_PATTERN.fullmatch(token)
            words = m.group(2).replace("_", " ") if m else token.strip("<|>").split(":")[-1]
            init[token] = tok.tok.encode(" " + words, add_special_tokens=False).ids
        return cls(cfg, ckpt.model(), init), tok


# ---------------------------------------------------------------------- training layout
@dataclass
class CrossLayout:
    """One segment as the decoder sees it: tokens, the chunk each was fed in, labels."""

    ids: list[int]
    chunk: list[int]  # the chunk whose frames were the newest when the token was fed
    control: list[int]  # at deciding positions: 0 silence / 1 respond; else IGNORE
    lm: list[int]  # next response token at response positions; else IGNORE


def cross_layout(vocab: WhisperVocab, task: str, responses: list[list[int] | None]) -> CrossLayout:
    """responses[c]: None for a silent chunk, else the response's ids (without <eos>)."""
    lay = CrossLayout([], [], [], [])

    def put(token: int, chunk: int, control: int = IGNORE, lm: int = IGNORE) -> None:
        lay.ids.append(token)
        lay.chunk.append(chunk)
        lay.control.append(control)
        lay.lm.append(lm)

    prompt = vocab.prompt(task)
    for t in prompt[:-1]:
        put(t, 0)
    pending = prompt[-1]
    for c, response in enumerate(responses):
        put(pending, c, control=0 if response is None else 1)
        if response is None:
            pending = vocab.silence
            continue
        seq = [*response, vocab.eos]
        put(vocab.respond, c, lm=seq[0])
        for j, t in enumerate(seq[:-1]):
            put(t, c, lm=seq[j + 1])
        pending = vocab.eos
    return lay


def batch_masks(layouts: list[CrossLayout], memory_frames: int, frames_per_chunk: int,
                context_frames: list[int], total_frames: int):  # fmt: skip
    """Pad a batch; build the causal self mask and the per-token cross mask.

    The memory tensor of sample b holds `context_frames[b]` frames from before the segment,
    then its own frames; a token fed in chunk c sees frames (end - memory_frames, end] with
    end = context + (c + 1) * frames_per_chunk, exactly the runtime's ring at that call."""
    n = max(len(lay.ids) for lay in layouts)
    b = len(layouts)
    ids = torch.zeros(b, n, dtype=torch.long)
    control = torch.full((b, n), IGNORE, dtype=torch.long)
    lm = torch.full((b, n), IGNORE, dtype=torch.long)
    valid = torch.zeros(b, n, dtype=torch.bool)
    ends = torch.zeros(b, n, dtype=torch.long)
    for i, lay in enumerate(layouts):
        k = len(lay.ids)
        ids[i, :k] = torch.tensor(lay.ids)
        control[i, :k] = torch.tensor(lay.control)
        lm[i, :k] = torch.tensor(lay.lm)
        valid[i, :k] = True
        ends[i, :k] = context_frames[i] + (torch.tensor(lay.chunk) + 1) * frames_per_chunk
        ends[i, k:] = ends[i, k - 1]
    f = torch.arange(total_frames)
    sees = (f[None, None] < ends[..., None]) & (f[None, None] >= ends[..., None] - memory_frames)
    cross = torch.where(sees, 0.0, MASK_VALUE)[:, None]  # (B, 1, n, F)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    self_ok = causal[None] & valid[:, None, :]
    self_ok |= torch.eye(n, dtype=torch.bool)[None]  # padding rows attend to themselves
    self_mask = torch.where(self_ok, 0.0, MASK_VALUE)[:, None]
    positions = torch.arange(n)[None].expand(b, n)
    return ids, positions, self_mask, cross, control, lm


def segment_losses(model: WhisperSoundFlow, frames: torch.Tensor, layouts: list[CrossLayout],
                   context_frames: list[int]) -> dict[str, torch.Tensor]:  # fmt: skip
    """frames (B, F, d) of each sample's memory span -> summed losses and their label counts."""
    d = model.decoder
    ids, pos, self_mask, cross_mask, control, lm = batch_masks(
        layouts,
        model.cfg.memory_frames,
        model.cfg.frames_per_chunk,
        context_frames,
        frames.shape[1],
    )
    with torch.no_grad():  # cross K/V projections stay frozen: computed once per frame
        cross = d.cross_kv(frames)
    hidden, _ = d.hidden(ids, pos, self_mask, d.empty_past(len(layouts)), cross, cross_mask)
    at = control != IGNORE
    ctrl = d.control_logits(hidden[at], model.vocab)
    stream = nn.functional.cross_entropy(ctrl, control[at], reduction="sum")
    at_lm = lm != IGNORE
    lm_loss = nn.functional.cross_entropy(d.logits(hidden[at_lm]), lm[at_lm], reduction="sum")
    return {"stream": stream, "n_stream": at.sum(), "lm": lm_loss, "n_lm": at_lm.sum()}


# ---------------------------------------------------------------------- checkpoint
def save_whisper_checkpoint(model: WhisperSoundFlow, tok: ResponseTokenizer, out: Path,
                            extra: dict | None = None) -> Path:  # fmt: skip
    from safetensors.torch import save_file

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg.to_dict() | ({"training": extra} if extra else {})
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    tok.save(tmp / "tokenizer.json")
    (tmp / "whisper_tokenizer.json").write_text(tok.tok.to_str())
    if out.exists():
        old = out.with_name(out.name + ".old")
        out.replace(old)
        tmp.replace(out)
        import shutil

        shutil.rmtree(old)
    else:
        tmp.replace(out)
    return out


def is_whisper_checkpoint(path: Path | str) -> bool:
    cfg = Path(path) / "config.json"
    return cfg.is_file() and json.loads(cfg.read_text()).get("kind") == "whisper-cross"


def load_whisper_checkpoint(path: Path | str) -> tuple[WhisperSoundFlow, ResponseTokenizer, dict]:
    from safetensors.torch import load_file
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    path = Path(path)
    raw = json.loads((path / "config.json").read_text())
    cfg = WhisperModelConfig.from_dict(raw)
    hf = WhisperForConditionalGeneration(WhisperConfig(**cfg.whisper))
    model = WhisperSoundFlow(cfg, hf)
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    tok = ResponseTokenizer(path / "whisper_tokenizer.json", model.vocab)
    return model.eval(), tok, raw.get("training", {})


def frames_numpy(model: WhisperSoundFlow, pcm: np.ndarray) -> np.ndarray:
    """The streamed encoder's frames of a whole stream (what the runtime computes)."""
    return model.encoder.encode_offline(pcm.astype(np.float32))
