"""Type and range checks of every manifest field the runtime uses, before any is used.

A hostile or hand-edited manifest ends in one `BundleError` naming the field and the fix,
never in a traceback or a huge allocation (the state memory is estimated and bounded).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from soundflow.audio import SAMPLE_RATE
from soundflow.manifest import BundleError, confined
from soundflow.runtime.options import ASSIST, CAPTIONS

FIX = "re-run `soundflow export CHECKPOINT --out DIR`"
DTYPES = {
    "float32": 4,
    "float16": 2,
    "float64": 8,
    "int64": 8,
    "int32": 4,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}
KINDS = ("decoder-only", "whisper-cross")
MAX_DIM = 1 << 31
# runtime/fallback.py's FallbackOptions: dB levels and seconds
FALLBACK_RANGES = (
    ("margin_db", 0.0, 120.0),
    ("min_level_dbfs", -200.0, 0.0),
    ("floor_rise_db_per_s", 0.0, 1000.0),
    ("min_utterance_s", 0.0, 3600.0),
    ("end_silence_s", 0.0, 3600.0),
    ("max_utterance_s", 0.0, 86400.0),
)
_NOTHING = object()


def memory_limit() -> int:
    """Bytes a bundle's carried state may need: this machine's physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


class Checker:
    """Reads a manifest's fields, each failure a BundleError naming the field and the fix."""

    def __init__(self, manifest: dict[str, Any], mpath: Path) -> None:
        self.m = manifest
        self.mpath = mpath

    def fail(self, field: str, problem: str, fix: str = FIX) -> BundleError:
        return BundleError(f"{self.mpath}: `{field}` {problem}; {fix}")

    def get(self, field: str, required: bool = True) -> Any:
        cur: Any = self.m
        for key in field.split("."):
            if not isinstance(cur, dict):
                raise self.fail(field.rsplit(".", 1)[0], f"must be an object, got {_kind(cur)}")
            if key not in cur:
                if required:
                    raise self.fail(field, "is missing", f"{FIX} with this soundflow")
                return _NOTHING
            cur = cur[key]
        return cur

    def obj(self, field: str, required: bool = True) -> dict | None:
        v = self.get(field, required)
        if v is _NOTHING:
            return None
        if not isinstance(v, dict):
            raise self.fail(field, f"must be an object, got {_kind(v)}")
        return v

    def int(self, field: str, low: int, high: int, required: bool = True) -> int | None:
        v = self.get(field, required)
        if v is _NOTHING:
            return None
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.fail(field, f"must be a whole number, got {_what(v)}")
        if not low <= v <= high:
            raise self.fail(field, f"is {v}, outside [{low}, {high}]")
        return v

    def num(self, field: str, low: float, high: float, required: bool = True) -> float | None:
        v = self.get(field, required)
        if v is _NOTHING:
            return None
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
            raise self.fail(field, f"must be a finite number, got {_what(v)}")
        if not low <= v <= high:
            raise self.fail(field, f"is {v}, outside [{low}, {high}]")
        return float(v)

    def str(self, field: str, required: bool = True) -> str | None:
        v = self.get(field, required)
        if v is _NOTHING:
            return None
        if not isinstance(v, str) or not v:
            raise self.fail(field, f"must be a non-empty string, got {_what(v)}")
        return v

    def ids(self, field: str, vocab: int, value: Any, empty: bool = False) -> None:
        if not isinstance(value, list) or (not value and not empty):
            raise self.fail(field, f"must be a list of token ids, got {_kind(value)}")
        for i in value:
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < vocab:
                raise self.fail(field, f"holds {_short(i)}, not a token id in [0, {vocab})")

    def file(self, field: str, value: Any) -> None:
        """A path field: inside the bundle and listed (so hashed) in `files`."""
        confined(self.mpath.parent, value, f"{self.mpath}: `{field}`")
        files = self.m.get("files", {})
        if value not in files:
            raise self.fail(field, f"names {value!r}, which `files` does not list")

    def tensors(self, field: str, state: bool = False) -> list[dict]:
        v = self.get(field)
        if not isinstance(v, list) or (not v and not state):
            raise self.fail(field, f"must be a list of tensors, got {_kind(v)}")
        names: set[str] = set()
        for k, t in enumerate(v):
            where = f"{field}[{k}]"
            if not isinstance(t, dict):
                raise self.fail(where, f"must be an object, got {_kind(t)}")
            keys = ("input", "output") if state else ("name",)
            for key in keys:
                name = t.get(key)
                if not isinstance(name, str) or not name:
                    raise self.fail(f"{where}.{key}", "must be a tensor name")
                if not state and name in names:
                    raise self.fail(f"{where}.{key}", f"repeats the name {name!r}")
                names.add(name)
            if t.get("dtype") not in DTYPES:
                raise self.fail(
                    f"{where}.dtype", f"is {_short(t.get('dtype'))}, not one of {sorted(DTYPES)}"
                )
            shape = t.get("shape")
            if not isinstance(shape, list) or len(shape) > 8:
                raise self.fail(f"{where}.shape", "must be a list of at most 8 dimensions")
            for d in shape:
                ok_int = isinstance(d, int) and not isinstance(d, bool) and 0 <= d < MAX_DIM
                if not ok_int and not (isinstance(d, str) and d):
                    raise self.fail(
                        f"{where}.shape",
                        f"has dimension {_short(d)}: use a size >= 0 or a symbolic name",
                    )
        return v


