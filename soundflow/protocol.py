"""The chunk/token protocol: the special tokens and the order in which a stream becomes
one decoder sequence. Pure Python, shared by the trainer, the exporter and the runtime.

Sequence (see ARCHITECTURE.md, "Contract 2: the sequence protocol"):

    <|bos|> <|task:MODE|>  [a_1 .. a_n] CTRL  [a_1 .. a_n] CTRL r_1 .. r_k <eos>  ...
                            chunk 0            chunk 1 (responds)

- a_i are the adapter's audio embeddings of one chunk (n per chunk, fixed by the model).
- CTRL is <silence> or <respond>. It is predicted from the last audio embedding of the
  chunk, i.e. the logits at a_n decide; the chosen token is then fed back.
- After <respond> the response tokens follow and end with <eos>; the next chunk's audio
  comes after <eos> (or straight after <silence>).
- Responses may start with tag tokens, e.g. <alert:smoke_alarm>, which the runtime parses.
"""

from __future__ import annotations

import re

PAD = "<pad>"
BOS = "<|bos|>"
EOS = "<eos>"
SILENCE = "<silence>"
RESPOND = "<respond>"
UNK = "<unk>"

# Task prompts: the mode a stream is decoded in. The bundle lists the ones it was trained on.
TASKS = ("transcribe", "alert", "assist")


def task_token(task: str) -> str:
    return f"<|task:{task}|>"


# Every special token a soundflow tokenizer carries, in a fixed order so ids are stable.
BASE_SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, SILENCE, RESPOND) + tuple(task_token(t) for t in TASKS)

TAG_PATTERN = re.compile(r"<(alert|intent):([a-z0-9_]+)>")


def alert_tag(label: str) -> str:
    return f"<alert:{label}>"


def intent_tag(label: str) -> str:
    return f"<intent:{label}>"


def parse_tags(text: str) -> tuple[dict[str, str], str]:
    """Split '<alert:smoke_alarm> a smoke alarm is going off' into tags and plain text."""
    tags = {kind: label for kind, label in TAG_PATTERN.findall(text)}
    plain = TAG_PATTERN.sub("", text).strip()
    return tags, " ".join(plain.split())


def chunk_index(t_seconds: float, chunk_ms: int) -> int:
    """The chunk whose audio contains stream time t (a target due at t lands there)."""
    return int(t_seconds * 1000 // chunk_ms)


# ---------------------------------------------------------------------- the graph contract
# The tensor names and the mask value of the decoder-only bundle (ARCHITECTURE.md,
# Contract 3), declared once: export/specs.py builds the graph signatures from them and the
# runtime binds by them (the runtime may not import export/).
AUDIO = "audio"  # encoder input: one chunk of PCM
AUDIO_EMBEDS = "audio_embeds"  # encoder output: the chunk's embeddings in decoder space
INPUTS_EMBEDS = "inputs_embeds"
ATTENTION_MASK = "attention_mask"
POSITION_IDS = "position_ids"
LOGITS = "logits"
# cross kind, optional (export --int8-logits): a boolean scalar decoder input; true computes
# the logits by an int8 matmul (window readings), false by the fp32 one (every other call)
LOGITS_INT8 = "logits_int8"
INPUT_IDS = "input_ids"  # the cross-attention kind (Contract 3c) embeds its own token ids
ENCODER_ATTENTION_MASK = "encoder_attention_mask"  # cross kind: masks empty memory slots
# cross kind: the encoder's state, the PCM before the chunk (the window's older part), and
# after it: the newest history_samples of history + chunk
HISTORY, HISTORY_OUT = "history", "history_out"
# manifest export.encoder_quantization of an encoder with dynamic int8 MatMuls
# (export --dynamic-encoder): activations are quantized with one scale per call.
ENCODER_DYNAMIC_INT8 = "dynamic-int8-matmul"
# manifest export.decoder_quantization of a decoder whose layer MatMuls are MatMulNBits
# (export --int8-decoder, export/decoder_int8.py): the weight X is stored as X + NBITS_CODES
# (uint8, (N, K / block, block)) and X + NBITS_SCALES; activations quantized per row.
DECODER_NBITS_INT8 = "nbits8-matmul"
NBITS_CODES = "__nb8"
NBITS_SCALES = "__nbs"
NBITS_ZERO = 128  # MatMulNBits' default zero point at 8 bits: codes are q + 128, |q| <= 127
# cross kind, optional (`soundflow tagger`): the alert tagger's graph reads the newest
# `frames` frames of one encoder output (heads concatenated) and returns a probability per label
TAGGER_FRAMES = "frames"
TAGGER_PROBS = "probs"
MASK_VALUE = -1e4  # additive mask for masked keys; finite so fp16 engines stay NaN-free


def past_names(layers: int) -> list[str]:
    """Decoder cache inputs, (key, value) per layer in layer order."""
    return [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def present_names(layers: int) -> list[str]:
    """Decoder outputs holding one call's new cache entries, in the order of past_names."""
    return [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
