"""Local agreement over re-decoded windows (runtime/agreement.py): the rule on word lists, with
hypotheses as Whisper wrote them for overlapping windows of one held-out flite stream."""

from __future__ import annotations

import pytest

from soundflow.runtime.agreement import (
    LocalAgreement,
    Word,
    agreed,
    alike,
    join_repeat,
    key,
    overlap_end,
)
from soundflow.runtime.kinds import open_stream


def words(text: str) -> list[Word]:
    return [Word(" " + w) for w in text.split()]


def run(hypotheses: list[str]) -> list[str]:
    la = LocalAgreement()
    out = []
    for h in hypotheses:
        out += [w.key for w in la.push(words(h))]
    out += [w.key for w in la.flush()]
    return out


def test_key_ignores_case_and_punctuation():
    assert key(" Hello,") == "hello"
    assert key("don't") == "don't"
    assert key(" ...") == ""


def test_overlap_finds_the_re_read_words_despite_an_edge_misreading():
    emitted = "ever leading to the".split()
    # the window's left edge cut "leading": Whisper reads "relating"
    hyp = "relating to the writings of the".split()
    assert overlap_end(emitted, hyp) == 3
    # one shared common word is not an overlap
    assert overlap_end("over the".split(), "the dog barked".split()) == 0
    assert overlap_end([], "a b".split()) == 0


def test_agreement_allows_a_word_lost_at_the_left_edge():
    prev = "of relating to the".split()
    cand = "relating to the writings".split()
    assert agreed(prev, cand) == (4, 3)  # prev's extra leading word is kept
    assert agreed("a b".split(), "c d".split()) == (0, 0)
    # a single agreeing word after a skip is a coincidence, not agreement
    assert agreed("x the".split(), "y the".split()) == (0, 0)


def test_words_the_window_slid_past_are_emitted_not_lost():
    """Readings 0.8 s apart of a held-out flite stream (the live bench's, 0.1 s later in its
    chunks): nothing was emitted for a while, so each reading starts at the window's left
    edge, which moves 2-3 words a hop. Agreement from the start alone never met again and
    lost 14 words ("the whole set if at first ... average" came out as nothing)."""
    hyps = [
        "lay the wayals collect the whole set. If at first you don't",
        "the whole set. If at first you don't succeed you are running about",
        "If at first you don't succeed you are running about average",
        "you don't succeed you are running about average you're good nature",
        "your good nature will bring you",
    ]
    out = run(hyps)
    said = "the whole set if at first you don't succeed you are running about average"
    assert said in " ".join(out), out
    assert "your good nature will bring you" in " ".join(out)
    # a slide needs SLID_RUN agreeing words: two shared words after three passed over are not
    assert agreed("a b c the dog".split(), "the dog".split()) == (0, 0)
    assert agreed("a b c the dog ran".split(), "the dog ran far".split()) == (6, 3)


def test_slid_past_words_that_misread_emitted_ones_are_not_emitted_again():
    # Asterisk's prompts: "please enter the conference pin number" was emitted; the next
    # reading opened with a misreading of it before the new prompt
    la = LocalAgreement()
    for h in ["please enter the conference pin number", "please enter the conference pin number"]:
        la.push(words(h))
    la.push(words("he sent a conference pin number that is not a valid"))
    out = [w.key for w in la.push(words("that is not a valid conference number"))]
    out += [w.key for w in la.flush()]
    assert out[:5] == "that is not a valid".split(), out
    assert "sent" not in out


def test_a_word_is_emitted_once_two_windows_agree_and_never_twice():
    # windows every 0.8 s over "the quick brown fox jumped over the lazy dog"
    hyps = [
        "the",
        "the quick brown",
        "the quick brown fox jumps",
        "quick brown fox jumped over the",
        "fox jumped over the lazy dog",
        "over the lazy dog",
        "lazy dog",
    ]
    assert run(hyps) == "the quick brown fox jumped over the lazy dog".split()


def test_pending_words_re_read_after_a_misread_join_are_emitted():
    """A reading whose first words misread what was already emitted (so the overlap does not
    strip them) but then re-reads every pending word agrees with them: the words were heard
    twice and are not dropped for the misread join."""
    la = LocalAgreement()
    la.push(words("every ship that passed in"))
    la.push(words("every ship that passed in the night"))
    assert [w.key for w in la.pending] == ["the", "night"]
    out = la.push(words("that past ten the night nobody ever asks"))
    assert [w.key for w in out] == ["the", "night"]
    assert [w.key for w in la.pending] == ["nobody", "ever", "asks"]


