"""Captions from re-decoded windows: each hypothesis (the words Whisper reads in the current
window) is aligned to the words already emitted, and a word is emitted once two consecutive
hypotheses agree on it (local agreement, as whisper_streaming does, on words instead of times).

Pure Python on word lists, so the rule is tested without a model (tests/test_agreement.py);
runtime/kinds/whisper.py feeds it the window hypotheses of a whisper-cross stream in transcribe mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from difflib import SequenceMatcher
from functools import lru_cache

# An alignment of a hypothesis's start to the emitted words needs this many matched words
# and more matches than edits, so one shared common word ("the") does not swallow a new word.
MIN_OVERLAP_MATCHES = 2
MAX_SKIP = 2  # leading words either hypothesis may have that the other lacks (window edges)
# More leading words of the earlier hypothesis than MAX_SKIP may be passed over where the
# window slid past them (a 0.8 s hop moves its left edge 2-3 words): the two then need a run
# this long to agree on, and the passed-over words are emitted as heard, not lost.
SLID_RUN = 3
TAIL = 12  # emitted words the overlap is searched in (a 4.4 s window holds fewer)
MAX_REPEAT = 3  # a join's repeated fragment ("and and", "is side is side") is up to this long
# Two readings may spell one word two ways ("patience"/"patients", "weasels"/"weasles"): where
# a join compares what a window re-reads with what was emitted, words this alike are one word.
# Short words never are ("to"/"too", "a"/"the" are different words).
ALIKE_LETTERS = 4
ALIKE_RATIO = 0.75


def key(word: str) -> str:
    """The form two hypotheses compare words in: lowercase, letters, digits and apostrophes."""
    return "".join(c for c in word.lower() if c.isalnum() or c == "'")


def alike(a: str, b: str) -> bool:
    """Whether two `key`s are one word as a re-reading may spell it."""
    if a == b:
        return True
    short, long = sorted((len(a), len(b)))
    # the ratio is at most 2 * short / (short + long): most pairs are ruled out by length
    if short < ALIKE_LETTERS or 2 * short < ALIKE_RATIO * (short + long):
        return False
    return _ratio(a, b) >= ALIKE_RATIO


@lru_cache(maxsize=4096)  # each reading compares mostly the words the last one did
def _ratio(a: str, b: str) -> float:
    return SequenceMatcher(None, a, b).ratio()


def overlap_end(emitted: list[str], hyp: list[str]) -> int:
    """How many leading words of `hyp` re-read the end of `emitted` (both as `key`s): the b
    that best aligns hyp[:b] with a suffix of emitted (semi-global edit distance; `alike`
    words match)."""
    tail, h = emitted[-TAIL:], hyp
    if not tail or not h:
        return 0
    if len(h) < MIN_OVERLAP_MATCHES:
        # too short to align: a reading of the window's last word or so, which re-reads it
        # only if it is the end of what was emitted (a reading every chunk sees the final
        # word of an utterance alone at the window's left edge before it slides out)
        return len(h) if all(map(alike, tail[-len(h) :], h)) and len(tail) >= len(h) else 0
    n = len(tail)
    # d[a][b]: edits aligning some suffix of tail[:a] with h[:b]
    prev = list(range(len(h) + 1))  # a = 0: every word of h[:b] is an insertion
    rows = [prev]
    for a in range(1, n + 1):
        cur = [0] * (len(h) + 1)  # b = 0: tail[:a] skipped for free (the suffix starts later)
        for b in range(1, len(h) + 1):
            cur[b] = min(
                prev[b] + 1,  # a tail word the hypothesis misses
                cur[b - 1] + 1,  # a hypothesis word that is not in the tail
                prev[b - 1] + (not alike(tail[a - 1], h[b - 1])),
            )
        rows.append(cur)
        prev = cur
    best, end = 0, 0
    for b in range(1, len(h) + 1):
        edits = rows[n][b]
        matches = b - edits  # at least; every hypothesis word is a match or an edit
        score = matches - edits
        if matches >= MIN_OVERLAP_MATCHES and score > best:
            best, end = score, b
    return end


def agreed(prev: list[str], cand: list[str]) -> tuple[int, int]:
    """(words of `prev`, words of `cand`) that the two hypotheses agree on from their start,
    allowing `cand` to open with up to MAX_SKIP words `prev` lacks and `prev` with any number
    `cand` lacks (a word cut at the window's left edge is misread or dropped; more than
    MAX_SKIP where the window slid past `prev`'s first words). A skip needs two agreeing
    words after it, a slide SLID_RUN. Both as `key`s."""
    return _agreement(prev, cand)[1:]


def _agreement(prev: list[str], cand: list[str]) -> tuple[int, int, int]:
    """`agreed`, with the leading words of `prev` it passed over first."""
    p, c = prev, cand
    best = (0, 0, 0, 0)  # (score, skipped in prev, end in prev, end in cand)
    for i in range(len(p)):
        for j in range(min(MAX_SKIP, len(c)) + 1):
            k = 0
            while i + k < len(p) and j + k < len(c) and p[i + k] == c[j + k]:
                k += 1
            if k < (1 if not (i or j) else 2 if i <= MAX_SKIP else SLID_RUN):
                continue
            # prev's words past MAX_SKIP left the window, which is no disagreement
            score = k - j - min(i, MAX_SKIP)
            if score > best[0]:
                best = (score, i, i + k, j + k)
    if best[2] == 0 and len(p) >= 2:
        # The whole of `prev` re-read further into `cand` (its first words misread what was
        # already emitted, so the overlap did not strip them: "that past ten the night" after
        # "... that passed in", with "the night" pending): the words were heard twice.
        n = len(p)
        for j in range(MAX_SKIP + 1, len(c) - n + 1):
            if c[j : j + n] == p:
                return 0, n, j + n
    return best[1:]


def rereads(words: list[str], tail: list[str]) -> bool:
    """Whether `words` re-read some of the emitted `tail` (two words in a row of it, or a
    word of 4+ letters alike one of its last 6): a slid-past prefix that is a misread
    re-reading of emitted words, not words the stream has not captioned yet."""
    pairs = set(zip(tail, tail[1:], strict=False))
    if any(pair in pairs for pair in zip(words, words[1:], strict=False)):
        return True
    recent = [t for t in tail[-6:] if len(t) >= ALIKE_LETTERS]
    return any(alike(w, t) for w in words if len(w) >= ALIKE_LETTERS for t in recent)


def join_repeat(emitted: list[str], out: list[str], heard: list[str]) -> int:
    """How many leading words of `out` repeat the end of `emitted` where the hypothesis they
    came from (`heard`) never says that fragment twice in a row: the overlap stopped a word
    short, and the words would be emitted twice ("problems and and investor"). A double the
    speaker said ("had had") is in its hypothesis, and stays. All as `key`s."""
    for n in range(min(MAX_REPEAT, len(out), len(emitted)), 0, -1):
        frag = out[:n]
        if not all(alike(a, b) for a, b in zip(emitted[-n:], frag, strict=True)):
            continue
        said_twice = any(
            heard[i : i + n] == frag and heard[i + n : i + 2 * n] == frag
            for i in range(len(heard) - 2 * n + 1)
        )
        return 0 if said_twice else n
    return 0


@dataclass(frozen=True)
class Word:
    """One word of a hypothesis: its text as the decoder wrote it and the token ids that spell
    it (a caption is emitted as those ids, so the detokenizer gives back the decoder's text)."""

    text: str
    ids: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        return key(self.text)


@dataclass
class LocalAgreement:
    """Emitted words and the previous window's unconfirmed ones, for one stream."""

    emitted: list[Word] = field(default_factory=list)
    pending: list[Word] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)  # the hypothesis `pending` came from (keys)
    repeats: int = 0  # words a join would have emitted twice, left out (join_repeat)
    # Where the caller says which window each hypothesis read (`push(at=, window=)`): the
    # newest chunk of the window each emitted word was first heard in, and of `pending`'s
    emitted_at: list[int] = field(default_factory=list)
    pending_at: int = 0
    horizon: int | None = None  # chunks older than this no window being aligned holds

    def reset(self) -> None:
        self.emitted.clear()
        self.pending.clear()
        self.emitted_at.clear()
        self.heard = []
        self.repeats = 0
        self.pending_at = 0
        self.horizon = None

    def _tail(self) -> list[str]:
        """The emitted words a hypothesis may re-read: not those first heard in a window
        whose newest chunk is older than the current window (their audio is gone from it:
        the same words said again, "followed by the pound key" in the next prompt, are new)."""
        if self.horizon is None:
            return [w.key for w in self.emitted]
        return [
            w.key for w, at in zip(self.emitted, self.emitted_at, strict=True) if at > self.horizon
        ]

    def _emit(self, out: list[Word]) -> list[Word]:
        """`out` less a fragment the join would repeat; the emitted tail grows by the rest."""
        cut = join_repeat(self._tail(), [w.key for w in out], self.heard)
        self.repeats += cut
        out = out[cut:]
        # only the tail is ever aligned against
        self.emitted = [*self.emitted[-TAIL:], *out]
        self.emitted_at = [*self.emitted_at[-TAIL:], *[self.pending_at] * len(out)]
        return out

    def new_words(self, hyp: list[Word]) -> list[Word]:
        """The words of this hypothesis after those it re-reads from what was emitted."""
        return hyp[overlap_end(self._tail(), [w.key for w in hyp]) :]

    def push(self, hyp: list[Word], at: int | None = None, window: int | None = None) -> list[Word]:
        """One window's hypothesis -> the words to emit now (possibly none). `at`: the
        newest chunk of the window it read, `window`: the window's length in chunks (both
        or neither): emitted words first heard in a window that ended before this one began
        are not aligned against.

        The earlier hypothesis's words are emitted (its window held their audio with more
        context); unconfirmed words are emitted as heard once a window reads nothing new
        (the speech has ended or moved past), so a word is late rather than lost."""
        self.horizon = None if at is None or window is None else at - window
        cand = self.new_words(hyp)
        out: list[Word] = []
        if self.pending:
            pending = [w.key for w in self.pending]
            slid, i, j = _agreement(pending, [w.key for w in cand])
            if i:
                # words the window slid past are emitted as heard, unless they misread
                # words already emitted ("he sent a conference pin number" again)
                start = slid if slid > MAX_SKIP and rereads(pending[:slid], self._tail()) else 0
                out = self.pending[start:i]
                cand = cand[j:]
            elif not cand:
                out = self.pending
        out = self._emit(out)  # words of the last hypothesis, heard at `pending_at`
        self.pending, self.heard, self.pending_at = cand, [w.key for w in hyp], at or 0
        return out

    def flush(self) -> list[Word]:
        """The unconfirmed words, at the end of speech or of the stream."""
        out, self.pending = self.pending, []
        return self._emit(out)
