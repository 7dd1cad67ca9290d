"""Natural speech text: a large, clean, deterministic sentence pool split like every source."""

import re

import numpy as np
import pytest

from soundflow.train.data import natural, shards, text
from soundflow.train.data.planner import GrammarPlanner, choose_scenario
from soundflow.train.data.recipe import load_recipe

needs_packages = pytest.mark.skipif(
    not (natural.FORTUNE_DIR.is_dir() and natural.WORDNET_DIR.is_dir()),
    reason="natural text needs the Debian packages fortunes and wordnet-base "
    "(apt-get install fortunes wordnet-base, or scripts/setup-dev.sh)",
)


def words_of(sentences) -> set[str]:
    return {w for s in sentences for w in s.split()}


def test_clean_makes_speakable_transcripts():
    assert natural.clean("Don't look back, something might be gaining on you.") == (
        "don't look back something might be gaining on you"
    )
    assert natural.clean("I have 3 cats and 12 dogs") == "i have three cats and twelve dogs"
    assert natural.clean("Mail me at bob@example.com today") is None
    assert natural.clean("if (x == 1) { return; }") is None
    assert natural.clean("It costs 3.50 now, honestly") is None
    assert natural.clean("Too short") is None
    assert natural.clean(" ".join(["word"] * 12 + ["more"] * 14)) is None  # 26 words
    assert natural.clean("Caf\u00e9 au lait is nice") is None
    assert natural.clean("hey flow set a timer for me") is None  # would read as addressed
    assert natural.spell(105) == "one hundred and five"


@needs_packages
def test_pool_is_large_split_and_clean():
    train, eval_ = natural.sentences("train"), natural.sentences("eval")
    assert len(train) > 50_000 and len(eval_) > 5_000
    assert len(words_of(train)) > 5_000 and len(words_of(eval_)) > 2_000
    assert not set(train) & set(eval_)
    share = len(eval_) / (len(train) + len(eval_))
    assert 0.07 < share < 0.13
    word = re.compile(r"[a-z]+(?:'[a-z]+)*")
    for s in (*train, *eval_):
        ws = s.split()
        assert natural.MIN_WORDS <= len(ws) <= natural.MAX_WORDS, s
        assert s.isascii() and s == " ".join(ws), s
        assert all(word.fullmatch(w) for w in ws), s
    assert set(natural.pools("train")) == set(natural.SOURCE_WEIGHTS)


@needs_packages
def test_fortunes_that_are_not_english_are_left_out():
    """German Jabberwocky (in the literature fortunes) and Latin mottos read as English
    nonsense to a synthesizer and to Whisper alike; they are in no pool."""
    everything = set(natural.sentences("train")) | set(natural.sentences("eval"))
    assert not [s for s in everything if "wimmelten" in s.split() or "lacessit" in s.split()]
    vocab = natural._english_vocab(["the cat sat on a mat"])
    assert natural.is_english("the cat sat on a mat", vocab)
    assert not natural.is_english("die schlichte toven wirrten und wimmelten", vocab)
    assert any("don't look back" in s for s in everything)  # ordinary fortunes stay


@needs_packages
def test_sampling_is_deterministic_and_split_bound():
    def draw(seed, split):
        rng = np.random.default_rng(seed)
        return [text.chatter(rng, split) for _ in range(200)]

    assert draw(3, "train") == draw(3, "train")
    assert draw(3, "train") != draw(4, "train")
    train, eval_ = set(natural.sentences("train")), set(natural.sentences("eval"))
    drawn_eval = draw(3, "eval")
    natural_share = np.mean([s in eval_ for s in drawn_eval])
    assert 0.6 < natural_share < 0.9  # text.NATURAL_SHARE, the rest from the grammar
    assert not train & set(drawn_eval)


@needs_packages
def test_plans_speak_natural_text_of_their_split():
    recipe = load_recipe("default")

    def plan(split, seed=11):
        rng = np.random.default_rng(seed)
        return GrammarPlanner(split).plan(choose_scenario(rng, recipe), 600.0, rng, recipe, set())

    for split in ("train", "eval"):
        said = [e.text for e in plan(split).events if e.label == "chatter"]
        assert sum(s in natural.sentences(split) for s in said) > len(said) / 2, split
    assert plan("train").to_json() == plan("train").to_json()
    assert plan("train").to_json() != plan("eval").to_json()


@needs_packages
def test_built_smoke_stream_says_natural_words():
    recipe = load_recipe("smoke")
    grammar = words_of(text.CHATTER) | words_of(text.HARD_NEGATIVES) | words_of(text.SHOUTS)
    grammar |= {w for v in text._SLOTS.values() for x in v for w in x.split()}
    said: set[str] = set()
    for spec in shards.plan_streams(recipe, 3 / 60, seed=5, split="train")[:3]:
        _, record = shards.render_spec(spec, recipe, "train")
        said |= {w["word"] for w in record["words"] if not w["addressed"]}
    new = said - grammar - set(text.NUMBERS)
    assert len(new & words_of(natural.sentences("train"))) >= 5, sorted(said)


def test_without_packages_chatter_falls_back_to_the_grammar(monkeypatch, tmp_path):
    caches = (natural._all_sources, natural.pools, natural._warn_once)
    for c in caches:
        c.cache_clear()
    monkeypatch.setattr(natural, "FORTUNE_DIR", tmp_path / "none")
    monkeypatch.setattr(natural, "WORDNET_DIR", tmp_path / "none")
    try:
        with pytest.warns(UserWarning, match="fortunes"):
            said = [text.chatter(np.random.default_rng(i), "eval") for i in range(20)]
        grammar = words_of(text.CHATTER) | {
            w for v in text._SLOTS.values() for x in v for w in x.split()
        }
        assert words_of(said) <= grammar
    finally:
        for c in caches:
            c.cache_clear()  # the next test sees the real pools again
