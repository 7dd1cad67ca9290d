"""Byte-level BPE tokenizer with soundflow's special tokens, trained with `tokenizers`.

Byte-level so the torch-free runtime can decode ids with the vocabulary alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from soundflow import protocol


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 1024, extra_special: Iterable[str] = ()
) -> Tokenizer:
    """Train on response texts. Every <alert:x>/<intent:x> tag seen becomes one token."""
    texts = list(texts)
    tags = sorted({m.group(0) for t in texts for m in protocol.TAG_PATTERN.finditer(t)})
    special = list(protocol.BASE_SPECIAL_TOKENS)
    special += [t for t in [*extra_special, *tags] if t not in special]
    tok = Tokenizer(models.BPE(unk_token=protocol.UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    plain = [protocol.TAG_PATTERN.sub(" ", t) for t in texts]
    tok.train_from_iterator(plain, trainer=trainer)
    return tok


def load_tokenizer(path: Path | str) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def special_ids(tok: Tokenizer) -> dict[str, int]:
    """Every special token (control, prompt, tags) -> id."""
    ids = {}
    for token in tok.get_added_tokens_decoder().values():
        ids[token.content] = tok.token_to_id(token.content)
    missing = [t for t in protocol.BASE_SPECIAL_TOKENS if t not in ids]
    if missing:
        raise ValueError(f"tokenizer lacks soundflow special tokens {missing}")
    return ids


def prompt_ids(tok: Tokenizer, task: str) -> list[int]:
    return [tok.token_to_id(protocol.BOS), tok.token_to_id(protocol.task_token(task))]


def encode_response(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids
