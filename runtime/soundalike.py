"""Words that sound alike as Whisper may mishear them: a small phonetic key (consonant sounds,
voicing ignored, vowels dropped) and the rule runtime/intents.py trusts a sound-alike by."""

from __future__ import annotations

import re
from functools import lru_cache

# A key needs this many sounds to be trusted: "whole way" for "hallway" (HLW) is, "hole" for
# "hall" (HL) is not (two sounds match too many ordinary words).
MIN_SOUNDS = 3
# Spellings to sounds, in order. Voiced and voiceless pairs share a letter (b/p, d/t, g/k,
# v/f, z/s, "th"/t) because that is what a voice the model never heard gets misread as:
# "letter" for "louder", "what said" for "what's that".
_RULES = (
    (r"^wh(?=o)", "h"),  # "whole"
    (r"^(kn|gn|pn|wr|ps)", lambda m: m.group(0)[1]),
    (r"wh", "w"),
    (r"x", "ks"),
    (r"tch|ch|sh", "x"),
    (r"th", "t"),
    (r"ph", "f"),
    (r"gh", ""),  # "lights", "eight"
    (r"ck|q", "k"),
    (r"c(?=[eiy])", "s"),
    (r"c", "k"),
    (r"dg", "j"),
    (r"[wyh](?![aeiou])", ""),  # w, y, h are sounds only before a vowel
)
_VOICE = str.maketrans("bdgvzj", "ptkfsx")
# What a first consonant lost to the silence before it leaves: a breath, a glide or a vowel
BREATHS = frozenset("hya")


@lru_cache(maxsize=4096)
def sound(text: str) -> str:
    """The phonetic key of words ("whole way" -> "hlw", "hallway" -> "hlw")."""
    s = re.sub(r"[^a-z]", "", text.lower())
    if not s:
        return ""
    for pattern, repl in _RULES:
        s = re.sub(pattern, repl, s)
    s = s.translate(_VOICE)
    head = "a" if s[:1] in "aeiou" else ""
    s = head + re.sub(r"[aeiou]", "", s)
    return re.sub(r"(.)\1+", r"\1", s)  # a sound said once, however it is spelled


def alike(said: list[str], phrase: str) -> bool:
    """Whether read words `said` (one or two) sound like `phrase` and are not it spelled out:
    the same key of at least MIN_SOUNDS sounds."""
    if " ".join(said) == phrase:
        return False
    k = sound(" ".join(said))
    return len(k) >= MIN_SOUNDS and k == sound(phrase)


def onset_alike(said: list[str], word: str) -> bool:
    """Whether read words `said` sound like `word` but for its first consonant, heard as a
    breath, a glide or a vowel (BREATHS: "him" for "dim", "you'd" for "mute"): a first word
    out of silence, as Whisper misreads a voice it never heard. Weaker than `alike`:
    runtime/intents.py takes it for a request's first word only, where the rest reads
    exactly and names the intent."""
    if " ".join(said) == word:
        return False
    k, w = sound(" ".join(said)), sound(word)
    if len(w) < 2 or not k:
        return False
    if k == w:  # two sounds, too few for `alike`: "boot" for "put"
        return True
    return k[0] in BREATHS and k[1:] == w[1:] or (len(w) >= 3 and k == w[1:])
