"""Chunked streaming equals the full forward pass, for the encoder and the cached decoder."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from soundflow import audio  # noqa: E402
from soundflow.export.graphs import CachedDecoder  # noqa: E402
from soundflow.runtime.kvcache import attention_inputs  # noqa: E402
from soundflow.train.config import EncoderConfig, ModelConfig, tiny_decoder  # noqa: E402
from soundflow.train.kinds.decoder.encoder import StreamingEncoder  # noqa: E402
from soundflow.train.kinds.decoder.frontend import LogMel  # noqa: E402
from soundflow.train.kinds.decoder.model import build_decoder  # noqa: E402


def tiny_cfg(chunk_ms=400, stack=2, left_context=13):
    return ModelConfig(
        encoder=EncoderConfig(d_model=32, n_layers=2, n_heads=4, left_context=left_context),
        chunk_ms=chunk_ms,
        adapter_stack=stack,
        decoder=tiny_decoder(vocab_size=50, hidden=32),
    )


@pytest.mark.parametrize("chunk_ms,stack", [(200, 1), (400, 2), (800, 2)])
def test_encoder_chunked_equals_full(chunk_ms, stack):
    torch.manual_seed(0)
    cfg = tiny_cfg(chunk_ms, stack)
    enc = StreamingEncoder(cfg).eval()
    n = 9  # left_context (13 frames) is shorter than the stream: the bound is exercised
    pcm = torch.randn(2, n * cfg.chunk_samples) * 0.1
    with torch.no_grad():
        full = enc.forward_stream(pcm)
        state, outs = enc.initial_state(2), []
        for c in range(n):
            y, state = enc.forward_chunk(
                pcm[:, c * cfg.chunk_samples : (c + 1) * cfg.chunk_samples], state
            )
            outs.append(y)
    assert full.shape == (2, n * cfg.encoder_frames_per_chunk, 32)
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)
    assert int(state.cache_len[0]) == cfg.encoder.left_context


def test_encoder_context_is_bounded():
    """Audio older than the left context cannot change the current chunk's output."""
    torch.manual_seed(0)
    cfg = tiny_cfg(left_context=10)
    enc = StreamingEncoder(cfg).eval()
    s = cfg.chunk_samples
    a = torch.randn(1, 6 * s) * 0.1
    b = a.clone()
    b[:, :s] = torch.randn(1, s) * 0.1  # differs only in chunk 0, > 10 frames before chunk 5
    with torch.no_grad():
        ya, yb = enc.forward_stream(a), enc.forward_stream(b)
    f = cfg.encoder_frames_per_chunk
    torch.testing.assert_close(ya[:, 5 * f :], yb[:, 5 * f :])
    assert not torch.allclose(ya[:, :f], yb[:, :f])


def test_logmel_matches_numpy_stft():
    """The conv-STFT frontend equals a numpy rFFT of the same causal frames."""
    from soundflow.train.kinds.decoder.frontend import mel_filterbank

    rng = np.random.default_rng(0)
    pcm = rng.normal(0, 0.1, audio.CHUNK_SAMPLES).astype(np.float32)
    fe = LogMel()
    got, overlap = fe(torch.from_numpy(pcm)[None], fe.initial_overlap(1))
    x = np.concatenate([np.zeros(audio.FRONTEND_OVERLAP, np.float32), pcm]).astype(np.float64)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(audio.N_FFT) / audio.N_FFT)
    frames = np.stack(
        [
            x[i * audio.HOP_LENGTH : i * audio.HOP_LENGTH + audio.N_FFT] * window
            for i in range(audio.FRAMES_PER_CHUNK)
        ]
    )
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    want = np.log(mel_filterbank() @ power.T + 1e-6)
    np.testing.assert_allclose(got[0].numpy(), want, atol=2e-3)
    np.testing.assert_array_equal(overlap[0].numpy(), pcm[-audio.FRONTEND_OVERLAP :])


@pytest.mark.parametrize(
    "model_type,heads,kv_heads", [("qwen2", 4, 2), ("llama", 4, 4), ("llama", 4, 1)]
)
def test_cached_decoder_equals_full_forward(model_type, heads, kv_heads):
    """Prefill, multi-token prefill onto a cache with empty slots, and single steps all match
    one `transformers` forward over the whole sequence (catches mask and position bugs)."""
    torch.manual_seed(0)
    hf = build_decoder(
        tiny_decoder(
            vocab_size=40, hidden=32, heads=heads, kv_heads=kv_heads, model_type=model_type
        )
    ).eval()
    dec = CachedDecoder(hf).eval()
    d = dec.dims
    x = torch.randn(1, 23, d.hidden)
    with torch.no_grad():
        want = hf(inputs_embeds=x).logits[0]
    capacity = 40
    cache = [torch.zeros(1, d.kv_heads, capacity, d.head_dim) for _ in range(2 * d.layers)]
    valid = np.zeros(capacity, bool)
    slot_pos = np.zeros(capacity, np.int64)
    rng = np.random.default_rng(0)
    free = list(rng.permutation(capacity))  # scattered slots: order lives in positions alone
    got, used = [], 0
    for length in (7, 5, 1, 1, 6, 3):
        t = length
        mask, pos = attention_inputs(valid, slot_pos, used, t)  # the runtime's own inputs
        with torch.no_grad():
            logits, *new = dec(
                x[:, used : used + t], torch.from_numpy(mask), torch.from_numpy(pos), *cache
            )
        slots = [free.pop() for _ in range(t)]
        for j, arr in enumerate(new):
            cache[j][:, :, slots] = arr
        valid[slots] = True
        slot_pos[slots] = np.arange(used, used + t)
        used += t
        got.append(logits[0])
    torch.testing.assert_close(torch.cat(got), want, atol=1e-4, rtol=1e-4)
