"""Transcribe-mode captions of a whisper-cross stream by re-decoding its window: every few
chunks Whisper's own transcription prompt reads the memory, and local agreement between
successive hypotheses (runtime/agreement.py) decides which words to emit.

Why not the protocol's own responses: the fine-tuned decoder must decide, at each chunk, which
words of its 4.4 s window are new, and on voices it never trained on it waits too long and the
words slide out of the window unsaid (flite held-out WER 47 %); Whisper reading the whole
window, as it was trained to, and agreement between overlapping windows, give 25 %
(`soundflow bench peer`). Configured by the manifest's `decision.captions`:

    {"method": "agreement", "every_chunks": 2, "prompt_ids": [50257, 50362],
     "text_vocab": 50256, "min_avg_logprob": -0.7, "max_tokens": 48}

`prompt_ids` opens each window's hypothesis (Whisper's <|startoftranscript|><|notimestamps|>),
ids below `text_vocab` are text and the decoder's <eos> ends it; a hypothesis whose mean token
log-probability is below `min_avg_logprob` is read as no speech (Whisper's own guard against
transcribing noise), and with `abort_logprob` one whose first tokens are already that unsure
stops there. With `calls_per_chunk` a reading makes at most that many decoder calls per
chunk and goes on at the next, on a copy of the window it began on, until `max_hop_chunks`
have passed: then it ends in that chunk, however long it takes. Behind real time the reader
reads less often (one chunk further apart per chunk behind, up to `max_hop_chunks`; a driver
that asks `needs_window` does not encode the chunks between) and catches up, so at real time
on a busy machine the words come late, never not at all; the lag is measured (`lag_ms`, `late`) and so is any audio no reading
ever held (`unread`). `budget_ms`, a deadline from the chunk's audio for users who prefer
dropping words to lagging, starts no decoder call that would end after it (none by default).
Optional: `no_speech_id` and `no_speech_skip`: a window whose p(<|nocaptions|>) after <|startoftranscript|> passes `no_speech_skip` is not read at all.
Where the bundle's tagger has a speech gate (runtime/tagger.SpeechGate, set as `gate`), a
window it heard no speech in is not read either, and costs no decoder call. With the gate,
`eos_penalty`, `eos_words_per_s` and `eos_min_logprob` let a reading go on past a full stop
while the window still holds speech it has not read (CaptionConfig says why; off by default).
With `edge_min_logprob` a reading's unsure last word, where the window's edge may cut it,
waits for the next reading; and a reading too unsure to count as words while the gate hears
speech leaves the words waiting for agreement as they are (`_push`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from soundflow.runtime.agreement import LocalAgreement, Word, key
from soundflow.runtime.events import LatencyStats
from soundflow.runtime.kvcache import CachePolicy, KVCache


@dataclass(frozen=True)
class CaptionConfig:
    every_chunks: int
    prompt_ids: tuple[int, ...]
    text_vocab: int
    min_avg_logprob: float
    max_tokens: int
    no_repeat_ngram: int
    no_speech_id: int | None = None
    no_speech_skip: float = 1.0  # a window whose p(no speech) passes this is not read
    # a reading whose first ABORT_TOKENS tokens average below this log-probability stops
    # there and reads as no speech (None: every reading runs to its end)
    abort_logprob: float | None = None
    # at most this many decoder calls per chunk: a longer reading goes on at the next chunk
    # (None: every reading ends in the chunk it began)
    calls_per_chunk: int | None = None
    # and a deadline (ms after the chunk's audio was ready, where the caller says when: the
    # loop does; else after the step began): a call is made only where one more, as long as
    # the last, ends by then; a chunk makes at least one. The bound follows the machine's
    # speed and load, the encoder's time included; None: no time bound
    budget_ms: float | None = None
    # behind real time (a chunk decided more than one chunk after its audio arrived), a due
    # reading waits one chunk more for each chunk of lag, up to this many chunks since the
    # last one began: the reader reads less often and catches up. Every word must sit in two
    # successive readings' windows for agreement to emit it, so two hops must fit in the
    # window less a word (4 chunks = 1.6 s against a 4.4 s window)
    max_hop_chunks: int = 4
    # Whisper ends a reading at a sentence's full stop though the window holds the next
    # sentence, which it reads only once the first has slid out: that sentence comes seconds
    # late, or slides out unread (#28). Where the speech gate heard speech in the window and
    # the reading has fewer than `eos_words_per_s` words a second of that speech, <eos> is
    # made `eos_penalty` nats less likely. 0: no penalty (<eos> is free wherever it falls)
    eos_penalty: float = 0.0
    eos_words_per_s: float = 0.0  # 0: the penalty holds however many words were read
    # what a reading read past an <eos> the penalty overrode is kept only if its mean token
    # log-probability is at least this: a continuation Whisper is unsure of is most often
    # words the audio does not hold (None: however unsure)
    eos_min_logprob: float | None = None
    # A reading's last word, where the window's newest chunk holds speech, is often one the
    # window's edge cut ("the whale" for "the whales"); read every chunk, two readings 0.4 s
    # apart agree on such a misreading as often as not. It is held back from agreement unless
    # each of its tokens is at least this likely (a log-probability); the next reading hears
    # it whole. None: every word of a reading goes to agreement
    edge_min_logprob: float | None = None

    def __post_init__(self) -> None:
        for name in ("eos_penalty", "eos_words_per_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"captions: {name} is {value!r}; it must be a number >= 0")
        for name in ("eos_min_logprob", "edge_min_logprob"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value <= 0):
                raise ValueError(
                    f"captions: {name} is {value!r}; it must be a log-probability (a number "
                    "<= 0), or null for no floor"
                )

    @classmethod
    def from_manifest(cls, captions: dict, no_repeat_ngram: int) -> CaptionConfig:
        return cls(
            every_chunks=int(captions.get("every_chunks", 2)),
            prompt_ids=tuple(int(i) for i in captions["prompt_ids"]),
            text_vocab=int(captions["text_vocab"]),
            min_avg_logprob=float(captions.get("min_avg_logprob", -0.7)),
            max_tokens=int(captions.get("max_tokens", 48)),
            no_repeat_ngram=no_repeat_ngram,
            no_speech_id=None
            if captions.get("no_speech_id") is None
            else int(captions["no_speech_id"]),
            no_speech_skip=float(captions.get("no_speech_skip", 1.0)),
            abort_logprob=None
            if captions.get("abort_logprob") is None
            else float(captions["abort_logprob"]),
            calls_per_chunk=None
            if captions.get("calls_per_chunk") is None
            else int(captions["calls_per_chunk"]),
            budget_ms=None if captions.get("budget_ms") is None else float(captions["budget_ms"]),
            max_hop_chunks=int(captions.get("max_hop_chunks", 4)),
            eos_penalty=_number(captions, "eos_penalty", 0.0),
            eos_words_per_s=_number(captions, "eos_words_per_s", 0.0),
            eos_min_logprob=_number(captions, "eos_min_logprob", None),
            edge_min_logprob=_number(captions, "edge_min_logprob", None),
        )


def _number(captions: dict, name: str, default: float | None) -> float | None:
    """An optional number of `decision.captions`, or a clear error naming it."""
    value = captions.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"captions: decision.captions.{name} is {value!r}, not a number")
    return float(value)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


ABORT_TOKENS = 4  # the tokens a reading's early abort judges it on
DRAFT_MATCH = 3  # tokens of the reading so far matched against the previous reading
DRAFT_TOKENS = 16  # draft tokens verified per decoder call
REPEAT_WORDS = 3  # words read past an overridden <eos> that say again what it said: a loop


class WindowCaptions:
    """A scratch token cache over a copy of the stream's memory (taken when a reading
    begins; both bound once), the window decode, and the agreement state."""

    def __init__(self, engine, memory, config: CaptionConfig, eos: int) -> None:
        spec = engine.spec
        self.engine, self.source, self.config, self.eos = engine, memory, config, eos
        # A reading that spans chunks must go on reading the window it began on, not the
        # stream's memory, which the next chunk overwrites.
        self.memory = memory.empty_like()
        if len(config.prompt_ids) + config.max_tokens + 1 > spec.cache_capacity:
            raise ValueError(
                f"captions: a {config.max_tokens}-token hypothesis does not fit the "
                f"{spec.cache_capacity}-slot cache"
            )
        policy = CachePolicy(spec.cache_capacity, len(config.prompt_ids), 1, "reprefill")
        self.cache = KVCache(spec.layers, spec.kv_heads, spec.head_dim, 1, policy, np.int64)
        self.binding = engine.bind(self.cache, self.memory, reading=True)
        self.bias = np.zeros(spec.vocab, np.float32)
        self.bias[config.text_vocab :] = -np.inf  # Whisper's specials, timestamps, soundflow's
        self.bias[eos] = 0.0
        self.eos_bias = self.bias.copy()  # the bias where the eos rule holds (eos_penalty)
        self.eos_bias[eos] -= config.eos_penalty
        self.agreement = LocalAgreement()
        self.gate = None  # a SpeechGate the stream updates each chunk, or None: read them all
        self.chunk_s = spec.chunk_ms / 1000
        self.window_chunks = max(1, spec.memory_frames // spec.embeds_per_chunk)
        # False (fast mode): every reading on its schedule, whatever the clock says, so the
        # captions do not depend on the machine's load
        self.realtime = True
        # readings fall on the chunks where (chunk + offset) % every_chunks == 0: a server
        # gives its streams different offsets, so that their readings do not share a round
        self.offset = 0
        # The reader's account, kept across resets (the run's, for stats and the summary):
        self.lag_ms = LatencyStats()  # a reading's words out minus its newest audio's arrival
        self.late = 0  # readings whose words came after the next reading was due
        self.unread = 0  # chunks no reading's window held: words there were never read
        self.deferred = 0  # chunks at which a due reading waited while the reader caught up
        self.reset()

    def reset(self) -> None:
        self.agreement.reset()
        self.skipped = 0  # readings the speech gate saved
        self.aborted = 0  # readings stopped early (abort_logprob)
        if self.gate is not None:
            self.gate.reset()
        self.previous: list[int] = []  # the last reading's ids: the next one's draft
        self.logprobs: list[float] = []  # and each one's log-probability
        self.unsure = False  # whether the last reading was too unsure to count as words
        self.calls = 0  # decoder calls of the last finished reading
        self.step_calls = 0  # decoder calls made in the last step
        self.step_ms = 0.0  # their time
        self.call_ms = 0.0  # the last decoder call's time: the next one's estimate
        self._since = 0.0  # time.monotonic() the step's deadline counts from
        self.chunks = 0
        self._reading = None  # the reading under way (a generator), or None
        self._calls = 0  # its decoder calls so far
        self._want: list[int] = []  # the token ids its next decoder call runs
        self._due = False  # a reading is due and waits for the one under way
        self._began = 0  # the chunk the last reading began at (its window's newest)
        self._began_since = 0.0  # and when that chunk's audio was ready
        self._covered = 0  # the newest chunk a reading (or the speech gate) has judged
        self._heard: list[bool] = []  # the gate's decision on each chunk of the window
        self._speech_s = 0.0  # the speech (s) the gate heard in the reading's window
        self._past_eos: int | None = None  # the reading's length where the eos rule overrode
        self.confidence = 0.0
        for a in (*self.cache.keys, *self.cache.values):
            a[:] = 0.0  # a non-finite value left in a free slot would still poison attention

    def _run(self, ids: list[int]) -> np.ndarray:
        q = len(ids)
        mask, pos = self.cache.inputs(q)
        logits, presents = self.engine.step(
            self.binding,
            np.asarray(ids, np.int64)[None],
            np.ascontiguousarray(pos[:, -q:]),
            mask,
            self.memory.mask(q),
        )
        self.cache.add(presents, np.asarray(ids, np.int64).reshape(q, 1))
        return logits

    def _next(self, logits: np.ndarray, ids: list[int]) -> tuple[int, float, bool]:
        """Greedy choice after `ids`: (token, its log-probability, whether the reading ends
        here: <eos>, or a repeated n-gram, i.e. a loop)."""
        lp = log_softmax(logits + self.bias)
        token = int(np.argmax(lp))
        if token == self.eos and self._early(ids):
            lp = log_softmax(logits + self.eos_bias)
            token = int(np.argmax(lp))
            if token != self.eos and self._past_eos is None:
                self._past_eos = len(ids)
        if token == self.eos:
            return token, float(lp[token]), True
        n = self.config.no_repeat_ngram
        if n and len(ids) >= n - 1:
            gram = (*ids[len(ids) - n + 1 :], token)
            if any(tuple(ids[i : i + n]) == gram for i in range(len(ids) - n + 1)):
                return token, float(lp[token]), True
        return token, float(lp[token]), False

    def _early(self, ids: list[int]) -> bool:
        """Whether <eos> after `ids` would end the reading before the window's speech does
        (the `eos_*` options): the gate heard speech in the window and the reading holds
        fewer words than that much speech should."""
        c = self.config
        if not c.eos_penalty or self.gate is None or not self._speech_s:
            return False
        return not c.eos_words_per_s or len(self.words(ids)) < c.eos_words_per_s * self._speech_s

    def repeats(self, ids: list[int], at: int) -> bool:
        """Whether what a reading read past an <eos> (`ids[at:]`) says again REPEAT_WORDS
        words it had read before: no new speech, the window's own words looped. The n-gram
        guard compares tokens, and a re-read's first token is often spelt differently."""
        head = [w.key for w in self.words(ids[:at])]
        tail = [w.key for w in self.words(ids[at:])]
        n = REPEAT_WORDS
        grams = {tuple(head[i : i + n]) for i in range(len(head) - n + 1)}
        return any(tuple(tail[i : i + n]) in grams for i in range(len(tail) - n + 1))

    def cut_back(self, ids: list[int], logprobs: list[float], at: int, looped: bool) -> bool:
        """Whether what the eos rule read on past an <eos> at `at` goes (the reading ends
        at `at` after all): it ended in a loop (`looped`: a repeated n-gram ended it), says
        the reading's own words again, or is too unsure (eos_min_logprob)."""
        floor = self.config.eos_min_logprob
        unsure = floor is not None and len(ids) > at and np.mean(logprobs[at : len(ids)]) < floor
        return bool(looped or unsure or self.repeats(ids, at))

    def _draft(self, ids: list[int], room: int) -> list[int]:
        """Tokens the previous reading had after the latest place it matches the end of
        `ids` (longest suffix first, up to 3 tokens): successive windows overlap by all but
        one step of audio, so most of a reading repeats the last one."""
        prev = self.previous
        for n in range(min(DRAFT_MATCH, len(ids)), 0, -1):
            tail = ids[-n:]
            for i in range(len(prev) - n, -1, -1):
                if prev[i : i + n] == tail:
                    return prev[i + n : i + n + min(room, DRAFT_TOKENS)]
        return []

    def hypothesis(self) -> list[int]:
        """Greedy token ids of the current window ([] when it reads as no speech), read to
        its end now."""
        self._begin()
        return self._advance(None)

    def _begin(self) -> None:
        """A reading of the current window begins: the window is copied, nothing is run."""
        self._judged()
        self._began, self._began_since = self.chunks, self._since
        self._speech_s = sum(self._heard[-self.window_chunks :]) * self.chunk_s
        self.memory.copy_from(self.source)
        self.cache.reset()
        self._reading = self._decode()
        self._want = next(self._reading)  # the prompt
        self._calls = 0

    def _advance(self, budget: int | None, budget_ms: float | None = None) -> list[int] | None:
        """The reading's decoder calls, until it ends (-> its ids) or this step has made
        `budget` calls or one more would end after its deadline, `budget_ms` from `_since`
        (-> None; it goes on at the next)."""
        while budget is None or self.step_calls < budget:
            if budget_ms and self.step_calls:
                if (time.monotonic() - self._since) * 1e3 + self.call_ms > budget_ms:
                    return None
            start = time.monotonic()
            logits = self._run(self._want)
            self.call_ms = (time.monotonic() - start) * 1e3
            self.step_ms += self.call_ms
            self.step_calls += 1
            self._calls += 1
            try:
                self._want = self._reading.send(logits)
            except StopIteration as end:
                self._reading = None
                self.calls = self._calls
                return end.value
        return None

    def _decode(self):
        """The reading as a generator: it yields the token ids of each decoder call it needs,
        is sent that call's logits, and returns the window's ids.

        Greedy decoding with the previous reading as a draft (prompt-lookup speculative
        decoding): the chosen token and the draft's continuation run as one decoder call,
        the draft is kept up to the first token greedy would not have chosen, and the cache
        forgets the rest. The result is the greedy reading; the cost is a few calls instead
        of one per token, because one call's weights are read once for all its tokens."""
        c = self.config
        prompt_logits = yield list(c.prompt_ids)
        if c.no_speech_id is not None:
            no_speech = float(np.exp(log_softmax(prompt_logits[0])[c.no_speech_id]))
            if no_speech > c.no_speech_skip:
                self.confidence = 0.0
                self.previous = []
                return []
        ids: list[int] = []
        logprobs: list[float] = []
        self.unsure = False  # read as no speech for its log-probability (not for no_speech)
        self._past_eos = None  # where the eos rule first read on past an <eos>
        judged = c.abort_logprob is None
        looped = False  # the reading ended in a repeated n-gram
        choice = self._next(prompt_logits[-1], ids)
        while True:
            token, lp, end = choice
            logprobs.append(lp)
            if not judged and len(logprobs) >= ABORT_TOKENS:
                judged = True
                # a reading this unsure of its first words ends below min_avg_logprob anyway
                # (every one measured did): stop paying decoder calls for it
                head = float(np.mean(logprobs[:ABORT_TOKENS]))
                if head < c.abort_logprob:  # what it read so far is the next draft; a
                    self.aborted += 1  # draft may have run further: cut it back
                    self.confidence = float(np.exp(head))
                    self.previous = ids[: ABORT_TOKENS - 1]
                    self.unsure = True
                    return []
            if end:
                looped = token != self.eos
                break
            ids.append(token)
            if len(ids) == c.max_tokens:
                break
            draft = self._draft(ids, c.max_tokens - len(ids))
            rows = yield [token, *draft]
            for i, guess in enumerate(draft):
                choice = self._next(rows[i], ids)  # greedy's own choice there
                if choice[2] or choice[0] != guess:
                    self.cache.rollback(len(draft) - i)  # the rest of the draft
                    break
                logprobs.append(choice[1])
                ids.append(guess)
            else:  # the whole draft held: the next choice follows its last token
                if len(ids) == c.max_tokens:
                    break
                choice = self._next(rows[-1], ids)
        at = self._past_eos
        if at is not None and self.cut_back(ids, logprobs, at, looped):
            ids, logprobs = ids[:at], logprobs[:at]
        avg = float(np.mean(logprobs)) if logprobs else -np.inf
        self.confidence = float(np.exp(avg))
        self.previous, self.logprobs = ids, logprobs[: len(ids)]
        self.unsure = avg < c.min_avg_logprob
        return [] if self.unsure else ids

    def words(self, ids: list[int]) -> list[Word]:
        """Token ids -> words: a token whose text opens with a space starts one; a piece
        without letters or digits (punctuation) stays with the word before it."""
        piece = self.engine.detokenizer.piece
        groups: list[list[int]] = []
        for token in ids:
            text = piece(token).decode("utf-8", "replace")
            if not groups or (text.startswith(" ") and key(text)):
                groups.append([token])
            else:
                groups[-1].append(token)
        decode = self.engine.detokenizer.decode
        return [w for w in (Word(decode(g), tuple(g)) for g in groups) if w.key]

    def _gate_open(self) -> bool:
        """Whether a reading due now may run: where the gate heard no speech it is skipped,
        without a call, as a reading Whisper judges to be no speech returns none."""
        if self.gate is None or self.gate.open:
            return True
        self._judged()
        self.skipped += 1
        self.calls = 0
        self.confidence = 0.0
        self.previous = []
        return False

    def read(self) -> list[int]:
        """The window's hypothesis, read to its end now, or none where the gate heard no
        speech."""
        return self.hypothesis() if self._gate_open() else []

    def _judged(self) -> None:
        """The current window is read (or judged speechless): chunks older than it that no
        earlier window held were never read."""
        oldest = self.chunks - self.window_chunks + 1
        if oldest > self._covered + 1:
            self.unread += oldest - self._covered - 1
        self._covered = self.chunks

    def _hop(self, now: float, since: float) -> int:
        """Chunks from one reading's start to the next's: 1 at real time; behind it, one more
        for each chunk of audio complete since this one's (its lag), up to `max_hop_chunks`.
        Graded, because each chunk of hop costs words (fast mode, held-out Asterisk and
        flite: 8.7 % WER reading every chunk, 10.2 every second, 14.5 every third, 20.9 every
        fourth): a reader a little behind should read a little less often, not 4x less."""
        if not self.realtime:
            return 1
        lag = now - since
        return max(1, min(self.config.max_hop_chunks, math.ceil(lag / self.chunk_s)))

    def needs_window(self, since: float, now: float | None = None) -> bool:
        """Whether the next chunk's window may be read (a reading may begin at it), for a
        chunk whose audio was complete at `since`; behind real time the reader skips chunks
        (`_hop`), and so it does between readings `every_chunks` apart: a chunk no reading
        begins at need not be encoded at all, the next encoded window holds its audio (the
        serve scheduler skips the encoder there). Fast mode encodes every chunk."""
        if not self.realtime or not self._began:
            return True
        if not (self._due or (self.chunks + 1 + self.offset) % self.config.every_chunks == 0):
            return False  # between readings (every_chunks, `--caption-hop`)
        now = time.monotonic() if now is None else now
        return self.chunks + 1 - self._began >= self._hop(now, since)

    def step(self, since: float | None = None, fresh: bool = True) -> list[int]:
        """After a chunk joined the memory: the token ids of the words to emit now. A reading
        is due every `every_chunks` chunks. `since`: time.monotonic() when the chunk's audio
        was ready (default: now); `budget_ms` counts from it, and so does the lag.

        Without a deadline no word is lost to time: a reading spread over chunks by
        `calls_per_chunk` ends, whatever it costs, once `max_hop_chunks` have passed since it
        began, and a reader behind real time reads less often (up to `max_hop_chunks` apart)
        until it has caught up; its words come late, never not at all. `fresh`: False where
        this chunk's window was not encoded (`needs_window`): the memory still holds an older
        window, so no reading begins at it. With `budget_ms` (for users who prefer dropping
        words to lagging) the reading under way goes on at later chunks instead, and its
        window's words may slide out unread (`unread` counts those chunks)."""
        self.chunks += 1
        if self.gate is not None:  # the gate's view of this chunk (the stream updated it)
            self._heard = [*self._heard, self.gate.since == 0][-self.window_chunks :]
        self.step_calls = 0
        self.step_ms = 0.0
        now = time.monotonic()
        self._since = now if since is None else since
        c = self.config
        if (self.chunks + self.offset) % c.every_chunks == 0:
            self._due = True
        hop = self._hop(now, self._since)
        out: list[Word] = []
        while True:
            if self._reading is None:
                if not self._due:
                    break
                if not fresh or (self._began and self.chunks - self._began < hop):
                    self.deferred += 1  # read over a longer hop: the reader catches up
                    break
                self._due = False
                if not self._gate_open():
                    out += self.agreement.push([])
                    continue
                self._begin()
            calls = c.calls_per_chunk
            if c.budget_ms is None and self.chunks - self._began >= c.max_hop_chunks:
                calls = None  # any later and the next window misses words: it ends now
            ids = self._advance(calls, c.budget_ms)
            if ids is None:
                break
            lag = (time.monotonic() - self._began_since) * 1e3
            self.lag_ms.add(lag)
            self.late += lag > c.every_chunks * self.chunk_s * 1e3
            out += self._push(ids, hold=True)
        return [t for w in out for t in w.ids]

    def _push(self, ids: list[int], hold: bool = False) -> list[Word]:
        """A reading's words to the agreement, with the window it read (its newest chunk);
        with `hold`, less an unsure last word at the window's edge (`edge_min_logprob`). The
        stream's last readings hold nothing back: no later reading would hear the word."""
        words = self.words(ids)
        if hold and words and self._unsure_edge(ids, words[-1]):
            words = words[:-1]
        if hold and not words and self.unsure and self._speaking():
            # too unsure to count as words while the gate hears speech: no evidence either
            # way, so the unconfirmed words wait for the next reading, which agrees with them
            # or replaces them. As "no speech" an empty reading emits them as heard, and a
            # reading every chunk made that a common way for a misread start to be captioned
            return []
        return self.agreement.push(words, at=self._began, window=self.window_chunks)

    def _speaking(self) -> bool:
        """Whether the gate heard speech in the window's newest chunk (without a gate:
        unknown, taken as no)."""
        return self.gate is not None and bool(self._heard) and self._heard[-1]

    def _unsure_edge(self, ids: list[int], last: Word) -> bool:
        """Whether `last`, the reading's last word, may be cut by the window's edge (the
        gate heard speech in the newest chunk; without a gate, always) and a token of it is
        less likely than `edge_min_logprob`."""
        floor = self.config.edge_min_logprob
        if floor is None or (self.gate is not None and not self._speaking()):
            return False
        # the word's tokens end the reading: trailing punctuation is part of its last word
        lps = self.logprobs[len(ids) - len(last.ids) : len(ids)]
        return len(lps) == len(last.ids) and min(lps) < floor

    def finish(self) -> list[int]:
        """The end of the stream: the reading under way ends, the current window is read
        once more, then every word that still waits for agreement is emitted."""
        out: list[Word] = []
        if self._reading is not None:
            out += self._push(self._advance(None))
        out += self._push(self.read()) + self.agreement.flush()
        return [t for w in out for t in w.ids]
