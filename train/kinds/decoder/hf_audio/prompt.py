"""Tokenizer, control tokens and prompt template of an HF audio LLM, as the bundle records
them: native (fine-tuned with soundflow's recipe: Contract 2 tokens in the vocabulary) or
fallback (a plain chat model, driven in turns by an outside utterance-end policy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from soundflow import protocol
from soundflow.train.kinds.decoder.hf_audio.source import QWEN2_5_OMNI

NATIVE, FALLBACK = "native", "fallback"
SYSTEM = {
    "qwen2_audio": "You are a helpful assistant.",
    QWEN2_5_OMNI: (
        "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
        "perceiving auditory and visual inputs, as well as generating text and speech."
    ),
}
# Fallback: what the user turn asks once an utterance has ended, per soundflow task.
INSTRUCTIONS = {
    "assist": "Answer what was just said to you.",
    "transcribe": "Transcribe the speech in the audio.",
    "alert": "Describe any alarm or important sound in the audio.",
}
# Qwen's chat format (ChatML) around one open-ended audio segment of the user turn.
PREFIX = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{audio_label}<|audio_bos|>"
RESPOND = "<|audio_eos|>\n{instruction}<|im_end|>\n<|im_start|>assistant\n"
RESUME = "<|im_end|>\n<|im_start|>user\n{audio_label}<|audio_bos|>"
AUDIO_LABEL = {"qwen2_audio": "Audio 1: ", QWEN2_5_OMNI: ""}


def load_tokenizer(checkpoint_dir: Path | str):
    """The checkpoint's `tokenizer.json` (a `tokenizers.Tokenizer`); built through
    transformers from vocab.json + merges.txt when only those are there."""
    from tokenizers import Tokenizer

    checkpoint_dir = Path(checkpoint_dir)
    path = checkpoint_dir / "tokenizer.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint_dir).backend_tokenizer


def special_ids(tok) -> dict[str, int]:
    """Every added (special) token -> id."""
    return {t.content: i for i, t in tok.get_added_tokens_decoder().items()}


@dataclass(frozen=True)
class Control:
    """How the runtime decides and what it feeds around audio, for one checkpoint."""

    mode: str  # NATIVE | FALLBACK
    control_ids: dict[str, int]  # silence, respond, eos, bos (fallback: stand-ins, see below)
    tasks: dict[str, dict]  # mode -> {"prompt_ids": [...], fallback: "respond_ids": [...]}
    template: dict | None = None  # fallback: the ChatML text and ids around the audio
    stop_ids: list[int] = field(default_factory=list)  # generation ends at any of these

    def manifest(self) -> dict:
        out = {"mode": self.mode, "stop_ids": self.stop_ids}
        if self.mode == FALLBACK:
            out["policy"] = "utterance_end"  # soundflow.runtime.fallback
            out["stand_in_ids"] = {
                "silence": "<|AUDIO|>: more audio expected",
                "respond": "<|audio_eos|>: the audio segment ends",
            }
        return out


def control_for(tok, architecture: str) -> Control:
    """Native when the vocabulary holds soundflow's protocol tokens, else the fallback."""
    ids = special_ids(tok)
    need = (protocol.SILENCE, protocol.RESPOND, protocol.EOS, protocol.BOS)
    if all(t in ids for t in need):
        tasks = {
            t: {"prompt_ids": [ids[protocol.BOS], ids[protocol.task_token(t)]]}
            for t in protocol.TASKS
            if protocol.task_token(t) in ids
        }
        if not tasks:
            raise ValueError("the vocabulary has <silence>/<respond> but no <|task:MODE|> token")
        control = {
            k: ids[v] for k, v in zip(("silence", "respond", "eos", "bos"), need, strict=True)
        }
        return Control(NATIVE, control, tasks, None, [ids[protocol.EOS]])
    chatml = ("<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|audio_eos|>", "<|AUDIO|>")
    missing = [t for t in chatml if t not in ids]
    if missing:
        raise ValueError(f"tokenizer lacks Qwen's chat/audio tokens {missing}")
    fill = {"system": SYSTEM[architecture], "audio_label": AUDIO_LABEL[architecture]}

    def enc(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False).ids

    prefix, resume = PREFIX.format(**fill), RESUME.format(**fill)
    respond = {t: RESPOND.format(instruction=i) for t, i in INSTRUCTIONS.items()}
    tasks = {t: {"prompt_ids": enc(prefix), "respond_ids": enc(respond[t])} for t in INSTRUCTIONS}
    stop = [ids["<|im_end|>"]] + ([ids["<|endoftext|>"]] if "<|endoftext|>" in ids else [])
    control = {
        "silence": ids["<|AUDIO|>"],
        "respond": ids["<|audio_eos|>"],
        "eos": ids["<|im_end|>"],
        "bos": ids["<|im_start|>"],
    }
    template = {
        "format": "chatml",
        "system": fill["system"],
        "text": {"prefix": prefix, "respond": respond, "resume": resume},
        "resume_ids": enc(resume),
    }
    return Control(FALLBACK, control, tasks, template, stop)


def chat_template(checkpoint_dir: Path | str) -> str | None:
    """The checkpoint's own Jinja chat template, recorded verbatim for reference."""
    d = Path(checkpoint_dir)
    for name, key in (
        ("chat_template.json", "chat_template"),
        ("tokenizer_config.json", "chat_template"),
    ):
        p = d / name
        if p.is_file():
            value = json.loads(p.read_text()).get(key)
            if isinstance(value, str):
                return value
    jinja = d / "chat_template.jinja"
    return jinja.read_text() if jinja.is_file() else None
