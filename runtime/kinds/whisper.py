"""The cross-attention decoder kind (Whisper; ARCHITECTURE.md, Contracts 2b and 3b): the engine
that owns its two sessions, and the stream that owns its memory of frames and its token cache.

Per chunk the encoder re-encodes its window (the chunk + 4 s before it) and returns the
window's cross-attention keys/values; the stream writes them into its memory (bound once,
updated in place), then feeds its pending token ids; the last logits decide <silence> or
<respond> as in Contract 2.
Positions are learned and absolute (below `max_positions`), so when the token cache is full
the stream re-prefills the prompt and the newest tokens with renumbered positions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from soundflow import protocol
from soundflow.manifest import BundleError
from soundflow.runtime import audioset_alerts
from soundflow.runtime.agreement import key
from soundflow.runtime.assist_grammar import ASSIST_MIN_LOGPROB, GrammarAssist
from soundflow.runtime.bundle import BundleSpec
from soundflow.runtime.captions import CaptionConfig, WindowCaptions
from soundflow.runtime.detokenize import Detokenizer
from soundflow.runtime.engine import OrtEngine, load_session
from soundflow.runtime.kinds.decoder import DecoderStream
from soundflow.runtime.kvcache import CachePolicy, KVCache
from soundflow.runtime.options import RuntimeOptions
from soundflow.runtime.policy import Decision, control_p
from soundflow.runtime.tagger import (
    AlertRule,
    SpeechGate,
    VerifySpec,
    check_tagger_graph,
    newest_frames,
    source_index,
)

INPUT_IDS, ENCODER_ATTENTION_MASK = protocol.INPUT_IDS, protocol.ENCODER_ATTENTION_MASK
REPREFILL_KEEP = 16  # newest tokens kept (besides the prompt) when the cache is re-prefilled
# A response ends where it would say a token n-gram for the second time: Whisper's decoder,
# fed a window it cannot read, loops ("for it for it for it ...") up to max tokens.
NO_REPEAT_NGRAM = 3
# decision.opens_with: what a mode's responses open with ("alert" | "intent" tag, or "text").
# Every alert target opens with an alert tag and every answer with an intent tag, so a response
# that opens otherwise (a caption in alert mode: the model heard speech) is withheld.


class CrossEngine(OrtEngine):
    """Encoder + decoder sessions of a whisper-cross bundle and its detokenizer."""

    def __init__(
        self,
        bundle: BundleSpec | str | None = None,
        options: RuntimeOptions | None = None,
        variant: str = "fp32",
    ) -> None:
        self.options = options or RuntimeOptions()
        self.spec = spec = _spec(bundle, variant)
        self._open_sessions(spec)  # OrtEngine's: sessions, signatures, metadata
        self.detokenizer = Detokenizer.from_file(spec.tokenizer_file)
        if self.detokenizer.vocab_size != spec.vocab:
            raise BundleError(
                f"{spec.tokenizer_file}: {self.detokenizer.vocab_size} tokens, the decoder has "
                f"{spec.vocab}; copy the bundle again or re-run `soundflow export`"
            )
        self.embed_tokens = None  # this kind embeds its own ids inside the graph
        n = spec.layers
        self.audio_name = protocol.AUDIO  # the encoder's PCM input
        self._state_out = [s.output for s in spec.encoder_state]
        # a chunk may skip the encoder (`advance`) where the state is the PCM history alone
        self.history_samples = int(spec.manifest.get("encoder", {}).get("history_samples", 0))
        self.can_advance = self.history_samples > 0 and [
            (s.input, s.output) for s in spec.encoder_state
        ] == [(protocol.HISTORY, protocol.HISTORY_OUT)]
        # the memory entry's key/value per layer (this kind's), after the state: run order
        self.memory_outputs = [
            s.name for s in spec.encoder_outputs if s.name.startswith("present.")
        ]
        self.encoder_outputs = [*self._state_out, *self.memory_outputs]
        names = [s.name for s in spec.decoder_inputs]
        self.past_names = [x for x in names if x.endswith((".decoder.key", ".decoder.value"))]
        self.memory_names = [x for x in names if x.endswith((".encoder.key", ".encoder.value"))]
        self.present_names = [s.name for s in spec.decoder_outputs if s.name.startswith("present.")]
        if not (len(self.past_names) == len(self.memory_names) == len(self.present_names) == 2 * n):
            raise BundleError(f"{spec.decoder_file}: expected {2 * n} cache tensors of each kind")
        self._dec_outputs = [protocol.LOGITS, *self.present_names]
        # Window readings take the int8 logits where the graph offers them (export
        # --int8-logits: a boolean input); decisions and responses keep fp32.
        self.int8_logits = protocol.LOGITS_INT8 in names
        self._no, self._yes = np.array(False), np.array(True)  # bound by pointer: kept alive
        self.tagger = None  # the tagger session (alerts, speech gate), where the bundle has one
        if spec.tagger is not None:
            self._tag_source = source_index(spec.tagger.source, n)
            self.tagger = load_session(spec.tagger.file, self.providers, 1)
            check_tagger_graph(self.tagger, spec.tagger, spec.kv_heads * spec.head_dim)

    def tag(self, entry: np.ndarray) -> np.ndarray:
        """A memory entry (the chunk's window) -> the tagger's probability per label."""
        t = self.spec.tagger
        x = newest_frames(entry, *self._tag_source, t.frames)
        return self.tagger.run([protocol.TAGGER_PROBS], {protocol.TAGGER_FRAMES: x})[0][0]

    def new_state(self) -> dict[str, np.ndarray]:
        """No PCM history yet: the first windows are shorter (as in training)."""
        return {s.input: np.zeros((1, 0), np.float32) for s in self.spec.encoder_state}

    reset = new_state

    def encode(self, audio: np.ndarray, state: dict[str, np.ndarray]):
        """audio (1, chunk_samples) -> (memory entry (layers, 2, heads, frames, head_dim),
        next state)."""
        if audio.shape != (1, self.spec.chunk_samples):
            raise ValueError(
                f"encoder takes (1, {self.spec.chunk_samples}) samples per chunk, got {audio.shape}"
            )
        outs = self.encoder.run(self.encoder_outputs, {self.audio_name: audio, **state})
        k = len(self._state_out)
        new = {s.input: o for s, o in zip(self.spec.encoder_state, outs[:k], strict=True)}
        kv = outs[k:]
        entry = np.stack(
            [np.stack([kv[2 * i][0], kv[2 * i + 1][0]]) for i in range(self.spec.layers)]
        )
        return entry, new

    def advance(self, audio: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The state `encode` would return for `audio` (1, chunk_samples), without encoding:
        the PCM history moves on by the chunk (the graph's own `history_out`, the newest
        `history_samples` of history + chunk), for a chunk whose window no one reads."""
        if not self.can_advance:
            raise ValueError(f"{self.spec.encoder_file}: no PCM history to advance; encode")
        window = np.concatenate([state[protocol.HISTORY], audio], axis=1)
        return {protocol.HISTORY: np.ascontiguousarray(window[:, -self.history_samples :])}

    def bind(self, cache: KVCache, memory: Memory, reading: bool = False) -> Any:
        """An IO binding of a token cache and a memory (bound once, updated in place);
        `reading`: a window reading's (runtime/captions.py), int8 logits where offered."""
        binding = self.decoder.io_binding()
        if self.int8_logits:
            binding.bind_cpu_input(protocol.LOGITS_INT8, self._yes if reading else self._no)
        for i in range(self.spec.layers):
            binding.bind_cpu_input(self.past_names[2 * i], cache.keys[i])
            binding.bind_cpu_input(self.past_names[2 * i + 1], cache.values[i])
            binding.bind_cpu_input(self.memory_names[2 * i], memory.keys[i])
            binding.bind_cpu_input(self.memory_names[2 * i + 1], memory.values[i])
        return binding

    def step(
        self,
        binding: Any,
        ids: np.ndarray,
        positions: np.ndarray,
        mask: np.ndarray,
        memory_mask: np.ndarray,
    ):
        """ids, positions (1, q) int64; mask (1,1,q,C+q); memory_mask (1,1,q,M) ->
        (logits (q, vocab), per layer (key, value) new entries (1, heads, q, head_dim))."""
        binding.bind_cpu_input(INPUT_IDS, ids)
        binding.bind_cpu_input(protocol.POSITION_IDS, positions)
        binding.bind_cpu_input(protocol.ATTENTION_MASK, mask)
        binding.bind_cpu_input(ENCODER_ATTENTION_MASK, memory_mask)
        return self._run_bound(binding)

    def step_feeds(self, ids, positions, mask, memory_mask, cache: KVCache, memory: Memory):
        """The inputs of one `step` as a plain `session.run` feed (no binding), for batching."""
        feeds = {
            INPUT_IDS: ids,
            protocol.POSITION_IDS: positions,
            protocol.ATTENTION_MASK: mask,
            ENCODER_ATTENTION_MASK: memory_mask,
        }
        for i in range(self.spec.layers):
            feeds[self.past_names[2 * i]] = cache.keys[i]
            feeds[self.past_names[2 * i + 1]] = cache.values[i]
            feeds[self.memory_names[2 * i]] = memory.keys[i]
            feeds[self.memory_names[2 * i + 1]] = memory.values[i]
        if self.int8_logits:
            feeds[protocol.LOGITS_INT8] = self._no
        return feeds

    def embed(self, ids):  # pragma: no cover - the decoder-only interface, not this kind's
        raise TypeError("a whisper-cross engine embeds token ids inside its decoder graph")


def _spec(bundle, variant: str) -> BundleSpec:
    from soundflow.runtime.bundle import load_spec

    return bundle if isinstance(bundle, BundleSpec) else load_spec(bundle, variant=variant)


class Memory:
    """The cross-attention memory: the current window's keys and values per layer,
    (1, heads, capacity, head_dim) preallocated and overwritten in place each chunk; slots
    past the window's length (the stream's first 4 s) are masked."""

    def __init__(self, layers: int, heads: int, head_dim: int, capacity: int, mask_value: float):
        self.keys = [np.zeros((1, heads, capacity, head_dim), np.float32) for _ in range(layers)]
        self.values = [np.zeros((1, heads, capacity, head_dim), np.float32) for _ in range(layers)]
        self.capacity, self.mask_value = capacity, mask_value
        self.reset()

    def reset(self) -> None:
        self.valid = np.zeros(self.capacity, bool)
        for a in (*self.keys, *self.values):
            a[:] = 0.0  # a reset must also clear non-finite values (a masked NaN still poisons)

    def add(self, entry: np.ndarray) -> None:
        """entry (layers, 2, heads, frames, head_dim): the current window, which replaces
        the previous one."""
        n = entry.shape[3]
        if n > self.capacity:
            raise ValueError(f"a window of {n} frames exceeds the memory's {self.capacity}")
        for i, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            k[0][:, :n] = entry[i, 0]
            v[0][:, :n] = entry[i, 1]
        self.valid[:n] = True
        self.valid[n:] = False

    def empty_like(self) -> Memory:
        """A memory of the same shape, empty (a window reading's own copy)."""
        layers, (_, heads, capacity, head_dim) = len(self.keys), self.keys[0].shape
        return Memory(layers, heads, head_dim, capacity, self.mask_value)

    def copy_from(self, other: Memory) -> None:
        """Take `other`'s window, in place (the arrays stay bound)."""
        for a, b in zip((*self.keys, *self.values), (*other.keys, *other.values), strict=True):
            np.copyto(a, b)
        self.valid[:] = other.valid

    def mask(self, q: int) -> np.ndarray:
        row = np.where(self.valid, 0.0, self.mask_value).astype(np.float32)
        return np.ascontiguousarray(np.broadcast_to(row, (1, 1, q, self.capacity)))


class CrossDecoderStream(DecoderStream):
    """One stream's decoding state for a whisper-cross engine (same interface as
    DecoderStream: decide, begin_response, continue_response, reset). `force_respond()` is
    for a parity driver only: it makes the next response happen regardless of p."""

    def __init__(self, engine: CrossEngine, options: RuntimeOptions | None = None) -> None:
        options = options or RuntimeOptions()
        spec = engine.spec
        self.engine = engine
        self.mode, self.prompt = spec.prompt(options.decision.mode)
        budget = self._decision_options(spec, options)
        d = spec.decision
        self.thresholds = dict(d.get("thresholds", {}).get(self.mode, {}))
        if self.threshold_flag is not None:
            self.thresholds = {}  # an explicit flag overrides every calibrated threshold
        c = spec.control
        self.silence, self.respond_id, self.eos = c["silence"], c["respond"], c["eos"]
        self.stops = set(spec.stop_ids) | {self.eos}
        self.fallback = False
        self._resume = [self.eos]  # what follows a response (DecoderStream.continue_response)
        keep = REPREFILL_KEEP if options.cache.window is None else options.cache.window
        try:
            policy = CachePolicy(budget, len(self.prompt), keep, "reprefill")
        except ValueError as e:
            raise BundleError(f"cache: {e}") from None
        self.cache = KVCache(spec.layers, spec.kv_heads, spec.head_dim, 1, policy, np.int64)
        self.memory = Memory(
            spec.layers, spec.kv_heads, spec.head_dim, spec.memory_frames, spec.mask_value
        )
        self.binding = engine.bind(self.cache, self.memory)
        self.tag_ids = spec.tag_ids
        self._gen_bias = np.zeros(spec.vocab, np.float32)
        for token_id in spec.special.values():
            if token_id not in self.stops and token_id not in self.tag_ids:
                self._gen_bias[token_id] = -np.inf
        # A tag opens a response (Contract 2); after its first token none may follow (the
        # decoder sometimes repeats it: "<intent:history><intent:history> yes earlier ...")
        self._body_bias = self._gen_bias.copy()
        self._body_bias[list(self.tag_ids)] = -np.inf
        self._tag_threshold = {
            i: self.thresholds[t] for i, t in self.tag_ids.items() if t in self.thresholds
        }
        # Tags also given where a reading of the window hears one of their words
        # (`decision.verify`: the decoder half-sure of an instruction, Whisper sure of its words)
        self.verify: dict[int, VerifySpec] = {}
        if self.threshold_flag is None:
            for tag, v in d.get("verify", {}).get(self.mode, {}).items():
                if tag in spec.special:
                    words = tuple(key(w) for w in v["words"])
                    self.verify[spec.special[tag]] = VerifySpec(float(v["threshold"]), words)
        # the lowest threshold any response may pass: the chunk's decision compares with it
        self._decide_at = min(
            [self.threshold, *self._tag_threshold.values()]
            + [v.threshold for v in self.verify.values()]
        )
        self._read_answers = options.assist.read_answers
        # Both checked by runtime/validate.py when the manifest is read.
        self.no_repeat = int(d.get("no_repeat_ngram", NO_REPEAT_NGRAM))
        self.opens_with = d.get("opens_with", {}).get(self.mode)
        self._response: list[int] = []
        # Transcribe mode may caption by re-decoding the window (runtime/captions.py) instead
        # of generating the protocol's responses; the manifest says which, a flag overrides.
        self.captions = None
        cfg = d.get("captions")
        method = options.captions.decider or (cfg or {}).get("method", "protocol")
        if self.mode == "transcribe" and method == "agreement":
            if cfg is None:
                raise BundleError(
                    "captions 'agreement' needs the manifest's decision.captions "
                    "(prompt_ids, text_vocab); re-export the bundle or use --captions protocol"
                )
            config = CaptionConfig.from_manifest(cfg, self.no_repeat)
            if options.captions.calls is not None:
                calls = options.captions.calls or None  # 0: no bound
                config = dataclasses.replace(config, calls_per_chunk=calls)
            if options.captions.hop is not None:
                config = dataclasses.replace(config, every_chunks=options.captions.hop)
            if options.captions.budget_ms is not None:
                budget = options.captions.budget_ms or None  # 0: no time bound
                config = dataclasses.replace(config, budget_ms=budget)
            if not options.source.realtime:  # fast mode has no deadline, and a time bound there
                config = dataclasses.replace(config, budget_ms=None)  # would make the
                # captions depend on the machine's load (eval, bench peer: deterministic)
            self._every = config.every_chunks  # its own hop (set_hop returns to it)
            try:
                self.captions = WindowCaptions(engine, self.memory, config, self.eos)
            except ValueError as e:
                raise BundleError(f"decision.{e}; re-export the bundle") from None
            self.captions.realtime = options.source.realtime
            gate = spec.tagger.speech if spec.tagger is not None else None
            if gate is not None and engine.tagger is not None and options.captions.speech_gate:
                self.captions.gate = SpeechGate(gate)
        self._caption: list[int] = []
        self._ready: float | None = None  # the chunk's ready time, decide -> conclude
        self._fresh = True  # whether the chunk came with its memory entry (wants_embeds)
        # Alert mode may decide by the bundle's tagger (runtime/tagger.py) instead of the
        # decoder's <respond> step; the manifest's presence says which, a flag overrides.
        self.alerts = None
        self._reader = None  # the tagger's confirming reader (VerifySpec), where it has one
        # ... or by the AudioSet branch (runtime/audioset_alerts.py), which hears each chunk's PCM
        self.wants_pcm = self.mode == "alert" and audioset_alerts.decides(spec, options)
        # ... and then reads no encoder output: the loop and serve skip the Whisper encoder
        # (the chunk's cost is YAMNet's ~2 ms, not the window's encoding)
        self.needs_embeds = not self.wants_pcm
        if self.wants_pcm:
            self.alerts = audioset_alerts.stream_rule(engine, options, engine.spec.chunk_ms / 1000)
            self._alert_ids, self._alert = self.alerts.tag_ids, []
        elif self.mode == "alert" and options.alerts.decider != "protocol":
            if spec.tagger is None or engine.tagger is None:
                if options.alerts.decider == "tagger":
                    raise BundleError(
                        "--alerts tagger: this bundle carries no tagger; add one with "
                        "`soundflow tagger` or use --alerts protocol"
                    )
            else:
                self.alerts = AlertRule(spec.tagger, self.refractory_s, self.threshold_flag)
                if options.alerts.only:
                    self.alerts.restrict(options.alerts.only)
                self._alert_ids = {}
                for label in self.alerts.labels:
                    tag = protocol.alert_tag(label)
                    if tag not in spec.special:
                        raise BundleError(
                            f"tagger label {label!r} has no {tag} token in special_tokens; "
                            "re-run `soundflow tagger`"
                        )
                    self._alert_ids[label] = spec.special[tag]
                self._alert: list[int] = []
                # labels the tagger's manifest has confirmed by words: a window reading with
                # Whisper's own prompt, made only in chunks where one of them needs it
                if self.alerts.verify:
                    self._reader = self._confirming_reader(cfg, "tagger.verify")
        # Assist mode may answer from the words a window reading hears (runtime/intents.py)
        # instead of the decoder's <respond> step; `decision.assist` says which (and whether
        # the decoder still answers what the grammar does not parse), a flag overrides.
        a = d.get("assist") or {}
        self.grammar = (
            self.mode == "assist" and (options.assist.decider or a.get("method")) == "grammar"
        )
        if self.alerts is None and (self.verify or self._read_answers or self.grammar):
            self._reader = self._confirming_reader(
                cfg, "decision.assist" if self.grammar else "decision.verify"
            )
        self._chunk_s = engine.spec.chunk_ms / 1000
        self.assist = None  # runtime/assist_grammar.GrammarAssist, in assist mode by grammar
        if self.grammar:  # the grammar decides what is a request, so a less sure reading counts
            floor = float(a.get("min_avg_logprob", ASSIST_MIN_LOGPROB))
            self._reader.config = dataclasses.replace(self._reader.config, min_avg_logprob=floor)
            self.assist = GrammarAssist(
                self._reader,
                spec.tagger if engine.tagger is not None else None,
                spec.special,
                fallback=bool(a.get("fallback", False)),
                chunk_s=self._chunk_s,
                refractory_s=self.refractory_s,
                memory_frames=spec.memory_frames,
            )
        self.reset()

    def _confirming_reader(self, cfg: dict | None, needed_by: str) -> WindowCaptions:
        """A reading of the window with Whisper's own prompt (the captions'), for words that
        confirm a tag: made only in the chunks that need one."""
        if cfg is None:
            raise BundleError(
                f"{needed_by} needs the manifest's decision.captions (the reading's prompt); "
                "re-export the bundle"
            )
        config = CaptionConfig.from_manifest(cfg, self.no_repeat)
        return WindowCaptions(self.engine, self.memory, config, self.eos)

    def reset(self) -> None:
        self.cache.reset()
        self.memory.reset()
        if self.captions is not None:
            self.captions.reset()
        if self.alerts is not None:
            self.alerts.reset()
            self._alert = []
        if self._reader is not None:
            self._reader.reset()
        self._chunks = 0
        self.verified = 0  # confirming readings made
        self.heard = None  # the words the last response's reading heard (None: no reading)
        self.withheld: str | None = None  # why the last response was withheld (Summary)
        self.withheld_tag: str | None = None  # and the tag it would have opened with
        self._answer: list[int] | None = None  # assist by grammar: the answer's ids
        if self.assist is not None:
            self.assist.reset()
        self._caption = []
        self._pending = list(self.prompt)
        self._last_tag: dict[int, float] = {}
        self._p = 0.0
        self.calls = 0

    def _make_room(self, q: int) -> None:
        if self.cache.needs_room(q):
            kept = self.cache.evict()  # the prompt + the newest tokens, positions renumbered
            if kept is not None:
                self._run(kept[:, 0].tolist())

    def _run(self, ids: list[int]) -> np.ndarray:
        q = len(ids)
        mask, pos = self.cache.inputs(q)
        x = np.asarray(ids, np.int64)[None]
        logits, presents = self.engine.step(
            self.binding, x, np.ascontiguousarray(pos[:, -q:]), mask, self.memory.mask(q)
        )
        return self.absorb(ids, logits, presents)

    def prepare_decision(self, audio_embeds: np.ndarray) -> list[int]:
        """`audio_embeds`: the chunk's memory entry from the encoder; the query is the
        pending token ids, or none when captions by agreement decide (their window reading
        is the decision; the protocol's own call would go unused). None: a chunk not encoded
        (`wants_embeds`), at which no reading begins."""
        self._fresh = audio_embeds is not None
        if audio_embeds is None and not self.wants_pcm:
            if not self.may_skip_encoder:
                raise ValueError("this stream reads every chunk's memory entry; encode it")
            if self.captions.gate is not None:
                self.captions.gate.skip()
            return []
        if self.alerts is not None:  # the tagger decides: no protocol decision call
            self._chunks += 1
            if self.wants_pcm:  # the AudioSet branch decides in conclude, from the PCM
                return []
            self._p = self.alerts.update(self.engine.tag(audio_embeds))
            if self._reader is not None:
                self.memory.add(audio_embeds)  # the window a confirming reading hears
                labels = self.alerts.to_verify(self._chunks * self._chunk_s)
                if labels:
                    heard = {w.key for w in self._reader.words(self._reader.hypothesis())}
                    self.verified += 1
                    for label in labels:
                        self.alerts.confirm(label, heard)
            return []
        self.memory.add(audio_embeds)
        if self.assist is not None and self.assist.gate is not None:
            self.assist.hear(self.engine.tag(audio_embeds))  # has speech ended? what sounded?
        if self.captions is not None:
            if self.captions.gate is not None:
                self.captions.gate.update(self.engine.tag(audio_embeds))
            return []
        ids = list(self._pending)
        self._make_room(len(ids))
        return ids

    @property
    def may_skip_encoder(self) -> bool:
        """Whether a chunk may come without its memory entry: only captions by agreement
        read the memory, and only at the chunks their readings begin at (no tagger alerts,
        no confirming reader, no assist reads each chunk's)."""
        return (
            self.captions is not None
            and self.alerts is None
            and self._reader is None
            and self.assist is None
        )

    def wants_embeds(self, since: float, now: float | None = None) -> bool:
        """Whether the next chunk (its audio complete at `since`) needs its memory entry.
        Behind real time the caption reader reads over longer hops (`WindowCaptions._hop`);
        the chunks between its readings then need no encoding: the window of the next one
        encoded holds their audio, and a stream's encoder (~60 % of its CPU) runs as often
        as it reads. The serve scheduler asks before it encodes."""
        if not (self.may_skip_encoder and self.engine.can_advance):
            return True
        return self.captions.needs_window(since, now)

    def set_hop(self, hop: int, k: int) -> None:
        """A busy server's worker reads this stream every `hop` chunks (1: its own schedule
        again), at offset k (`stagger`). A reading under way goes on as it began."""
        if self.captions is None:
            return
        every = max(self._every, hop)
        self.captions.config = dataclasses.replace(self.captions.config, every_chunks=every)
        self.stagger(k)

    def stagger(self, k: int) -> None:
        """The `k`th stream of a server's worker: with readings every N chunks, it reads at
        chunks offset by k % N, so that N streams' readings fall in N different rounds
        (aligned, one round in N carries every reading and runs late)."""
        if self.captions is not None:
            self.captions.offset = k % self.captions.config.every_chunks

    def decide(
        self, audio_embeds: np.ndarray, pcm: np.ndarray | None = None, ready: float | None = None
    ) -> Decision:
        """`ready`: time.monotonic() when the chunk's audio was complete; a caption stream's
        time bound (`decision.captions.budget_ms`) counts from it."""
        ids = self.prepare_decision(audio_embeds)
        self._ready = ready
        return self.conclude(self._run(ids)[-1] if ids else None, pcm)

    def force_respond(self) -> None:
        """The parity hook (export/parity.py with export/whisper_reference.py): make the last
        decision certain (p = 1), so the next `begin_response` generates whatever the model's
        p was."""
        self._p = 1.0

    def feeds(self, query: list[int]) -> dict[str, np.ndarray]:
        q = len(query)
        mask, pos = self.cache.inputs(q)
        return self.engine.step_feeds(
            np.asarray(query, np.int64)[None],
            np.ascontiguousarray(pos[:, -q:]),
            mask.copy(),
            self.memory.mask(q),
            self.cache,
            self.memory,
        )

    def absorb(self, query: list[int], logits: np.ndarray, presents) -> np.ndarray:
        q = len(query)
        self.cache.add(presents, np.asarray(query, np.int64).reshape(q, 1))
        self.calls += 1
        return logits

    def conclude(self, last: np.ndarray | None, pcm: np.ndarray | None = None) -> Decision:
        if self.alerts is not None:  # `last` is None: the tagger decided in prepare_decision
            if self.wants_pcm:
                if pcm is None:
                    raise ValueError("alerts by the AudioSet branch need each chunk's PCM")
                self._p = self.alerts.step(pcm)
            return Decision(self._p, self.alerts.ready)
        if self.captions is not None:  # `last` is None: no protocol call was made
            return self._caption_decision()
        self._pending = [self.silence]
        self._p = control_p(last, self.silence, self.respond_id)
        if self.assist is not None:
            made = self.assist.readings
            decision = self.assist.decide(self._p, self._decide_at)
            self.verified += self.assist.readings - made
            return decision
        # A calibrated per-label threshold may ask for more than the mode's: that check waits
        # for the response's first token (its tag), in begin_response.
        return Decision(self._p, self._p >= self._decide_at)

    def _caption_decision(self) -> Decision:
        ready, self._ready = self._ready, None  # set by decide; None from the batcher
        self._caption = self.captions.step(ready, fresh=self._fresh)[: self.max_tokens]
        return Decision(self.captions.confidence, bool(self._caption))

    def _feed(self, ids: list[int]) -> np.ndarray:
        return self._call(ids)  # this kind's graph embeds its own token ids

    def _next_token(self, logits: np.ndarray) -> int:
        """Greedy, except that a token completing an n-gram the response already holds
        ends the response instead (`no_repeat_ngram`; 0 turns the guard off)."""
        bias = self._body_bias if self._response else self._gen_bias
        token = int(np.argmax(logits + bias))
        r, n = self._response, self.no_repeat
        if n and len(r) >= n - 1 and token not in self.stops:
            gram = (*r[len(r) - n + 1 :], token)
            if any(tuple(r[i : i + n]) == gram for i in range(len(r) - n + 1)):
                return self.eos
        r.append(token)
        return token

    def _opens_right(self, first: int) -> bool:
        if self.opens_with is None:
            return True
        tag = self.tag_ids.get(first)
        if self.opens_with == "text":
            return tag is None
        return tag is not None and tag.startswith(f"<{self.opens_with}:")

    def begin_response(self, t: float) -> int | None:
        self.withheld = self.withheld_tag = None
        if self.alerts is not None:
            label = self.alerts.fire(t)
            if label is None:  # every ready label is inside its refractory time
                self.withheld = "refractory"
                return None
            by = self.alerts if self.wants_pcm else self.engine.spec.tagger
            self._alert = list(by.responses[label])
            return self._alert_ids[label]
        if self.captions is not None:
            return self._caption[0] if self._caption else None
        if self.assist is not None and self.assist.intent is not None:
            return self._begin_answer(t)  # assist by grammar: the request its reading parsed
        self._response = []
        self.heard = None
        first = self._next_token(self._call([self.respond_id])[-1])
        need = self._tag_threshold.get(first, self.threshold)
        last = self._last_tag.get(first)
        refractory = first in self.tag_ids and last is not None and t - last < self.refractory_s
        may = not refractory and self._opens_right(first)
        if may and (self._p < need or self._read_answers) and self._heard_enough(first, need):
            need = self._p  # confirmed by the words read
        # the decoder's answer (the grammar's fallback) after the grammar answered: the same
        # request, heard again in the window as it slides
        answered = self.assist is not None and t - self.assist.answered_at < self.refractory_s
        if not may or self._p < need or answered:
            self.cache.rollback(1)
            self.withheld_tag = self.tag_ids.get(first)
            self.withheld = (
                "refractory"
                if refractory
                else "not_an_answer"
                if not self._opens_right(first)
                else "answered"
                if answered
                else "below_threshold"
            )
            return None
        if first in self.tag_ids:
            self._last_tag[first] = t
        return first

    def _begin_answer(self, t: float) -> int:
        """The grammar's request opens a response with its intent tag; the answer is the
        grammar's, spelled with the bundle's tokenizer, or (history: what the stream heard)
        the decoder's, written after <respond> and the tag."""
        intent, self.assist.intent = self.assist.intent, None
        first = self.engine.spec.special[intent.tag]
        self._last_tag[first] = self.assist.answered_at = t
        self.heard = self.assist.heard  # the whole reading; `intent.text` is the request in it
        self._response = [first]  # no second tag (`_body_bias`)
        if intent.answer is None:
            self._call([self.respond_id])
            self._answer = None
        else:
            self._answer = self.engine.detokenizer.spell(" " + intent.answer)
        return first

    def _heard_enough(self, first: int, need: float) -> bool:
        """Below its tag's threshold, whether a reading of the window confirms the response:
        p(<respond>) met the tag's verify threshold and Whisper read one of its words. The
        reading is made only then, or at every tagged response with `read_answers`
        (`heard` keeps its words either way)."""
        v = self.verify.get(first)
        due = v is not None and v.threshold <= self._p < need
        if self._reader is None or not (due or (self._read_answers and first in self.tag_ids)):
            return False
        words = [w.key for w in self._reader.words(self._reader.hypothesis())]
        self.verified += 1
        self.heard = " ".join(words)
        return due and bool(set(words) & set(v.words))

    def continue_response(self, first: int):
        if self.alerts is not None:
            response, self._alert = self._alert, []
            yield first  # the label's tag
            yield from response  # and the caption the tagger's manifest gives it
            return
        if self._answer is not None:  # assist by grammar
            answer, self._answer = self._answer, None
            yield first
            yield from answer[: self.max_tokens - 1]
            return  # the protocol's cache never saw it: the next chunk follows <silence>
        if self.captions is None:
            yield from super().continue_response(first)
            return
        caption, self._caption = self._caption, []
        yield from caption  # the protocol's cache never saw it: the next chunk follows <silence>

    def finish(self) -> list[int]:
        """At the end of the stream: the caption words still waiting for agreement (the last
        window's hypothesis, then whatever it left unconfirmed)."""
        if self.captions is None:
            return []
        return self.captions.finish()[: self.max_tokens]