def test_words_heard_once_are_late_not_lost():
    la = LocalAgreement()
    assert la.push(words("turn off the lights")) == []
    # the speech has moved out of the window: the next one reads only what was emitted
    assert [w.key for w in la.push(words(""))] == "turn off the lights".split()
    # and at the end of a stream the waiting words are emitted
    la.push(words("good night"))
    assert [w.key for w in la.flush()] == ["good", "night"]


def test_reset_forgets_the_stream():
    la = LocalAgreement()
    la.push(words("hello there"))
    la.push(words("hello there"))
    la.reset()
    assert la.emitted == [] and la.pending == []


def test_captions_method_is_read_from_the_manifest_and_a_flag_overrides_it(
    tmp_path, default_engine
):
    """The shipped bundle captions by agreement in transcribe mode only; `--captions protocol`
    (RuntimeOptions.captions) switches back; a wrong value is refused in both places."""
    import json
    import shutil

    import pytest

    from soundflow.manifest import BundleError
    from soundflow.runtime.kinds import open_stream
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.runtime.validate import validate_manifest

    engine = default_engine
    if engine.spec.kind != "whisper-cross":
        pytest.skip("the embedded default is not the Whisper-based model")
    assert open_stream(engine, RuntimeOptions.from_flags(mode="transcribe")).captions is not None
    assert open_stream(engine, RuntimeOptions.from_flags(mode="alert")).captions is None
    protocol = RuntimeOptions.from_flags(mode="transcribe", captions="protocol")
    assert open_stream(engine, protocol).captions is None
    with pytest.raises(ValueError, match="captions"):
        RuntimeOptions.from_flags(captions="sometimes")

    bad = tmp_path / "bad"
    shutil.copytree(engine.spec.path, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["decision"]["captions"]["method"] = "sometimes"
    with pytest.raises(BundleError, match="decision.captions.method"):
        validate_manifest(manifest, bad / "manifest.json")
    manifest["decision"]["captions"]["method"] = "agreement"
    manifest["decision"]["captions"]["prompt_ids"] = [10**9]
    with pytest.raises(BundleError, match="decision.captions.prompt_ids"):
        validate_manifest(manifest, bad / "manifest.json")
    manifest["decision"]["captions"]["prompt_ids"] = [0]
    manifest["decision"]["captions"]["calls_per_chunk"] = 0  # a reading could never end
    with pytest.raises(BundleError, match="decision.captions.calls_per_chunk"):
        validate_manifest(manifest, bad / "manifest.json")
    manifest["decision"]["captions"]["calls_per_chunk"] = 4
    for budget in (0, -3, float("nan"), "30"):
        manifest["decision"]["captions"]["budget_ms"] = budget
        with pytest.raises(BundleError, match="decision.captions.budget_ms"):
            validate_manifest(manifest, bad / "manifest.json")
    with pytest.raises(ValueError, match="caption_budget_ms"):
        RuntimeOptions.from_flags(caption_budget_ms=-1.0)
    # The time bound protects a real-time deadline; fast mode (eval, bench peer) has none
    # and keeps its captions independent of the machine's load.
    live = RuntimeOptions.from_flags(mode="transcribe", caption_budget_ms=5.0)
    assert open_stream(engine, live).captions.config.budget_ms == 5.0
    fast = live.with_flags(realtime=False)
    assert open_stream(engine, fast).captions.config.budget_ms is None


def test_a_silent_window_is_not_read_when_whisper_hears_no_speech(default_engine):
    """decision.captions.no_speech_skip: a window whose p(<|nocaptions|>) passes it costs one
    prompt call and no reading (confidence 0); with the skip off the reading runs."""
    import dataclasses

    import numpy as np
    import pytest

    from soundflow.runtime.kinds.decoder import EncoderStream
    from soundflow.runtime.options import RuntimeOptions

    engine = default_engine
    if engine.spec.kind != "whisper-cross":
        pytest.skip("the embedded default is not the Whisper-based model")
    dec = open_stream(engine, RuntimeOptions.from_flags(mode="transcribe"))
    enc = EncoderStream(engine)
    assert dec.captions.config.no_speech_id is not None
    for _ in range(6):  # 2.4 s of silence into the memory
        dec.memory.add(enc.encode(np.zeros(engine.spec.chunk_samples, np.float32)))
    assert dec.captions.hypothesis() == [] and dec.captions.confidence == 0.0
    dec.captions.config = dataclasses.replace(dec.captions.config, no_speech_skip=1.0)
    dec.captions.hypothesis()
    assert dec.captions.confidence > 0.0  # read this time (and dropped or not by the guard)


def test_an_unsure_reading_stops_after_its_first_tokens(default_engine):
    """abort_logprob: a reading whose first ABORT_TOKENS tokens average below it returns no
    words after those tokens' calls; without it, the same reading runs to its end."""
    import dataclasses

    import pytest

    from soundflow.runtime import captions
    from soundflow.runtime.kinds.decoder import EncoderStream
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.train.data import espeak

    engine = default_engine
    if engine.spec.kind != "whisper-cross":
        pytest.skip("the embedded default is not the Whisper-based model")
    pcm, _ = espeak.synthesize("the kettle is boiling in the kitchen", espeak.Voice())
    n = engine.spec.chunk_samples
    dec = open_stream(engine, RuntimeOptions.from_flags(mode="transcribe"))
    enc = EncoderStream(engine)
    for i in range(0, len(pcm) - n, n):
        dec.memory.add(enc.encode(pcm[i : i + n]))
    cap = dec.captions
    cap.config = dataclasses.replace(cap.config, abort_logprob=None)
    full = cap.hypothesis()
    assert len(full) > captions.ABORT_TOKENS and cap.aborted == 0  # a sure, long reading
    cap.config = dataclasses.replace(cap.config, abort_logprob=0.0)  # nothing is that sure
    assert cap.hypothesis() == [] and cap.aborted == 1
    assert cap.previous == full[: captions.ABORT_TOKENS - 1]  # the next reading's draft


def test_a_reading_drafted_from_the_last_one_is_the_greedy_reading(monkeypatch, default_engine):
    """WindowCaptions.hypothesis verifies the previous reading's continuation as a draft in one
    decoder call: the readings of a held-out sentence must be the ones token-by-token greedy
    decoding gives, in fewer decoder calls. Up to near-ties: the 8-bit decoder layers
    (MatMulNBits) sum their blocks in another order for one row than for many, so a logit
    may move in its last bits (measured: 9 of 10 readings identical, the tenth from its
    tenth token, where the window's audio ends: "and a" against "and then then then")."""
    import numpy as np
    import pytest

    from soundflow.runtime import captions
    from soundflow.runtime.kinds.decoder import EncoderStream
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.train.data import espeak

    engine = default_engine
    if engine.spec.kind != "whisper-cross":
        pytest.skip("the embedded default is not the Whisper-based model")
    text = "the night train leaves the station at seven and arrives before the morning"
    pcm, _ = espeak.synthesize(text, espeak.sample_voice(np.random.default_rng(4), "eval"))
    n = engine.spec.chunk_samples
    pcm = np.concatenate([pcm, np.zeros(n - len(pcm) % n + n, np.float32)])

    def readings() -> tuple[list[list[int]], int]:
        dec = open_stream(engine, RuntimeOptions.from_flags(mode="transcribe"))
        enc = EncoderStream(engine)
        out, calls = [], 0
        for i in range(0, len(pcm), n):
            dec.memory.add(enc.encode(pcm[i : i + n]))
            dec.captions.hypothesis()
            out.append(dec.captions.previous)
            calls += dec.captions.calls
        return out, calls

    drafted, drafted_calls = readings()
    monkeypatch.setattr(captions, "DRAFT_TOKENS", 0)  # one decoder call per token
    greedy, greedy_calls = readings()
    assert sum(len(r) for r in greedy) > 60  # the sentence was read, many times over
    assert len(drafted) == len(greedy)
    assert sum(a == b for a, b in zip(drafted, greedy, strict=True)) >= 0.8 * len(greedy)

    def prefix(a: list[int], b: list[int]) -> int:
        return next(
            (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
        )

    same = sum(prefix(a, b) for a, b in zip(drafted, greedy, strict=True))
    assert same >= 0.9 * sum(len(r) for r in greedy), (drafted, greedy)
    assert drafted_calls < 0.7 * greedy_calls, (drafted_calls, greedy_calls)


def _sentence_stream(engine, text: str, seed: int, pad_s: float = 1.0):
    """A held-out espeak-ng voice saying `text`, then `pad_s` of silence, in chunks."""
    import numpy as np

    from soundflow.train.data import espeak

    pcm, _ = espeak.synthesize(text, espeak.sample_voice(np.random.default_rng(seed), "eval"))
    n = engine.spec.chunk_samples
    pcm = np.concatenate([pcm, np.zeros(n - len(pcm) % n + int(pad_s * 16000), np.float32)])
    return [pcm[i : i + n] for i in range(0, len(pcm) - n + 1, n)]


@pytest.mark.parametrize(
    "bound",
    [{"caption_calls": 1, "caption_budget_ms": 0}, {"caption_calls": 0, "caption_budget_ms": 1e-3}],
    ids=["one-call", "no-time-for-a-second"],
)
def test_a_reading_spread_over_chunks_reads_the_window_it_began_on(bound, default_engine):
    """calls_per_chunk (or budget_ms: a chunk always makes its first call, and 1 µs has no
    room for a second): a reading that needs more calls than a chunk allows goes on at the
    next chunk on a copy of the window it began on, so the stream's memory moving on under
    it changes nothing: it ends with the ids the same window read at once gives. Without a
    deadline it ends, however many calls that takes, once `max_hop_chunks` have passed (the
    next window must still hold its words); with one it goes on as long as it needs."""

    import pytest

    from soundflow.runtime.kinds.decoder import EncoderStream
    from soundflow.runtime.options import RuntimeOptions

    engine = default_engine
    if engine.spec.kind != "whisper-cross":
        pytest.skip("the embedded default is not the Whisper-based model")
    text = "the night train leaves the station at seven and arrives before the morning"
    chunks = _sentence_stream(engine, text, 4, pad_s=6.0)
    whole = open_stream(engine, RuntimeOptions.from_flags(mode="transcribe"))
    spread = open_stream(engine, RuntimeOptions.from_flags(mode="transcribe", **bound))
    config = spread.captions.config
    assert (config.calls_per_chunk, config.budget_ms) in ((1, None), (None, 1e-3))
    spread.captions.gate = None  # the reading under test must run whatever the gate hears
    every = spread.captions.config.every_chunks
    enc = EncoderStream(engine)
    cut = -(-8 // every) * every  # 3.2 s in: the sentence is under way, a reading due
    for chunk in chunks[:cut]:
        entry = enc.encode(chunk)
        whole.memory.add(entry)
        spread.memory.add(entry)
    expected = whole.captions.hypothesis()
    assert len(expected) >= 3 and whole.captions.calls >= 3  # more than a chunk's worth
    spread.captions.chunks = cut - 1  # the next step is a reading chunk
    hop = config.max_hop_chunks if config.budget_ms is None else len(chunks)
    steps = 0
    for chunk in chunks[cut:]:
        spread.captions.step()
        steps += 1
        assert spread.captions.step_calls <= 1 or steps == hop + 1
        if spread.captions.calls:  # the first reading ended
            break
        spread.memory.add(enc.encode(chunk))  # the stream moves on under the reading
    assert spread.captions.previous == expected
    # one call per chunk, as many chunks as calls, up to the hop's end
    assert steps == min(whole.captions.calls, hop + 1)


def test_the_time_budget_admits_a_call_only_where_one_more_ends_in_time(
    monkeypatch, default_engine
):
    """budget_ms, on a fake clock that moves 5 ms at each reading (so a call takes 5 ms): from
    the step's start, the second call's check comes at 15 ms (+5 <= 25: made), the third's
    at 30 (+5 > 25: not), chunk after chunk. A chunk whose audio was ready long before (the
    `since` the loop passes) still makes its first call, and only that. The reading ends
    with the ids of the window it began on."""
    from soundflow.runtime import captions as module
    from soundflow.runtime.kinds.decoder import EncoderStream
    from soundflow.runtime.options import RuntimeOptions

    engine = default_engine
    if engine.spec.kind != "whisper-cross":
        pytest.skip("the embedded default is not the Whisper-based model")
    options = RuntimeOptions.from_flags(mode="transcribe", caption_calls=0, caption_budget_ms=25.0)
    # A voice whose reading 3.2 s in needs 5+ calls: which one does depends on the CPU's int8
    # rounding (seed 5's reads as no speech after 3 on an AVX2-only AMD EPYC), not on the budget.
    for seed in range(5, 10):
        chunks = _sentence_stream(engine, "a long and winding road leads to your door", seed, 6.0)
        dec, whole = open_stream(engine, options), open_stream(engine, options)
        dec.captions.gate = None
        enc = EncoderStream(engine)
        every = dec.captions.config.every_chunks
        cut = -(-8 // every) * every  # 3.2 s in, a reading due
        for chunk in chunks[:cut]:
            entry = enc.encode(chunk)
            dec.memory.add(entry)
            whole.memory.add(entry)
        expected = whole.captions.hypothesis()  # read to its end: no budget applies
        if whole.captions.calls >= 5:
            break
    assert whole.captions.calls >= 5

    clock = iter(range(10**6))
    monkeypatch.setattr(module.time, "monotonic", lambda: next(clock) * 5e-3)
    dec.captions.chunks = cut - 1
    dec.captions.step(since=-1.0)  # ready a second before the clock's 0: late already
    per_chunk = [dec.captions.step_calls]
    while not dec.captions.calls:
        dec.captions.step()
        per_chunk.append(dec.captions.step_calls)
        assert dec.captions.call_ms == pytest.approx(5.0)
    assert dec.captions.previous == expected
    assert per_chunk[0] == 1
    assert per_chunk[1:-1] == [2] * (len(per_chunk) - 2) and per_chunk[-1] in (1, 2)


def test_a_bounded_reading_keeps_each_chunk_in_budget_and_still_captions():
    """A held-out sentence through the stream with 2 calls per chunk: no chunk makes more,
    readings do span chunks, and the caption still says the sentence (at most a third of
    its words wrong: run alone it reads 2 of 13 wrong, but in the full suite under
    pytest-xdist it has read "the night trainings the station", 4 of 13, on a fresh engine
    too; the cause is not found, session 19's note)."""
    import pytest

    from soundflow.runtime.kinds import open_engine
    from soundflow.runtime.kinds.decoder import EncoderStream
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.train.evaluate import edit_distance, normalize

    engine = open_engine()
    if engine.spec.kind != "whisper-cross":
        pytest.skip("the embedded default is not the Whisper-based model")
    text = "the night train leaves the station at seven and arrives before the morning"
    chunks = _sentence_stream(engine, text, 4)
    from soundflow.runtime.kinds.whisper import CrossDecoderStream

    options = RuntimeOptions.from_flags(mode="transcribe", caption_calls=2, realtime=False)
    dec = CrossDecoderStream(engine, options)
    enc = EncoderStream(engine)
    said, per_chunk, overdue, under_way = [], [], [], []
    cap = dec.captions
    for chunk in chunks:
        # a reading begun max_hop_chunks ago ends in this chunk whatever it costs (the
        # documented limit on how far a reader falls behind): those chunks may make more
        reading = cap._reading is not None
        under_way.append(reading)
        overdue.append(reading and cap.chunks + 1 - cap._began >= cap.config.max_hop_chunks)
        if dec.decide(enc.encode(chunk)).respond:
            said += dec._caption
        per_chunk.append(cap.step_calls)
    said += dec.finish()
    assert max(c for c, late in zip(per_chunk, overdue, strict=True) if not late) == 2
    assert all(c <= 2 or late for c, late in zip(per_chunk, overdue, strict=True)), per_chunk
    carried = [c for c, going in zip(per_chunk, under_way, strict=True) if going and c]
    assert carried  # some reading went on at a later chunk than it began in
    hyp = normalize(engine.detokenizer.decode(said))
    assert edit_distance(normalize(text), hyp) / len(text.split()) <= 1 / 3, hyp


def test_a_join_that_stops_a_word_short_does_not_emit_it_twice():
    """The overlap stops a word short ("and" re-read as new): the word is not said twice,
    but a double the hypothesis itself holds ("had had") is kept."""
    la = LocalAgreement()
    la.push(words("their husband are having problems and"))
    out = la.push(words("their husband are having problems and"))
    assert [w.key for w in out] == "their husband are having problems and".split()
    # the next windows re-read "and" as if it were new ("problems" fell out of the window)
    assert la.push(words("and investor with a")) == []  # one shared word: no overlap found
    out = la.push(words("and investor with a view"))
    assert [w.key for w in out] == "investor with a".split()
    assert "and and" not in " ".join(w.key for w in la.emitted)
    assert la.repeats == 1

    la = LocalAgreement()
    la.push(words("she had had enough of it"))
    out = la.push(words("she had had enough of it"))
    assert [w.key for w in out] == "she had had enough of it".split()
    assert join_repeat(["she", "had"], ["had", "enough"], ["she", "had", "had", "enough"]) == 0
    assert join_repeat(["problems", "and"], ["and", "investor"], ["and", "investor"]) == 1
    assert join_repeat(["is", "side"], ["is", "side", "of"], ["is", "side", "of"]) == 2


def test_words_said_again_after_the_window_moved_on_are_new():
    """The same phrase in the next prompt ("... followed by the pound key" twice) is not a
    re-reading once the window that first heard it has slid past: told which window each
    hypothesis read, the agreement emits it again; without that it is swallowed."""
    first = "please enter your number followed by the pound key"
    again = "followed by the pound key"

    def run(with_windows: bool) -> list[str]:
        la, out = LocalAgreement(), []
        for at, h in [(2, first), (4, first), (6, ""), (20, again), (22, again), (24, "")]:
            kw = {"at": at, "window": 11} if with_windows else {}
            out += [w.key for w in la.push(words(h), **kw)]
        return out + [w.key for w in la.flush()]

    assert run(True) == (first + " " + again).split()
    assert run(False) == first.split()  # what the agreement did before it knew the windows


def test_a_word_spelt_two_ways_by_two_readings_is_one_word_at_a_join():
    """Held-out Asterisk prompts, as Whisper read them: the next window re-reads "patience" as
    "patients" (and "weasels" as "weasles"); the join must not emit the re-read words again.
    Short words stay distinct ("to" and "too" are two words)."""
    assert alike("patience", "patients") and alike("weasels", "weasles")
    assert not alike("to", "too") and not alike("the", "a") and not alike("call", "car")
    emitted = "thank you for your patience".split()
    assert overlap_end(emitted, "your patients simultaneous call limit".split()) == 2
    la = LocalAgreement()
    out = []
    for h in [
        "thank you for your patience",
        "thank you for your patience",
        "your patients simultaneous call limit",
        "your patients simultaneous call limit reached",
    ]:
        out += [w.key for w in la.push(words(h))]
    out += [w.key for w in la.flush()]
    assert out == "thank you for your patience simultaneous call limit reached".split()


def test_the_last_word_alone_at_the_left_edge_is_not_emitted_again():
    """Read every chunk, an utterance's final word is the only word of a window before it
    slides out ("noise" after "what was that noise", the demo clip): a one-word reading that
    is the end of what was emitted re-reads it; one that is not is a new word."""
    la, out = LocalAgreement(), []
    for at, h in [(200, "what was"), (201, "what was that noise"), (202, "what was that noise")]:
        out += [w.key for w in la.push(words(h), at=at, window=11)]
    for at, h in [(210, "was that noise"), (211, "noise"), (212, "")]:
        out += [w.key for w in la.push(words(h), at=at, window=11)]
    assert out + [w.key for w in la.flush()] == "what was that noise".split()
    assert overlap_end(["that", "noise"], ["noise"]) == 1
    assert overlap_end(["that", "noise"], ["voice"]) == 0


def test_an_unsure_reading_during_speech_leaves_the_unconfirmed_words_waiting(default_engine):
    """A reading the log-prob guard reads as no speech, while the gate hears speech in the
    newest chunk, is no evidence: the words waiting for agreement stay for the next reading
    (which agrees with them or replaces them) instead of being emitted as heard, which is
    how a misread sentence start ("she day she gave up ...") was captioned. Once the gate
    hears the speech end, the same empty reading emits them: late, not lost."""
    import pytest

    from soundflow.runtime.options import RuntimeOptions

    engine = default_engine
    if engine.spec.kind != "whisper-cross":
        pytest.skip("the embedded default is not the Whisper-based model")
    cap = open_stream(engine, RuntimeOptions.from_flags(mode="transcribe")).captions
    assert cap.gate is not None  # the default bundle's speech gate
    for speaking, emitted in ((True, []), (False, ["she", "day"])):
        cap.reset()
        cap.agreement.push(words("she day"), at=3, window=11)  # heard once: pending
        cap._heard, cap.unsure = [True, speaking], True
        assert [w.key for w in cap._push([], hold=True)] == emitted
        waiting = [w.key for w in cap.agreement.pending]
        assert waiting == (["she", "day"] if speaking else [])