def _kind(v: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
    }.get(type(v), type(v).__name__)


def _what(v: Any) -> str:
    return "null" if v is None else f"{_kind(v)} {_short(v)}"


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _fixed_elements(shape: list, symbolic: dict[str, int]) -> int:
    n = 1
    for d in shape:
        n *= d if isinstance(d, int) else symbolic.get(d, 1)
    return n


def validate_manifest(manifest: dict[str, Any], mpath: Path | str) -> None:
    """Check every field the runtime reads; raise BundleError at the first bad one."""
    c = Checker(manifest, Path(mpath))
    m = manifest
    # audio
    c.obj("audio")
    rate = c.int("audio.sample_rate", 1, 1_000_000)
    if rate != SAMPLE_RATE:
        raise c.fail("audio.sample_rate", f"is {rate}; the runtime feeds {SAMPLE_RATE} Hz audio")
    chunk_ms = c.int("audio.chunk_ms", 10, 10_000)
    chunk_samples = c.int("audio.chunk_samples", 1, SAMPLE_RATE * 10)
    if chunk_samples * 1000 != SAMPLE_RATE * chunk_ms:
        raise c.fail("audio.chunk_samples", f"is {chunk_samples}, not chunk_ms at sample_rate")
    # decoder kind first: it decides which fields exist
    c.obj("decoder")
    kind = c.str("decoder.kind", required=False) or "decoder-only"
    if kind not in KINDS:
        raise c.fail("decoder.kind", f"is {kind!r}, unknown to this soundflow", "upgrade soundflow")
    # encoder
    c.obj("encoder")
    c.file("encoder.file", c.str("encoder.file"))
    c.int("encoder.embeds_per_chunk", 1, 1 << 16)
    enc_in = c.tensors("encoder.inputs")
    enc_out = c.tensors("encoder.outputs")
    state = c.tensors("encoder.state", state=True)
    in_names = {t["name"] for t in enc_in}
    out_names = {t["name"] for t in enc_out}
    for k, s in enumerate(state):
        if s["input"] not in in_names:
            raise c.fail(f"encoder.state[{k}].input", f"{s['input']!r} is not an encoder input")
        if s["output"] not in out_names:
            raise c.fail(f"encoder.state[{k}].output", f"{s['output']!r} is not an encoder output")
    history = c.int("encoder.history_samples", 0, SAMPLE_RATE * 3600, required=False) or 0
    # decoder
    c.file("decoder.file", c.str("decoder.file"))
    layers = c.int("decoder.num_layers", 1, 512)
    c.int("decoder.num_heads", 1, 4096, required=False)
    kv_heads = c.int("decoder.num_kv_heads", 1, 4096)
    head_dim = c.int("decoder.head_dim", 1, 8192)
    hidden = c.int("decoder.hidden_size", 1, 1 << 17)
    vocab = c.int("decoder.vocab_size", 2, 1 << 24)
    capacity = c.int("decoder.cache_capacity", 4, 1 << 31)
    c.num("decoder.mask_value", -1e38, 0.0, required=False)
    dec_in = c.tensors("decoder.inputs")
    dec_out = c.tensors("decoder.outputs")
    memory_frames = 0
    if kind == "decoder-only":
        c.obj("embeddings")
        c.file("embeddings.file", c.str("embeddings.file"))
        # The engine binds inputs_embeds, attention_mask, position_ids, then a key and a
        # value per layer; the outputs are logits, then the same per layer.
        for field, have, want in (
            ("decoder.inputs", len(dec_in), 3 + 2 * layers),
            ("decoder.outputs", len(dec_out), 1 + 2 * layers),
        ):
            if have != want:
                raise c.fail(field, f"has {have} tensors, {layers} layers need {want}")
    else:
        memory_frames = c.int("decoder.memory_frames", 1, 1 << 22) or 0
        c.int("decoder.max_positions", 1, 1 << 22)
    # tokens
    c.obj("tokenizer")
    c.file("tokenizer.file", c.str("tokenizer.file"))
    special = c.obj("special_tokens")
    for name, i in special.items():
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < vocab:
            raise c.fail(f"special_tokens.{name}", f"is {_short(i)}, not a token id < {vocab}")
    control_ids = c.obj("control_ids")
    for name in ("silence", "respond", "eos", "bos"):
        c.int(f"control_ids.{name}", 0, vocab - 1)
    for name in control_ids:
        c.int(f"control_ids.{name}", 0, vocab - 1)
    tasks = c.obj("tasks")
    if not tasks:
        raise c.fail("tasks", "lists no task prompts")
    control = m.get("control")
    fallback = isinstance(control, dict) and control.get("mode") == "fallback"
    for name, task in tasks.items():
        if not isinstance(task, dict):
            raise c.fail(f"tasks.{name}", f"must be an object, got {_kind(task)}")
        c.ids(f"tasks.{name}.prompt_ids", vocab, task.get("prompt_ids"))
        if len(task["prompt_ids"]) >= capacity:
            raise c.fail(f"tasks.{name}.prompt_ids", f"is too long for a {capacity}-slot cache")
        if fallback:
            c.ids(f"tasks.{name}.respond_ids", vocab, task.get("respond_ids"))
    # decision defaults
    c.obj("decision")
    c.num("decision.threshold", 0.0, 1.0)
    c.num("decision.refractory_s", 0.0, 1e9)
    c.int("decision.max_response_tokens", 1, 1 << 16)
    per_mode = c.obj("decision.thresholds", required=False)  # calibrated, per mode and tag
    for mode, tags in (per_mode or {}).items():
        if not isinstance(tags, dict):
            raise c.fail(f"decision.thresholds.{mode}", f"must be an object, got {_kind(tags)}")
        for tag in tags:
            c.num(f"decision.thresholds.{mode}.{tag}", 0.0, 1.0)
    verify = c.obj("decision.verify", required=False)  # per mode and tag, confirmed by words
    for mode, tags in (verify or {}).items():
        if not isinstance(tags, dict):
            raise c.fail(f"decision.verify.{mode}", f"must be an object, got {_kind(tags)}")
        if "captions" not in c.get("decision"):
            raise c.fail("decision.verify", "needs decision.captions (the reading's prompt)")
        for tag in tags:
            c.num(f"decision.verify.{mode}.{tag}.threshold", 0.0, 1.0)
            words = c.get(f"decision.verify.{mode}.{tag}.words")
            if not (isinstance(words, list) and words and all(isinstance(w, str) for w in words)):
                raise c.fail(
                    f"decision.verify.{mode}.{tag}.words", "must be a non-empty list of words"
                )
    assist = c.obj("decision.assist", required=False)  # what answers assist (kinds/whisper.py)
    if assist is not None:
        method = c.str("decision.assist.method")
        if method not in ASSIST:
            raise c.fail("decision.assist.method", f"is {method!r}, not one of {ASSIST}")
        also = assist.get("fallback", False)  # the decoder answers what the grammar does not
        if not isinstance(also, bool):
            raise c.fail("decision.assist.fallback", f"must be true or false, got {_kind(also)}")
        if method == "grammar" and "captions" not in c.get("decision"):
            raise c.fail("decision.assist", "needs decision.captions (the reading's prompt)")
        c.num("decision.assist.min_avg_logprob", -1e9, 0.0, required=False)
    c.int("decision.no_repeat_ngram", 0, 64, required=False)  # generation guards (kinds/whisper.py)
    for mode in c.obj("decision.opens_with", required=False) or {}:
        kind = c.str(f"decision.opens_with.{mode}")
        if kind not in ("alert", "intent", "text"):
            raise c.fail(f"decision.opens_with.{mode}", f"is {kind!r}, not alert, intent or text")
    captions = c.obj("decision.captions", required=False)  # runtime/captions.py
    if captions is not None:
        method = c.str("decision.captions.method")
        if method not in CAPTIONS:
            raise c.fail("decision.captions.method", f"is {method!r}, not one of {CAPTIONS}")
        c.int("decision.captions.every_chunks", 1, 1000, required=False)
        c.int("decision.captions.text_vocab", 1, vocab)
        c.ids("decision.captions.prompt_ids", vocab, captions.get("prompt_ids"))
        c.num("decision.captions.min_avg_logprob", -1e9, 0.0, required=False)
        c.num("decision.captions.abort_logprob", -1e9, 0.0, required=False)
        c.int("decision.captions.calls_per_chunk", 1, 1000, required=False)
        c.int("decision.captions.max_hop_chunks", 1, 1000, required=False)
        c.num("decision.captions.budget_ms", 1.0, 60_000.0, required=False)
        c.int("decision.captions.max_tokens", 1, 1 << 16, required=False)
        c.int("decision.captions.no_speech_id", 0, vocab - 1, required=False)
        c.num("decision.captions.no_speech_skip", 0.0, 1.0, required=False)
        # the <eos> rule (runtime/captions.py): checked with the rest, not first when a
        # stream opens
        c.num("decision.captions.eos_penalty", 0.0, 1e6, required=False)
        c.num("decision.captions.eos_words_per_s", 0.0, 1e6, required=False)
        for name in ("eos_min_logprob", "edge_min_logprob"):  # null: no floor
            if captions.get(name) is not None:
                c.num(f"decision.captions.{name}", -1e9, 0.0)
    # optional sections
    control = c.obj("control", required=False)
    if control is not None:
        mode = c.str("control.mode", required=False)
        if mode is not None and mode not in ("native", "fallback"):
            raise c.fail(
                "control.mode", f"is {mode!r}, unknown to this soundflow", "upgrade soundflow"
            )
        if control.get("stop_ids") is not None:
            c.ids("control.stop_ids", vocab, control["stop_ids"])
        if c.obj("control.fallback", required=False):
            for key, low, high in FALLBACK_RANGES:
                c.num(f"control.fallback.{key}", low, high, required=False)
    if fallback:
        c.obj("prompt_template")
        c.ids("prompt_template.resume_ids", vocab, c.get("prompt_template.resume_ids"))
    variants = c.obj("variants", required=False)
    for name, v in (variants or {}).items():
        if not isinstance(v, dict):
            raise c.fail(f"variants.{name}", f"must be an object, got {_kind(v)}")
        for part in ("encoder", "decoder"):
            c.file(f"variants.{name}.{part}", c.str(f"variants.{name}.{part}"))
    tagger = c.obj("tagger", required=False)  # runtime/tagger.py
    if tagger is not None:
        if m["decoder"].get("kind") != "whisper-cross":
            raise c.fail("tagger", "is only read for a whisper-cross decoder")
        c.file("tagger.file", c.str("tagger.file"))
        c.tensors("tagger.inputs")
        c.tensors("tagger.outputs")
        c.str("tagger.source")
        c.int("tagger.frames", 1, memory_frames or 1 << 16)
        c.int("tagger.patience", 1, 1000, required=False)
        labels = c.get("tagger.labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise c.fail("tagger.labels", f"must be a list of names, got {_short(labels)}")
        if c.obj("tagger.speech", required=False) is not None:  # the speech gate
            if c.str("tagger.speech.label") not in labels:
                raise c.fail("tagger.speech.label", "is not among tagger.labels")
            c.num("tagger.speech.threshold", 0.0, 1.0)
            c.int("tagger.speech.window_chunks", 1, 1000)
        for label in c.obj("tagger.alerts"):
            c.num(f"tagger.alerts.{label}.threshold", 0.0, 1.0)
            c.ids(
                f"tagger.alerts.{label}.response_ids",
                vocab,
                c.get(f"tagger.alerts.{label}.response_ids"),
            )
        verify = c.obj("tagger.verify", required=False)  # labels confirmed by words
        for label in verify or {}:
            if label not in c.get("tagger.alerts"):
                raise c.fail(f"tagger.verify.{label}", "is not one of tagger.alerts")
            if captions is None:
                raise c.fail("tagger.verify", "needs decision.captions (the reading's prompt)")
            c.num(f"tagger.verify.{label}.threshold", 0.0, 1.0)
            words = c.get(f"tagger.verify.{label}.words")
            if not (isinstance(words, list) and words and all(isinstance(w, str) for w in words)):
                raise c.fail(f"tagger.verify.{label}.words", "must be a non-empty list of words")
    c.obj("model", required=False)
    # memory: what the runtime allocates for one stream, before it allocates any of it
    need = {
        "decoder.cache_capacity": 2 * layers * kv_heads * capacity * head_dim * 4,
        "encoder.state": sum(
            _fixed_elements(s["shape"], {"history_len": history}) * DTYPES[s["dtype"]]
            for s in state
        ),
    }
    if kind == "decoder-only":
        need["decoder.vocab_size"] = vocab * hidden * 4
    else:
        need["decoder.memory_frames"] = 2 * layers * kv_heads * memory_frames * head_dim * 4
    limit = memory_limit()
    total = sum(need.values())
    if total > limit:
        worst = max(need, key=need.get)
        raise c.fail(
            worst,
            f"makes one stream need {total / 2**30:.1f} GiB of state (this machine has "
            f"{limit / 2**30:.1f} GiB)",
            "lower it and re-export, or run on a machine with more memory",
        )
