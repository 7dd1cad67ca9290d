"""Builds the interleaved decoder sequence of the protocol (soundflow/protocol.py) for a
batch, with the two label streams: control tokens (L_stream) and responses (L_lm).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass
class Layout:
    """One sample's sequence: token ids, where audio embeddings go, and its labels."""

    token_ids: list[int]  # token id per position (0 where an audio embedding goes)
    audio_index: list[int]  # index into the sample's audio embeddings, -1 for tokens
    stream_labels: list[int]  # control token expected at the last audio position of a chunk
    lm_labels: list[int]  # next response token (or <eos>) at response positions


def layout(
    prompt: list[int],
    responses: list[list[int] | None],
    embeds_per_chunk: int,
    silence_id: int,
    respond_id: int,
    eos_id: int,
) -> Layout:
    """responses[c] is None for a silent chunk, else the response's token ids."""
    ids, aud, stream, lm = [], [], [], []

    def put(token, audio_i=-1, stream_label=IGNORE, lm_label=IGNORE):
        ids.append(token)
        aud.append(audio_i)
        stream.append(stream_label)
        lm.append(lm_label)

    for t in prompt:
        put(t)
    for c, response in enumerate(responses):
        for i in range(embeds_per_chunk):
            last = i == embeds_per_chunk - 1
            ctrl = silence_id if response is None else respond_id
            put(0, c * embeds_per_chunk + i, stream_label=ctrl if last else IGNORE)
        if response is None:
            put(silence_id)
            continue
        seq = [*response, eos_id]
        put(respond_id, lm_label=seq[0])
        for j, t in enumerate(seq):
            put(t, lm_label=seq[j + 1] if j + 1 < len(seq) else IGNORE)
    return Layout(ids, aud, stream, lm)


def collate(layouts: list[Layout], audio_embeds: torch.Tensor, embed_tokens: torch.nn.Module):
    """Right-padded (inputs_embeds (B, L, H), attention_mask (B, L), stream, lm labels (B, L))."""
    b, n_audio, h = audio_embeds.shape
    length = max(len(lay.token_ids) for lay in layouts)
    dev = audio_embeds.device

    def pad(rows, value):
        return torch.tensor([r + [value] * (length - len(r)) for r in rows], device=dev)

    ids = pad([lay.token_ids for lay in layouts], 0)
    aud = pad([lay.audio_index for lay in layouts], -1)
    mask = pad([[1] * len(lay.token_ids) for lay in layouts], 0)
    stream = pad([lay.stream_labels for lay in layouts], IGNORE)
    lm = pad([lay.lm_labels for lay in layouts], IGNORE)
    tok = embed_tokens(ids)  # (B, L, H)
    gathered = torch.gather(audio_embeds, 1, aud.clamp(min=0)[..., None].expand(b, length, h))
    embeds = torch.where((aud >= 0)[..., None], gathered, tok)
    return embeds, mask, stream, lm
