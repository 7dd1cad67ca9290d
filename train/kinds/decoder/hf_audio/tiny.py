"""Random-weight Qwen2-Audio / Qwen2.5-Omni checkpoints written as `save_pretrained` does,
with a small byte-level BPE tokenizer carrying Qwen's special tokens: for tests and the
dimension benchmark (no weights can be downloaded; the code path is the real one).
"""

from __future__ import annotations

import json
from pathlib import Path

from soundflow import protocol
from soundflow.audio import SAMPLE_RATE
from soundflow.train.kinds.decoder.hf_audio.source import QWEN2_5_OMNI, QWEN2_AUDIO

QWEN_SPECIAL = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
    "<|vision_bos|>",
)
TEXTS = [
    "hello there, how can I help you today?",
    "a smoke alarm is going off in the kitchen",
    "that was a dog barking outside",
    "the kettle is boiling and the door bell rang",
    "please transcribe what is said in the audio",
] * 4


def tiny_tokenizer(vocab_size: int = 400, native: bool = False):
    """Byte-level BPE with Qwen's chat/audio tokens (and soundflow's, if `native`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special = list(QWEN_SPECIAL) + (list(protocol.BASE_SPECIAL_TOKENS) if native else [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TEXTS, trainer=trainer)
    return tok


def text_dims(layers=2, hidden=64, heads=4, kv_heads=2, ffn=128, vocab=400) -> dict:
    return dict(
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=vocab,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
    )


def audio_dims(layers=2, d_model=32, heads=4, ffn=64, n_mels=128) -> dict:
    return dict(
        d_model=d_model,
        encoder_layers=layers,
        encoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        num_mel_bins=n_mels,
        max_source_positions=1500,
    )


def build(arch: str, text: dict | None = None, audio: dict | None = None, tok=None, seed=0):
    """A random-weight transformers model of `arch` whose special ids match `tok`."""
    import torch
    from transformers import (
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
    )

    tok = tok or tiny_tokenizer()
    ids = {t: tok.token_to_id(t) for t in QWEN_SPECIAL}
    text = {
        **(text or text_dims()),
        "vocab_size": max((text or {}).get("vocab_size", 0), tok.get_vocab_size()),
    }
    audio = audio or audio_dims()
    torch.manual_seed(seed)
    if arch == QWEN2_AUDIO:
        cfg = Qwen2AudioConfig(
            audio_config=audio,
            text_config={"model_type": "qwen2", **text},
            audio_token_index=ids["<|AUDIO|>"],
        )
        return Qwen2AudioForConditionalGeneration(cfg).eval(), tok
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    unit = head_dim // 2 // 8  # mrope_section splits head_dim/2 frequencies t:h:w as 2:3:3
    section = [head_dim // 2 - 6 * unit, 3 * unit, 3 * unit]
    rope = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": section}
    cfg = Qwen2_5OmniThinkerConfig(
        audio_config={**audio, "output_dim": text["hidden_size"], "n_window": 100},
        vision_config=dict(
            depth=1,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=text["hidden_size"],
            fullatt_block_indexes=[0],
        ),
        text_config={**text, "rope_parameters": rope},
        audio_token_index=ids["<|AUDIO|>"],
        image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"],
    )
    # A standalone thinker config lacks this; its forward reads it to build positions.
    cfg.vision_start_token_id = ids["<|vision_bos|>"]
    return Qwen2_5OmniThinkerForConditionalGeneration(cfg).eval(), tok


def save_checkpoint(model, tok, out: Path | str) -> Path:
    """`save_pretrained` + tokenizer.json + the feature extractor's preprocessor_config.json."""
    out = Path(out)
    model.save_pretrained(out)
    tok.save(str(out / "tokenizer.json"))
    n_mels = model.config.audio_config.num_mel_bins
    (out / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "feature_extractor_type": "WhisperFeatureExtractor",
                "feature_size": n_mels,
                "sampling_rate": SAMPLE_RATE,
                "hop_length": 160,
                "n_fft": 400,
                "chunk_length": 30,
            },
            indent=2,
        )
    )
    return out


def tiny_checkpoint(arch: str, out: Path | str, native: bool = False, seed: int = 0) -> Path:
    model, tok = build(arch, tok=tiny_tokenizer(native=native), seed=seed)
    return save_checkpoint(model, tok, out)


__all__ = ["QWEN2_AUDIO", "QWEN2_5_OMNI", "build", "save_checkpoint", "tiny_checkpoint"]
