"""The Whisper-based soundflow model: the streamed tiny.en encoder, Whisper's decoder with
soundflow's tokens, their frozen config, the protocol's training layout and the checkpoint.

Cross-attention protocol (ARCHITECTURE.md, Contract 2b). After chunk c's frames join the memory:

    chunk 0:    <|startoftranscript|> <|task:M|> <|notimestamps|>  -> the last logits decide
    chunk c>0:  <silence> (or <eos> after a response)              -> its logits decide CTRL(c)
    respond:    <respond> r_1 .. r_k <eos>                          (all see frames <= c)

The memory is the encoder's window at the chunk the token was fed in: the chunk and up to 4 s
before it, re-encoded as one consistent Whisper input (positions 0..T-1). Training gives each
token exactly its chunk's window through a per-token cross-attention mask.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from soundflow import protocol
from soundflow.train.kinds.whisper.decoder import (
    MASK_VALUE,
    CrossDecoder,
    ResponseTokenizer,
    WhisperVocab,
)
from soundflow.train.kinds.whisper.encoder import WhisperWindowEncoder, WindowConfig

IGNORE = -100
KIND = "whisper-cross"  # config.json's and the bundle decoder's `kind`


@dataclass(frozen=True)
class WhisperModelConfig:
    """Dimensions fixed at training time, saved in the checkpoint (run-time options apart)."""

    window: WindowConfig = field(default_factory=WindowConfig)
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

    @property
    def memory_frames(self) -> int:
        """Cross-attention memory: one encoder window (220 frames for 4.4 s)."""
        return self.window.window_frames

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = KIND
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WhisperModelConfig:
        known = {"window", "cache_capacity", "whisper", "vocab", "source"}
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
        """A new model from an imported Whisper checkpoint (train/kinds/whisper/ckpt.py)."""
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


def batch_masks(layouts: list[CrossLayout], lengths: list[np.ndarray], window_frames: int):
    """Pad a batch; build the causal self mask and the per-token cross mask.

    Sample b's memory tensor holds the windows of its segment's chunks one after another
    (`window_frames` rows each, the first `lengths[b][c]` valid); a token fed in chunk c sees
    rows [c * window_frames, c * window_frames + lengths[b][c]): that chunk's window, exactly
    the runtime's memory at that call."""
    n = max(len(lay.ids) for lay in layouts)
    b = len(layouts)
    total = max(len(x) for x in lengths) * window_frames
    ids = torch.zeros(b, n, dtype=torch.long)
    control = torch.full((b, n), IGNORE, dtype=torch.long)
    lm = torch.full((b, n), IGNORE, dtype=torch.long)
    valid = torch.zeros(b, n, dtype=torch.bool)
    lo = torch.zeros(b, n, dtype=torch.long)
    hi = torch.zeros(b, n, dtype=torch.long)
    for i, lay in enumerate(layouts):
        k = len(lay.ids)
        ids[i, :k] = torch.tensor(lay.ids)
        control[i, :k] = torch.tensor(lay.control)
        lm[i, :k] = torch.tensor(lay.lm)
        valid[i, :k] = True
        chunk = torch.tensor(lay.chunk)
        lo[i, :k] = chunk * window_frames
        hi[i, :k] = lo[i, :k] + torch.as_tensor(np.asarray(lengths[i]))[chunk]
        lo[i, k:], hi[i, k:] = lo[i, k - 1], hi[i, k - 1]
    f = torch.arange(total)
    sees = (f[None, None] >= lo[..., None]) & (f[None, None] < hi[..., None])
    cross = torch.where(sees, 0.0, MASK_VALUE)[:, None]  # (B, 1, n, F)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    self_ok = causal[None] & valid[:, None, :]
    self_ok |= torch.eye(n, dtype=torch.bool)[None]  # padding rows attend to themselves
    self_mask = torch.where(self_ok, 0.0, MASK_VALUE)[:, None]
    positions = torch.arange(n)[None].expand(b, n)
    return ids, positions, self_mask, cross, control, lm


def segment_losses(
    model: WhisperSoundFlow,
    memory: torch.Tensor,
    layouts: list[CrossLayout],
    lengths: list[np.ndarray],
) -> dict[str, torch.Tensor]:
    """memory (B, chunks * window_frames, d): each sample's chunk windows -> summed losses
    and their label counts."""
    d = model.decoder
    ids, pos, self_mask, cross_mask, control, lm = batch_masks(
        layouts, lengths, model.cfg.memory_frames
    )
    with torch.no_grad():  # cross K/V projections stay frozen: computed once per frame
        cross = d.cross_kv(memory[:, : cross_mask.shape[-1]])
    hidden, _ = d.hidden(ids, pos, self_mask, d.empty_past(len(layouts)), cross, cross_mask)
    at = control != IGNORE
    ctrl = d.control_logits(hidden[at], model.vocab)
    stream = nn.functional.cross_entropy(ctrl, control[at], reduction="sum")
    at_lm = lm != IGNORE
    lm_loss = nn.functional.cross_entropy(d.logits(hidden[at_lm]), lm[at_lm], reduction="sum")
    return {"stream": stream, "n_stream": at.sum(), "lm": lm_loss, "n_lm": at_lm.sum()}


# ---------------------------------------------------------------------- checkpoint
def save_whisper_checkpoint(
    model: WhisperSoundFlow, tok: ResponseTokenizer, out: Path, extra: dict | None = None
) -> Path:
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
    return cfg.is_file() and json.loads(cfg.read_text()).get("kind") == KIND


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
