"""Byte-level BPE decoding from a `tokenizer.json` vocabulary, without `tokenizers`.

Byte-level BPE (GPT-2 style) spells every byte as one printable unicode character, so
decoding is: id -> token string -> bytes (inverse byte map) -> UTF-8. Added tokens
(control tokens, `<alert:x>` tags) decode to their literal content. `Detokenizer.stream`
decodes incrementally and holds back an incomplete UTF-8 sequence until it completes.
"""

from __future__ import annotations

import codecs
import json
from functools import lru_cache
from pathlib import Path

from soundflow.manifest import BundleError


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (as in `tokenizers` ByteLevel)."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


class Detokenizer:
    """ids -> text for a byte-level BPE tokenizer.json."""

    def __init__(self, vocab: dict[str, int], added: dict[int, str], special: set[int]):
        self.special_ids = special  # control tokens, not part of any text
        byte_of = {c: b for b, c in bytes_to_unicode().items()}
        size = max([*vocab.values(), *added.keys()], default=-1) + 1
        self._pieces: list[bytes | None] = [None] * size
        for token, i in vocab.items():
            try:
                self._pieces[i] = bytes(byte_of[c] for c in token)
            except KeyError:
                raise BundleError(
                    f"tokenizer.json: token {token!r} is not byte-level BPE; export the "
                    "bundle with soundflow's byte-level tokenizer"
                ) from None
        for i, content in added.items():
            self._pieces[i] = content.encode("utf-8")
        self._added = set(added)  # tags and control tokens: never part of a spelled text
        self._by_piece: dict[bytes, int] | None = None  # piece -> id, built by `spell`

    @classmethod
    def from_file(cls, path: Path | str) -> Detokenizer:
        path = Path(path)
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            model = spec["model"]
            vocab = model["vocab"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BundleError(
                f"{path}: not a readable tokenizer.json ({e}); re-run `soundflow export`"
            ) from None
        if model.get("type") != "BPE":
            raise BundleError(
                f"{path}: tokenizer model is {model.get('type')}, need byte-level BPE"
            )
        decoder = spec.get("decoder") or {}
        if decoder.get("type") != "ByteLevel":
            raise BundleError(
                f"{path}: tokenizer decoder is {decoder.get('type')}, need ByteLevel; "
                "re-export with soundflow's tokenizer"
            )
        added = {int(t["id"]): t["content"] for t in spec.get("added_tokens", [])}
        special = {int(t["id"]) for t in spec.get("added_tokens", []) if t.get("special")}
        return cls(vocab, added, special)

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def piece(self, token_id: int) -> bytes:
        if not 0 <= token_id < len(self._pieces) or self._pieces[token_id] is None:
            return b""
        return self._pieces[token_id]  # type: ignore[return-value]

    def spell(self, text: str) -> list[int]:
        """Text -> token ids that decode back to it: the longest vocabulary piece at each
        point (not always the BPE merges' own split, the same text). The runtime spells
        the few answers it writes itself (runtime/intents.py) this way."""
        if self._by_piece is None:
            self._by_piece = {}
            for i, p in enumerate(self._pieces):
                if p and i not in self._added:
                    self._by_piece.setdefault(p, i)
            self._longest = max(map(len, self._by_piece), default=1)
        pieces, longest = self._by_piece, self._longest
        data, ids, i = text.encode("utf-8"), [], 0
        while i < len(data):
            for n in range(min(longest, len(data) - i), 0, -1):
                token = pieces.get(data[i : i + n])
                if token is not None:
                    ids.append(token)
                    i += n
                    break
            else:
                raise ValueError(f"{text!r}: byte {data[i]} has no token")
        return ids

    def decode(self, ids: list[int], skip: set[int] | None = None) -> str:
        """All ids at once; `skip` ids (e.g. <eos>) produce nothing."""
        skip = skip or set()
        data = b"".join(self.piece(i) for i in ids if i not in skip)
        return data.decode("utf-8", errors="replace")

    def stream(self, skip: set[int] | None = None) -> StreamDecoder:
        return StreamDecoder(self, skip or set())


class StreamDecoder:
    """Incremental decoding: `push(id)` returns the new complete text (maybe '')."""

    def __init__(self, detok: Detokenizer, skip: set[int]):
        self._detok = detok
        self._skip = skip
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""

    def push(self, token_id: int) -> str:
        if token_id in self._skip:
            return ""
        new = self._utf8.decode(self._detok.piece(token_id))
        self.text += new
        return new

    def finish(self) -> str:
        new = self._utf8.decode(b"", final=True)
        self.text += new
        return new
