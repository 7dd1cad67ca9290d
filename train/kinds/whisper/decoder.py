"""Whisper's pretrained decoder as soundflow's cross-attention decoder kind: its vocabulary with
soundflow's control tokens, task prompts and tags appended, driven one chunk at a time.

The self-attention cache and the cross-attention memory are explicit tensors, so one module
serves training (a whole segment, masks saying which memory frames each token saw) and export
(one call: q new tokens onto a fixed-capacity cache and a bounded memory of frames).
Whisper adds learned absolute positions (448 of them) to the token embeddings, so a position
is fixed when an entry is written; the runtime re-prefills after eviction to renumber.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from soundflow import protocol

# Whisper's own special tokens that soundflow's protocol reuses (tokenizer.json names them).
SOT = "<|startoftranscript|>"
EOT = "<|endoftext|>"  # soundflow's <eos>: Whisper ends every transcript with it
NO_TIMESTAMPS = "<|notimestamps|>"
# Whisper's no-speech token (".en" tokenizers call it <|nocaptions|>, newer ones <|nospeech|>):
# its probability after <|startoftranscript|> is Whisper's own silence detector.
NO_SPEECH = ("<|nocaptions|>", "<|nospeech|>")
MASK_VALUE = protocol.MASK_VALUE  # additive; finite so fp16 engines stay NaN-free


@dataclass(frozen=True)
class WhisperVocab:
    """Whisper's ids plus soundflow's appended tokens, in a fixed order so ids are stable."""

    base_size: int  # Whisper's vocabulary (51864 for *.en)
    added: tuple[str, ...]  # appended after base_size, in order
    whisper_ids: dict[str, int]  # Whisper's special tokens used here

    @classmethod
    def build(cls, base_size: int, whisper_ids: dict[str, int], tags: list[str]) -> WhisperVocab:
        added = [protocol.SILENCE, protocol.RESPOND]
        added += [protocol.task_token(t) for t in protocol.TASKS]
        added += sorted(set(tags))
        keep = {k: whisper_ids[k] for k in (SOT, EOT, NO_TIMESTAMPS)}
        keep |= {k: whisper_ids[k] for k in NO_SPEECH if k in whisper_ids}
        return cls(base_size, tuple(added), keep)

    @property
    def size(self) -> int:
        return self.base_size + len(self.added)

    def id(self, token: str) -> int:
        if token in self.whisper_ids:
            return self.whisper_ids[token]
        return self.base_size + self.added.index(token)

    @property
    def silence(self) -> int:
        return self.id(protocol.SILENCE)

    @property
    def respond(self) -> int:
        return self.id(protocol.RESPOND)

    @property
    def eos(self) -> int:
        return self.id(EOT)

    def prompt(self, task: str) -> list[int]:
        """The sinks of every stream: Whisper's start, the task, Whisper's text mode."""
        return [self.id(SOT), self.id(protocol.task_token(task)), self.id(NO_TIMESTAMPS)]

    @property
    def no_speech(self) -> int | None:
        return next((self.whisper_ids[k] for k in NO_SPEECH if k in self.whisper_ids), None)

    def transcription_prompt(self) -> list[int]:
        """Whisper's own prompt for plain transcription (runtime/captions.py reads windows
        with it): <|startoftranscript|><|notimestamps|>."""
        return [self.id(SOT), self.id(NO_TIMESTAMPS)]

    @property
    def tags(self) -> list[str]:
        return [t for t in self.added if protocol.TAG_PATTERN.fullmatch(t)]

    def to_dict(self) -> dict:
        return {
            "base_size": self.base_size,
            "added": list(self.added),
            "whisper_ids": self.whisper_ids,
        }

    @classmethod
    def from_dict(cls, d: dict) -> WhisperVocab:
        return cls(
            int(d["base_size"]), tuple(d["added"]), {k: int(v) for k, v in d["whisper_ids"].items()}
        )


class ResponseTokenizer:
    """Response text <-> ids: tags become their added token, plain text Whisper's BPE with the
    leading space Whisper's transcripts start with."""

    def __init__(self, tokenizer_file: Path | str, vocab: WhisperVocab):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(tokenizer_file))
        self.vocab = vocab

    def encode(self, text: str) -> list[int]:
        tags, plain = protocol.parse_tags(text)
        ids = [self.vocab.id(f"<{k}:{v}>") for k, v in tags.items()]
        if plain:
            ids += self.tok.encode(" " + plain, add_special_tokens=False).ids
        return ids

    def token_id(self, token: str) -> int | None:
        """Whisper's own id of `token` (any of its special tokens), or None."""
        return self.tok.token_to_id(token)

    def decode(self, ids: list[int]) -> str:
        out, plain = [], []
        for i in ids:
            if i >= self.vocab.base_size:
                out.append(self.vocab.added[i - self.vocab.base_size])
            elif i != self.vocab.eos:
                plain.append(i)
        return " ".join([*out, self.tok.decode(plain).strip()]).strip()

    def save(self, path: Path) -> None:
        """Whisper's tokenizer.json with soundflow's tokens added at their ids (the runtime's
        detokenizer reads it)."""
        spec = json.loads(self.tok.to_str())
        for i, content in enumerate(self.vocab.added):
            spec["added_tokens"].append(
                {
                    "id": self.vocab.base_size + i,
                    "content": content,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": True,
                }
            )
        path.write_text(json.dumps(spec, ensure_ascii=False))


