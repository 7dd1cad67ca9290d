"""Start soundflow training from a pretrained audio LLM (Qwen2-Audio, Qwen2.5-Omni thinker):
its encoder and decoder weights loaded, soundflow's special tokens added, embeddings resized.

The model implements `kind.TrainableModel` (`cfg`, `encoder`/`adapter`/`ctc_head`/
`decoder`, `forward(pcm, layouts, ctc)`, `audio_embeds`, `ctc_ids`), and its encoder is the
very streaming module the exporter writes, so what is trained is what the runtime runs.
Checkpoints are saved in the checkpoint's own HF layout (`kind.SavesOwnCheckpoint`);
`soundflow export` on one gives a bundle in native control mode.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from soundflow import audio, protocol
from soundflow.train.config import CTC_ALPHABET
from soundflow.train.kinds.decoder.hf_audio import prompt, source
from soundflow.train.kinds.decoder.hf_audio.encoder import StreamingAudioEncoder, state_specs
from soundflow.train.kinds.decoder.hf_audio.frontend import MelConfig
from soundflow.train.kinds.decoder.model import decoder_losses
from soundflow.train.kinds.decoder.sequence import Layout, collate


@dataclass(frozen=True)
class PretrainedConfig:
    """What the trainer reads from `model.cfg`, for a model built from an HF checkpoint."""

    architecture: str  # qwen2_audio | qwen2_5_omni
    source: str  # the checkpoint directory it started from
    chunk_ms: int = audio.CHUNK_MS  # decision interval
    embeds_per_chunk: int = 10  # streaming encoder outputs per chunk (fixed by chunk_ms)
    hidden_size: int = 0  # decoder width
    ctc_alphabet: str = CTC_ALPHABET

    @property
    def chunk_samples(self) -> int:
        return audio.chunk_samples(self.chunk_ms)

    def to_dict(self) -> dict:
        return asdict(self)


class _CausalLM(nn.Module):
    """decoder(inputs_embeds=, attention_mask=).logits over the checkpoint's text half."""

    def __init__(self, text: source.TextLM):
        super().__init__()
        self.text = text
        self.config = text.config

    def get_input_embeddings(self) -> nn.Module:
        return self.text.get_input_embeddings()

    def forward(self, inputs_embeds, attention_mask=None):
        hidden = self.text.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        return SimpleNamespace(logits=self.text.lm_head(hidden.last_hidden_state))


