"""The torch-free byte-level BPE decoder agrees with `tokenizers` on a tokenizer.json
trained here (ByteLevel pre-tokenizer and decoder, soundflow's special tokens)."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from soundflow import protocol
from soundflow.manifest import BundleError
from soundflow.runtime.detokenize import Detokenizer

TEXTS = [
    "a smoke alarm is going off",
    "that was a dog barking",
    "hello, how are you today?",
    "café crème brûlée — naïve façade",
    "日本語のテキスト and emoji 🔥🚒",
    "the kettle is boiling",
]
TAGS = ["<alert:smoke_alarm>", "<intent:history>"]


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    tok = Tokenizer(models.BPE(unk_token=protocol.UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(protocol.BASE_SPECIAL_TOKENS) + TAGS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS * 5, trainer=trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.mark.parametrize(
    "text",
    TEXTS + ["<alert:smoke_alarm> a smoke alarm is going off", "unseen wörds: zebra 42!"],
)
def test_matches_tokenizers_decode(tok_path, text):
    ref = Tokenizer.from_file(str(tok_path))
    ids = ref.encode(text, add_special_tokens=False).ids
    ours = Detokenizer.from_file(tok_path)
    assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=False)
    # Streaming one id at a time gives the same text, never a broken character.
    s = ours.stream()
    pieces = [s.push(i) for i in ids]
    s.finish()
    assert "".join(pieces) == s.text == ours.decode(ids)
    assert all("\ufffd" not in p for p in pieces)


def test_special_ids_and_skipping(tok_path):
    ref = Tokenizer.from_file(str(tok_path))
    ours = Detokenizer.from_file(tok_path)
    eos, tag = ref.token_to_id(protocol.EOS), ref.token_to_id("<alert:smoke_alarm>")
    assert eos in ours.special_ids and tag in ours.special_ids
    ids = [tag, *ref.encode(" fire", add_special_tokens=False).ids, eos]
    assert ours.decode(ids, skip={eos}) == "<alert:smoke_alarm> fire"
    tags, plain = protocol.parse_tags(ours.decode(ids, skip={eos}))
    assert tags == {"alert": "smoke_alarm"} and plain == "fire"
    assert ours.decode([10**6]) == ""  # out-of-range ids decode to nothing


def test_rejects_non_byte_level(tmp_path, tok_path):
    spec = json.loads(tok_path.read_text())
    spec["decoder"] = {"type": "Metaspace"}
    bad = tmp_path / "tokenizer.json"
    bad.write_text(json.dumps(spec))
    with pytest.raises(BundleError, match="ByteLevel"):
        Detokenizer.from_file(bad)
    bad.write_text("{not json")
    with pytest.raises(BundleError, match="tokenizer.json"):
        Detokenizer.from_file(bad)