def _attend(q, k, v, mask):
    return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class CrossDecoder(nn.Module):
    """Whisper decoder layers with explicit state. Heads H, head dim D, memory M frames."""

    def __init__(self, hf_decoder, vocab: WhisperVocab, init: dict[str, list[int]] | None = None):
        super().__init__()
        c = hf_decoder.config
        self.heads, self.d = c.decoder_attention_heads, c.d_model
        self.head_dim = self.d // self.heads
        self.max_positions = c.max_target_positions
        base = hf_decoder.embed_tokens.weight.detach()
        if base.shape[0] != vocab.base_size:
            raise ValueError(f"decoder has {base.shape[0]} tokens, vocab says {vocab.base_size}")
        # Appended tokens start at the mean of the Whisper tokens that spell them (a tag's
        # words), so "<alert:doorbell>" begins near " doorbell"; others at Whisper's mean.
        extra = base.mean(0, keepdim=True).repeat(len(vocab.added), 1)
        for j, token in enumerate(vocab.added):
            ids = (init or {}).get(token)
            if ids:
                extra[j] = base[ids].mean(0)
        # Whisper's rows stay frozen (and cost no weight gradient in the tied logits); only
        # the appended rows learn fast.
        self.embed_base = nn.Parameter(base.clone(), requires_grad=False)
        self.embed_new = nn.Parameter(extra)
        self.positions = nn.Parameter(hf_decoder.embed_positions.weight.detach().clone())
        self.layers = nn.ModuleList(hf_decoder.layers)
        self.norm = hf_decoder.layer_norm

    def _split(self, x):  # (B, T, d) -> (B, H, T, D)
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def _merge(self, x):
        b, _, t, _ = x.shape
        return x.transpose(1, 2).reshape(b, t, self.d)

    def cross_kv(self, frames: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Encoder frames (B, F, d) -> per layer (key, value) (B, H, F, D): computed once per
        frame, then kept as the memory every later token attends to."""
        out = []
        for layer in self.layers:
            a = layer.encoder_attn
            out.append((self._split(a.k_proj(frames)), self._split(a.v_proj(frames))))
        return out

    def hidden(self, input_ids, position_ids, self_mask, past, cross, cross_mask):
        """input_ids, position_ids (B, q); self_mask (B, 1, q, C + q) additive; past per layer
        (key, value) (B, H, C, D); cross per layer (key, value) (B, H, M, D); cross_mask
        (B, 1, q, M) additive -> hidden (B, q, d), per layer new (key, value) (B, H, q, D)."""
        x = nn.functional.embedding(input_ids, self.table()) + self.positions[position_ids]
        presents = []
        for layer, (pk, pv), (ck, cv) in zip(self.layers, past, cross, strict=True):
            a = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            k, v = self._split(a.k_proj(h)), self._split(a.v_proj(h))
            presents.append((k, v))
            att = _attend(
                self._split(a.q_proj(h)), torch.cat([pk, k], 2), torch.cat([pv, v], 2), self_mask
            )
            x = x + a.out_proj(self._merge(att))
            e = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            x = x + e.out_proj(self._merge(_attend(self._split(e.q_proj(h)), ck, cv, cross_mask)))
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(nn.functional.gelu(layer.fc1(h)))
        return self.norm(x), presents

    def table(self) -> torch.Tensor:
        return torch.cat([self.embed_base, self.embed_new])

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.table().t()  # tied, as in Whisper

    def control_logits(self, hidden: torch.Tensor, vocab: WhisperVocab) -> torch.Tensor:
        """Only the two control columns: the decision is a softmax over these two."""
        rows = [vocab.silence - vocab.base_size, vocab.respond - vocab.base_size]
        return hidden @ self.embed_new[rows].t()

    def empty_past(self, batch: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
        z = torch.zeros(batch, self.heads, 0, self.head_dim)
        return [(z, z) for _ in self.layers]
