"""torch modules with exactly the exported signatures (export/specs.py).

`EncoderGraph` wraps the streaming encoder and adapter for one chunk. `CachedDecoder`
re-drives a `transformers` Llama/Qwen2 decoder's own weights over an explicit,
fixed-capacity, unrotated KV cache: no `If` nodes, no growing cache copy.
"""

from __future__ import annotations

import torch
from torch import nn

from soundflow.export.specs import DecoderDims
from soundflow.train.kinds.decoder.encoder import EncoderState, rotate
from soundflow.train.kinds.decoder.model import SoundFlowModel


class EncoderGraph(nn.Module):
    def __init__(self, model: SoundFlowModel):
        super().__init__()
        self.encoder, self.adapter = model.encoder, model.adapter

    def forward(self, audio, frontend_state, conv_state, cache_key, cache_value, cache_len):
        state = EncoderState(frontend_state, conv_state, cache_key, cache_value, cache_len)
        frames, new = self.encoder.forward_chunk(audio, state)
        return (self.adapter(frames), *new.as_tuple())


class CachedDecoder(nn.Module):
    """(inputs_embeds, attention_mask, position_ids, *past) -> (logits, *present_new)."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.dims = DecoderDims.from_hf(hf_model.config)
        self.body = hf_model.model  # embed_tokens, layers, norm
        self.lm_head = hf_model.lm_head

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        d = self.dims
        b, t, _ = inputs_embeds.shape
        x = inputs_embeds
        query_pos = position_ids[:, position_ids.shape[1] - t :]
        presents = []
        for i, layer in enumerate(self.body.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(b, t, d.heads, d.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(b, t, d.kv_heads, d.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(b, t, d.kv_heads, d.head_dim).transpose(1, 2)
            presents += [k, v]
            keys = torch.cat([past[2 * i], k], dim=2)  # (B, KVH, C + T, D), unrotated
            values = torch.cat([past[2 * i + 1], v], dim=2)
            q = rotate(q, query_pos, d.rope_theta)
            keys = rotate(keys, position_ids, d.rope_theta)
            keys, values = (
                _repeat_kv(keys, d.heads // d.kv_heads),
                _repeat_kv(values, d.heads // d.kv_heads),
            )
            att = (q @ keys.transpose(-1, -2)) * d.head_dim**-0.5 + attention_mask  # (B, H, T, C+T)
            y = (att.softmax(-1) @ values).transpose(1, 2).reshape(b, t, d.heads * d.head_dim)
            x = x + attn.o_proj(y)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return (self.lm_head(self.body.norm(x)), *presents)


def _repeat_kv(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, KVH, S, D) -> (B, KVH * n, S, D), each kv head repeated n times in place (as HF)."""
    if n == 1:
        return x
    b, kvh, s, dim = x.shape
    return x[:, :, None].expand(b, kvh, n, s, dim).reshape(b, kvh * n, s, dim)