class PretrainedAudioLM(nn.Module):
    def __init__(self, llm: source.AudioLLM, mel: MelConfig, cfg: PretrainedConfig):
        super().__init__()
        self.llm, self.mel, self.cfg = llm, mel, cfg
        self.encoder = StreamingAudioEncoder(llm, cfg.chunk_samples, mel)
        # The projection into the decoder (trainable alone in an "adapter" stage).
        self.adapter = self.encoder.proj
        self.ctc_head = nn.Linear(cfg.hidden_size, len(cfg.ctc_alphabet) + 1)
        self.decoder = _CausalLM(llm.text)

    def audio_embeds(self, pcm: torch.Tensor):
        """(B, n_chunks * chunk_samples) -> (B, n_chunks * n, H) twice (embeds, CTC frames),
        chunk by chunk through the streaming encoder exactly as the runtime runs it."""
        b = pcm.shape[0]
        states = [
            torch.zeros(
                [b if isinstance(d, str) else d for d in s.shape],
                dtype=getattr(torch, s.dtype),
                device=pcm.device,
            )
            for s in state_specs(self.encoder.dims)
        ]
        out, s = [], self.cfg.chunk_samples
        for c in range(pcm.shape[1] // s):
            embeds, *states = self.encoder(pcm[:, c * s : (c + 1) * s], *states)
            out.append(embeds)
        embeds = torch.cat(out, dim=1)
        return embeds, embeds

    def forward(
        self, pcm, layouts: list[Layout], ctc_targets=None, control_ids=None
    ) -> dict[str, torch.Tensor]:
        """Loss sums and label counts, as `SoundFlowModel.forward` (see `combine_losses`)."""
        embeds, frames = self.audio_embeds(pcm)
        inputs, mask, stream_labels, lm_labels = collate(
            layouts, embeds, self.decoder.get_input_embeddings()
        )
        logits = self.decoder(inputs_embeds=inputs, attention_mask=mask).logits
        out = decoder_losses(logits, stream_labels, lm_labels, control_ids)
        if ctc_targets is not None:
            log_probs = self.ctc_head(frames).log_softmax(-1).transpose(0, 1)  # (T, B, C)
            t, b, _ = log_probs.shape
            lengths = torch.tensor([len(x) for x in ctc_targets], dtype=torch.long)
            flat = torch.tensor([i for x in ctc_targets for i in x], dtype=torch.long)
            per = nn.functional.ctc_loss(
                log_probs,
                flat.to(pcm.device),
                torch.full((b,), t, dtype=torch.long),
                lengths,
                blank=0,
                reduction="none",
                zero_infinity=True,
            )
            out["ctc_sum"] = (per / lengths.clamp(min=1).to(per)).sum()
            out["ctc_n"] = torch.tensor(len(ctc_targets))
        return out

    def ctc_ids(self, text: str) -> list[int]:
        index = {ch: i + 1 for i, ch in enumerate(self.cfg.ctc_alphabet)}
        return [index[ch] for ch in " ".join(text.lower().split()) if ch in index]

    def save_checkpoint(self, tokenizer, out: Path | str, extra: dict | None = None) -> Path:
        """The checkpoint's own HF layout (config.json + safetensors + tokenizer.json +
        preprocessor_config.json) plus soundflow_training.json; `soundflow export` reads it."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.llm.model.save_pretrained(out)
        tokenizer.save(str(out / "tokenizer.json"))
        pre = Path(self.cfg.source) / "preprocessor_config.json"
        if pre.is_file() and pre.resolve() != (out / pre.name).resolve():
            shutil.copy(pre, out / pre.name)
        (out / "soundflow_training.json").write_text(
            json.dumps({"config": self.cfg.to_dict(), **(extra or {})}, indent=2) + "\n"
        )
        return out


def add_soundflow_tokens(tok, tags: tuple[str, ...] = ()) -> list[str]:
    """Add the protocol's special tokens (and response tags) the vocabulary lacks."""
    have = set(prompt.special_ids(tok))
    new = [t for t in (*protocol.BASE_SPECIAL_TOKENS, *tags) if t not in have]
    if new:
        tok.add_special_tokens(new)
    return new


def load_pretrained(
    checkpoint_dir: Path | str, chunk_ms: int = audio.CHUNK_MS, tags: tuple[str, ...] = ()
) -> tuple[PretrainedAudioLM, object]:
    """HF checkpoint dir -> (model ready for `trainer.train`, tokenizer with soundflow's
    tokens). Embedding rows for new tokens start at the mean of the existing ones."""
    checkpoint_dir = Path(checkpoint_dir)
    llm = source.load(checkpoint_dir)
    tok = prompt.load_tokenizer(checkpoint_dir)
    add_soundflow_tokens(tok, tags)
    vocab = llm.text.get_input_embeddings().weight.shape[0]
    if tok.get_vocab_size() > vocab:  # Qwen pads its table: new ids often fit already
        llm.model.resize_token_embeddings(tok.get_vocab_size())
        llm = source.split(llm.model, llm.architecture)
    mel = MelConfig.from_checkpoint(checkpoint_dir, llm.audio_config.num_mel_bins)
    cfg = PretrainedConfig(
        architecture=llm.architecture,
        source=str(checkpoint_dir),
        chunk_ms=chunk_ms,
        embeds_per_chunk=audio.chunk_samples(chunk_ms) // mel.hop // 4,
        hidden_size=llm.text_config.hidden_size,
    )
    return PretrainedAudioLM(llm, mel, cfg).train(), tok
