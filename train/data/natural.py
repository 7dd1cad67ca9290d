"""Natural English sentences for speech: Debian's `fortunes` and `wordnet-base`, cleaned.

The slot grammar in text.py teaches a model the grammar; these teach it English. Sources:

- fortunes (/usr/share/games/fortunes, not fortunes-off): each cookie without its
  "-- Author" attribution, split into sentences;
- wordnet-base (/usr/share/wordnet/data.{noun,verb,adj,adv}): each synset's gloss, i.e.
  its definitions and its double-quoted example sentences.

Everything is cleaned into speakable transcripts (ASCII, lowercase, letters and
apostrophes, small numbers spelled out, 3-25 words; no URLs, code or odd symbols) and
split by a stable hash of the sentence, so eval streams never say a training sentence.
Fortunes that are mostly not English words (German Jabberwocky, Latin mottos, deliberate
misspellings) are dropped: a word counts as English if WordNet lists it or uses it.
Without the packages `available()` is False and text.py keeps its grammar.
"""

from __future__ import annotations

import functools
import hashlib
import re
import warnings
from pathlib import Path

import numpy as np

FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
SKIP_FORTUNES = {"ascii-art", "translate-me"}  # pictures; non-English
SKIP_DIRS = {"off"}  # fortunes-off installs its offensive cookies there
EVAL_SHARE = 10  # percent of sentences, by sha1 of the text, that only eval says
MIN_WORDS, MAX_WORDS = 3, 25
ENGLISH_SHARE = 0.7  # a fortune needs this share of its words in WordNet's vocabulary
WORDNET_INDEX = ("index.noun", "index.verb", "index.adj", "index.adv")
# Which source a natural sentence comes from: conversational ones over dictionary glosses.
SOURCE_WEIGHTS = {"fortunes": 0.45, "examples": 0.35, "definitions": 0.2}

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
_VOWEL = re.compile(r"[aeiouy]")
_ODD = re.compile(r"[^A-Za-z0-9 .,;:!?'\"()\-]")  # anything else: code, maths, markup, symbols
_URL = re.compile(r"https?:|www\.|\.(?:com|org|net|edu|gov)\b|@|ftp", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')]*\s+")
_LIST_MARK = re.compile(r"^\s*(?:\(\w\)|\d+[.)]|[A-Za-z][.)]\s)\s*", re.M)
# Talk the device must not take as addressed to it, or as a shout for help.
_DEVICE_LIKE = re.compile(
    r"\bhey flow\b|\btimer\b|\bvolume\b|\b(?:lights?|it) (?:on|off|up|down)\b"
    r"|\bwhat (?:was that|did (?:he|she|i|you) (?:just )?(?:say|hear))\b"
    r"|\b(?:did any|was there an) alarm\b|\bdid i miss anything\b|\bhelp\b"
)

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def spell(n: int) -> str:
    """0-999 in words ("one hundred and five")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    rest = n % 100
    return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + spell(rest))


def clean(raw: str) -> str | None:
    """One raw sentence -> a speakable transcript, or None if it cannot be one."""
    s = " ".join(raw.split())
    if not s or not s.isascii() or _URL.search(s) or _ODD.search(s):
        return None
    if re.search(r"\d[.,:]\d|\d[a-z]|[a-z]\d", s, re.I):  # 3.14, 10:30, 1st, mp3
        return None
    s = re.sub(r"\d+", lambda m: spell(int(m[0])) if int(m[0]) < 1000 else " @ ", s)
    if "@" in s:
        return None
    s = s.lower().replace("--", " ").replace("-", " ")
    s = re.sub(r"[.,;:!?\"()]", " ", s)
    words = [w.strip("'") for w in s.split()]
    words = [w for w in words if w]
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    if not all(_WORD.fullmatch(w) for w in words):
        return None
    if len(set(words)) < 2 or any(len(w) > 20 for w in words):
        return None
    # festival splits "'s" off its word and spells vowelless ones ("tv", "msg") letter by
    # letter, and the transcript must keep one word per spoken word
    if any(w.endswith("'s") or not _VOWEL.search(w) for w in words):
        return None
    out = " ".join(words)
    return None if _DEVICE_LIKE.search(out) else out


def _fortune_sentences(path: Path) -> list[str]:
    out = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for cookie in re.split(r"^%\s*$", text, flags=re.M):
        lines = []
        for line in cookie.splitlines():
            if re.match(r"^\s*--\s*\S", line) or re.match(r"^\s{4,}-\s", line):
                break  # the attribution, and whatever follows it
            lines.append(line)
        body = _LIST_MARK.sub(" ", "\n".join(lines))
        body = re.sub(r"\s+--\s+[A-Z][^.!?]*$", "", " ".join(body.split()))  # inline attribution
        out += [s for s in _SENTENCE_END.split(body) if s]
    return out


def _wordnet_glosses(path: Path) -> tuple[list[str], list[str]]:
    definitions, examples = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  ") or " | " not in line:
                continue  # the licence header
            gloss = line.split(" | ", 1)[1].strip()
            examples += re.findall(r'"([^"]+)"', gloss)
            rest = re.sub(r'"[^"]*"(?:\s*-+\s*[^;]*)?', "", gloss)  # examples and their authors
            for part in rest.split(";"):
                part = re.sub(r"\([^)]*\)", "", part)  # "(of a vehicle) ..." qualifiers
                definitions.append(part)
    return definitions, examples


def _in_split(sentence: str, split: str) -> bool:
    bucket = int(hashlib.sha1(sentence.encode()).hexdigest()[:8], 16) % 100
    return (bucket < EVAL_SHARE) == (split == "eval")


def _english_vocab(glosses: list[str]) -> set[str]:
    """Every word WordNet lists as a lemma or uses in its (English) glosses."""
    vocab = {w for g in glosses for w in g.split()}
    for name in WORDNET_INDEX:
        p = WORDNET_DIR / name
        if p.is_file():
            with open(p, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.startswith("  "):
                        vocab.update(line.split(" ", 1)[0].lower().split("_"))
    return vocab


def is_english(sentence: str, vocab: set[str]) -> bool:
    words = sentence.split()
    return sum(w in vocab for w in words) >= ENGLISH_SHARE * len(words)


@functools.lru_cache(maxsize=1)
def _all_sources() -> dict[str, tuple[str, ...]]:
    raw: dict[str, list[str]] = {"fortunes": [], "examples": [], "definitions": []}
    if FORTUNE_DIR.is_dir():
        for p in sorted(FORTUNE_DIR.iterdir()):
            if p.is_file() and not p.suffix and p.name not in SKIP_FORTUNES:
                raw["fortunes"] += _fortune_sentences(p)
    for name in WORDNET_FILES:
        p = WORDNET_DIR / name
        if p.is_file():
            d, e = _wordnet_glosses(p)
            raw["definitions"] += d
            raw["examples"] += e
    seen: set[str] = set()
    out = {}
    for source, sents in raw.items():  # a sentence in two sources belongs to the first
        kept = {c for c in map(clean, sents) if c and c not in seen}
        seen |= kept
        out[source] = tuple(sorted(kept))
    if out["definitions"] or out["examples"]:  # without WordNet there is no vocabulary to ask
        vocab = _english_vocab([*out["definitions"], *out["examples"]])
        out["fortunes"] = tuple(s for s in out["fortunes"] if is_english(s, vocab))
    return out


@functools.cache
def pools(split: str = "train") -> dict[str, tuple[str, ...]]:
    """The split's cleaned sentences, per non-empty source, sorted."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    out = {k: tuple(s for s in v if _in_split(s, split)) for k, v in _all_sources().items()}
    return {k: v for k, v in out.items() if v}


def sentences(split: str = "train") -> tuple[str, ...]:
    """Every cleaned sentence of the split, sorted."""
    return tuple(sorted(s for v in pools(split).values() for s in v))


def available() -> bool:
    ok = bool(pools("train")) and bool(pools("eval"))
    if not ok:
        _warn_once()
    return ok


@functools.lru_cache(maxsize=1)
def _warn_once() -> None:
    warnings.warn(
        "natural text: neither the fortunes nor the wordnet-base package is installed "
        "(apt-get install fortunes wordnet-base); speech falls back to the sentence grammar",
        stacklevel=3,
    )


def sentence(rng: np.random.Generator, split: str = "train") -> str:
    """One natural sentence of the split, drawn from `rng` only."""
    p = pools(split)
    names = [k for k in SOURCE_WEIGHTS if k in p]
    w = np.array([SOURCE_WEIGHTS[k] for k in names], np.float64)
    pool = p[names[int(rng.choice(len(names), p=w / w.sum()))]]
    return pool[int(rng.integers(len(pool)))]
