"""The Whisper-style audio tower of Qwen2-Audio / Qwen2.5-Omni run one chunk at a time, with
its left context as explicit state: exactly the encoder contract (ARCHITECTURE.md, 3 and 3b).

Per chunk of S samples (F = S / hop mel frames, G = F / 2 encoder frames, E = G / 2 embeds):
log-mel -> conv1 (k3) -> conv2 (k3, stride 2) -> + absolute position -> L bidirectional
layers -> average pairs -> LayerNorm -> projection to the decoder's width. Every frame is the
reference's own frame (same index, same window edges); what differs by design is listed in
`DIFFERENCES` and measured by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from soundflow import protocol
from soundflow.manifest import StateSpec, TensorSpec
from soundflow.train.kinds.decoder.hf_audio.frontend import MelConfig, StreamingLogMel
from soundflow.train.kinds.decoder.hf_audio.source import QWEN2_5_OMNI, AudioLLM

MASKED = protocol.MASK_VALUE  # the contract's additive mask value
DIFFERENCES = (
    "attention: a frame sees its window's frames up to the end of its own chunk, not the "
    "window's future (chunk-causal); deeper layers' cached keys were computed the same way",
    "log-mel floor: clamped at the running peak so far, not the whole window's peak; equal "
    "from the loudest frame on",
    "delay: embeddings lag the audio by one embed (2 encoder frames, 40 ms): the last frame "
    "of a chunk needs samples of the next; the stream's first embed is a pre-roll",
)


@dataclass(frozen=True)
class EncoderDims:
    """Shapes of the streaming encoder, fixed at export."""

    chunk_samples: int  # PCM samples per chunk (6400 at 400 ms)
    n_mels: int  # mel bands
    d_model: int  # encoder width
    layers: int  # encoder transformer layers
    window: int  # encoder frames per attention window (reference: 1500 / n_window)
    left_context: int  # cached frames per layer (>= window - 1 keeps windows whole)
    hidden: int  # decoder width the embeds are projected to
    overlap: int  # PCM samples carried

    @property
    def mel_frames(self) -> int:
        return self.chunk_samples // 160

    @property
    def frames(self) -> int:
        return self.mel_frames // 2

    @property
    def embeds_per_chunk(self) -> int:
        return self.frames // 2


def state_specs(d: EncoderDims) -> list[StateSpec]:
    b = "batch"
    return [
        StateSpec("pcm_state", "pcm_state_out", "float32", (b, d.overlap)),
        StateSpec("mel_peak", "mel_peak_out", "float32", (b,)),
        StateSpec("mel_state", "mel_state_out", "float32", (b, d.n_mels, 2)),
        StateSpec("conv_state", "conv_state_out", "float32", (b, d.d_model, 1)),
        StateSpec(
            "cache_key", "cache_key_out", "float32", (d.layers, b, d.left_context, d.d_model)
        ),
        StateSpec(
            "cache_value", "cache_value_out", "float32", (d.layers, b, d.left_context, d.d_model)
        ),
        # frame index + 1 of each cached slot; 0 marks an empty slot
        StateSpec("cache_frames", "cache_frames_out", "int64", (b, d.left_context)),
        StateSpec("pool_state", "pool_state_out", "float32", (b, 1, d.d_model)),
        StateSpec("chunk_index", "chunk_index_out", "int64", (b,)),
    ]


def io_specs(d: EncoderDims) -> tuple[list[TensorSpec], list[TensorSpec]]:
    states = state_specs(d)
    inputs = [TensorSpec(protocol.AUDIO, "float32", ("batch", d.chunk_samples))]
    inputs += [TensorSpec(s.input, s.dtype, s.shape) for s in states]
    outputs = [
        TensorSpec(protocol.AUDIO_EMBEDS, "float32", ("batch", d.embeds_per_chunk, d.hidden))
    ]
    outputs += [TensorSpec(s.output, s.dtype, s.shape) for s in states]
    return inputs, outputs


class StreamingAudioEncoder(nn.Module):
    """(audio, *state) -> (audio_embeds, *state_out); the tower's own modules, re-driven."""

    def __init__(self, llm: AudioLLM, chunk_samples: int, mel: MelConfig, left_context=None):
        super().__init__()
        tower, acfg = llm.audio_tower, llm.audio_config
        self.omni = llm.architecture == QWEN2_5_OMNI
        window = llm.window_frames
        self.dims = EncoderDims(
            chunk_samples=chunk_samples,
            n_mels=mel.n_mels,
            d_model=acfg.d_model,
            layers=acfg.encoder_layers,
            window=window,
            left_context=int(left_context or window),
            hidden=llm.text_config.hidden_size,
            overlap=mel.overlap,
        )
        if chunk_samples % (4 * mel.hop):
            raise ValueError(
                "chunk length must be a multiple of 40 ms (4 hops: two stride-2 stages)"
            )
        self.frontend = StreamingLogMel(mel, chunk_samples)
        self.conv1, self.conv2, self.layers = tower.conv1, tower.conv2, tower.layers
        if self.omni:  # sinusoids restarting every window; ln_post + proj to the LM width
            self.register_buffer("positions", tower.positional_embedding.positional_embedding)
            self.norm, self.proj = tower.ln_post, tower.proj
        else:  # learned positions over one 30 s window; layer_norm, then the projector
            self.register_buffer("positions", tower.embed_positions.weight.detach().clone())
            self.norm, self.proj = tower.layer_norm, llm.projector.linear
        self.heads = acfg.encoder_attention_heads

    def _conv(self, conv, x, stride, at_start, at_end):
        """Valid conv over frames with state prepended; drop the taps that fall in another
        window (the reference zero-pads each window's edges). at_start/at_end (B, T_out)."""
        y = nn.functional.conv1d(x, conv.weight, conv.bias, stride=stride)
        w = conv.weight
        left = nn.functional.conv1d(x[..., : x.shape[-1] - 2], w[..., :1], stride=stride)
        right = nn.functional.conv1d(x[..., 2:], w[..., 2:], stride=stride)
        return y - left * at_start[:, None] - right * at_end[:, None]

    def forward(
        self,
        audio,
        pcm_state,
        mel_peak,
        mel_state,
        conv_state,
        cache_key,
        cache_value,
        cache_frames,
        pool_state,
        chunk_index,
    ):
        d = self.dims
        b = audio.shape[0]
        feats, pcm_out, peak_out = self.frontend(audio, pcm_state, mel_peak, chunk_index == 0)
        mel_in = torch.cat([mel_state, feats], dim=2)  # (B, M, F + 2): mel frames F*c - 3 ..
        # conv1 outputs mel frames F*c - 2 .. F*c + F - 3; window edges in mel frames (2W).
        j = chunk_index[:, None] * d.mel_frames - 2 + torch.arange(d.mel_frames)[None]
        jw = (j + 2 * d.window) % (2 * d.window)
        h1 = self._conv(self.conv1, mel_in, 1, (jw == 0).float(), (jw == 2 * d.window - 1).float())
        h1 = nn.functional.gelu(h1)
        c_in = torch.cat([conv_state, h1], dim=2)  # conv1 frames F*c - 3 .. F*c + F - 3
        # conv2 outputs encoder frames G*c - 1 .. G*c + G - 2 (index i centred on conv1 2i).
        i = chunk_index[:, None] * d.frames - 1 + torch.arange(d.frames)[None]  # (B, G)
        pos = (i + d.window) % d.window
        h2 = self._conv(self.conv2, c_in, 2, (pos == 0).float(), torch.zeros_like(pos).float())
        x = nn.functional.gelu(h2).transpose(1, 2) + self.positions[pos]  # (B, G, D)
        # Attention: same window only (window id of frame -1 and of empty slots is 0).
        q_win = (i + d.window) // d.window  # (B, G)
        k_idx = torch.cat([cache_frames - 1, i], dim=1)  # (B, C + G)
        k_win = torch.where(
            torch.cat([cache_frames > 0, torch.ones_like(i, dtype=torch.bool)], dim=1),
            (k_idx + d.window) // d.window,
            torch.zeros_like(k_idx),
        )
        mask = torch.where(q_win[:, :, None] == k_win[:, None, :], 0.0, MASKED)[:, None]
        new_k, new_v = [], []
        for n, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            k = torch.cat([cache_key[n], attn.k_proj(h)], dim=1)  # (B, C + G, D)
            v = torch.cat([cache_value[n], attn.v_proj(h)], dim=1)
            new_k.append(k[:, -d.left_context :])  # the cache keeps the newest C frames
            new_v.append(v[:, -d.left_context :])
            keys, values = self._heads(k), self._heads(v)  # (B, H, C + G, Dh)
            q = self._heads(attn.q_proj(h)) * (d.d_model // self.heads) ** -0.5
            att = (q @ keys.transpose(-1, -2) + mask).softmax(-1)  # (B, H, G, C + G)
            y = (att @ values).transpose(1, 2).reshape(b, d.frames, d.d_model)
            x = x + attn.out_proj(y)
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        frames_out = torch.cat([cache_frames, i + 1], dim=1)[:, -d.left_context :]
        # Average pairs (2k, 2k + 1): the first pair borrows the previous chunk's last frame.
        paired = torch.cat([pool_state, x[:, :-1]], dim=1)  # (B, G, D)
        pooled = paired.reshape(b, d.embeds_per_chunk, 2, d.d_model).mean(dim=2)
        embeds = self.proj(self.norm(pooled))
        return (
            embeds,
            pcm_out,
            peak_out,
            mel_in[..., -2:],
            c_in[..., -1:],
            torch.stack(new_k),
            torch.stack(new_v),
            frames_out,
            x[:, -1:],
            chunk_index + 1,
        )

    def _heads(self, t):
        b, s, _ = t.shape
        return t.view(b, s, self.heads, -1).transpose(1, 2)
