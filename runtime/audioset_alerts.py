"""Alerts by the AudioSet branch (issue #30): a small head over YAMNet's embedding and scores
of the last 0.96 s (train/alert_head.py trains it), and a user's own alerts on raw AudioSet
classes (`listen --alert-class "Cat=0.4"`), with the tagger's rule: a threshold per label,
N chunks in a row (persistence), a refractory time per label.

The manifest declares the head as `audioset.head`: its file (plain arrays, read with numpy),
output labels, per-label threshold and caption, which labels alert by default, persistence
and refractory time. The engine owns the sessions and weights (`AudiosetEngine`, `AlertHead`);
each stream owns an `AudiosetAlerts` (YAMNet's audio history and the rule's counters).
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from soundflow.manifest import BundleError
from soundflow.runtime.audioset import AudiosetEngine
from soundflow.runtime.audioset_spec import (  # noqa: F401  (importable from here too)
    EMBEDDING_DIM,
    HEAD_ARRAYS,
    HEAD_FIX,
    HEAD_SECTION,
    NUM_CLASSES,
    HeadSpec,
    check_head_section,
)

W1_SCALE = "w1_scale"  # optional: w1 is int8 and this (hidden,) scales each column back
CLASS_THRESHOLD = 0.5  # --alert-class without "=p"
TOP_CLASSES = 3  # AudioSet classes an alert event names
FIX = HEAD_FIX


class AlertHead:
    """The head's weights, read back and checked against the manifest."""

    def __init__(self, spec: HeadSpec) -> None:
        if not spec.file.is_file():
            raise BundleError(f"{spec.file} is missing; {FIX}")
        try:
            with np.load(spec.file, allow_pickle=False) as z:
                arrays = {k: z[k] for k in HEAD_ARRAYS}
                if W1_SCALE in z.files:  # w1 stored as int8, one scale per hidden unit
                    arrays[W1_SCALE] = z[W1_SCALE]
        except (OSError, KeyError, ValueError) as e:
            raise BundleError(f"{spec.file}: not an alert head ({e!r}); {FIX}") from None
        d, h, n = spec.input_dim, spec.hidden, len(spec.labels)
        want = {"mean": (d,), "std": (d,), "w1": (d, h), "b1": (h,), "w2": (h, n), "b2": (n,)}
        for k, shape in want.items():
            if arrays[k].shape != shape:
                raise BundleError(
                    f"{spec.file}: {k} is {arrays[k].shape}, the manifest asks for {shape}; {FIX}"
                )
        quantized = arrays["w1"].dtype == np.int8
        if quantized != (W1_SCALE in arrays) or (quantized and arrays[W1_SCALE].shape != (h,)):
            raise BundleError(f"{spec.file}: an int8 w1 needs {W1_SCALE} ({h},); {FIX}")
        if tuple(str(x) for x in arrays["labels"]) != spec.labels:
            raise BundleError(f"{spec.file}: its labels differ from the manifest's; {FIX}")
        self.spec = spec
        # fp32 once at load (stored fp16, w1 int8, to keep the bundle small)
        self.arrays = {k: v.astype(np.float32) for k, v in arrays.items() if k != "labels"}
        if W1_SCALE in self.arrays:
            self.arrays["w1"] = self.arrays["w1"] * self.arrays.pop(W1_SCALE)

    def probs(self, features: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
        """One patch's features (1545,: embedding, then scores) and, for a head with
        context, the mean of the last `spec.context` patches' -> (labels,) probabilities."""
        x = features if context is None else np.concatenate([features, context])
        return mlp_probs(self.arrays, x[None])[0]


def mlp_probs(a: dict, x: np.ndarray) -> np.ndarray:
    """(n, input_dim) features -> (n, labels): standardise, ReLU hidden layer, sigmoid."""
    z = (np.asarray(x, np.float32) - a["mean"].astype(np.float32)) / a["std"].astype(np.float32)
    w1 = a["w1"].astype(np.float32)
    if W1_SCALE in a:  # int8 as stored (the recipe's calibration reads the file's arrays)
        w1 = w1 * np.asarray(a[W1_SCALE], np.float32)
    h = np.maximum(z @ w1 + a["b1"].astype(np.float32), 0.0)
    logits = h @ a["w2"].astype(np.float32) + a["b2"].astype(np.float32)
    return (1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))).astype(np.float32)


@dataclass(frozen=True)
class ClassAlert:
    """`--alert-class "Cat=0.4"`: alert on one AudioSet class's YAMNet score."""

    name: str  # the class map's display name
    column: int
    threshold: float
    label: str  # its alert tag's label: the name in [a-z0-9_]


def class_alert(text: str, classes: tuple[str, ...]) -> ClassAlert:
    """Parse "Name" or "Name=0.4" against YAMNet's class names (case-insensitive)."""
    name, _, p = text.rpartition("=") if "=" in text else (text, "", "")
    try:
        threshold = float(p) if p else CLASS_THRESHOLD
    except ValueError:
        raise ValueError(f"--alert-class {text!r}: the threshold after '=' is a number") from None
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--alert-class {text!r}: the threshold must lie in [0, 1]")
    index = {c.lower(): i for i, c in enumerate(classes)}
    i = index.get(name.strip().lower())
    if i is None:
        near = [c for c in classes if name.strip().lower() in c.lower()][:5]
        hint = f" (did you mean {', '.join(map(repr, near))}?)" if near else ""
        raise ValueError(
            f"--alert-class {name!r} is not an AudioSet class{hint}; "
            "`soundflow labels --audioset` lists them"
        )
    label = re.sub(r"[^a-z0-9]+", "_", classes[i].lower()).strip("_")
    return ClassAlert(classes[i], i, threshold, label)


# Per bundle engine, its AudioSet engine and head: kept here, not on the engine (not its
# attribute to set), and dropped with the engine.
_per_engine: weakref.WeakKeyDictionary[Any, tuple[AudiosetEngine, AlertHead | None]] = (
    weakref.WeakKeyDictionary()
)


def engine_for(engine: Any, spec: Any) -> tuple[AudiosetEngine, AlertHead | None]:
    """The AudioSet engine and head of a bundle's engine, made once per engine (the
    engine owns weights and sessions; streams share them)."""
    cached = _per_engine.get(engine)
    if cached is None:
        yam = AudiosetEngine(spec, threads=1)
        head = AlertHead(spec.head) if spec.head is not None else None
        cached = (yam, head)
        _per_engine[engine] = cached
    return cached


class AudiosetAlerts:
    """One stream's alert decisions from the AudioSet branch: the head's labels (all its
    defaults, or those `only` names) and any class alerts, each firing once its probability
    has met its threshold for `persistence` chunks in a row and not again within
    `refractory_s` of its last alert. `fired` describes the last alert: (label, probability,
    the top AudioSet classes, onset time)."""

    def __init__(self, yam: AudiosetEngine, head: AlertHead | None, only=None, classes=(),
                 refractory_s: float | None = None, threshold: float | None = None,
                 chunk_s: float = 0.4):  # fmt: skip
        self.yam, self.head = yam, head
        hs = head.spec if head is not None else None
        known = hs.labels if hs is not None else ()
        if only:
            unknown = [lab for lab in only if lab not in known]
            if unknown:
                raise ValueError(
                    f"--only {','.join(unknown)}: not among this bundle's alert labels "
                    f"{list(known)} (`soundflow labels` lists them)"
                )
            self.head_labels = [lab for lab in known if lab in only]
        else:  # a class alert adds to the defaults
            self.head_labels = list(hs.defaults) if hs is not None else []
        self.columns = np.array([known.index(lab) for lab in self.head_labels], np.int64)
        self.classes = list(classes)
        self.labels = self.head_labels + [c.label for c in self.classes]
        th = [hs.thresholds[lab] for lab in self.head_labels] + [c.threshold for c in classes]
        if threshold is not None:  # an explicit --threshold replaces every calibrated one
            th = [threshold] * len(th)
        self.thresholds = np.array(th, np.float32)
        self.captions = {lab: hs.captions[lab] for lab in self.head_labels}
        self.captions.update({c.label: f"heard: {c.name.lower()}" for c in self.classes})
        self.persistence = hs.persistence if hs is not None else 1
        self.refractory_s = (
            refractory_s if refractory_s is not None else hs.refractory_s if hs else 8.0
        )
        self.verify: dict = {}  # the tagger rule's interface: nothing to confirm by words
        self.chunk_s = chunk_s
        self.tag_ids: dict[str, int] = {}  # label -> its response's first token (spell())
        self.responses: dict[str, tuple[int, ...]] = {}  # ... and the caption's after it
        self.state = yam.new_state()
        self.reset()

    def reset(self) -> None:
        self.state.reset()
        self.run = np.zeros(len(self.labels), np.int64)
        self.p = np.zeros(len(self.labels), np.float32)
        self.last: dict[str, float] = {}
        self.scores = np.zeros(NUM_CLASSES, np.float32)
        # the last patches' features, for a head with context (a ring, `_seen` filled)
        k = self.head.spec.context if self.head is not None else 1
        self._history = np.zeros((k, EMBEDDING_DIM + NUM_CLASSES), np.float32)
        self._seen = 0
        self.fired: tuple[str, float, tuple[str, ...], float] | None = None

    def step(self, pcm: np.ndarray) -> float:
        """One chunk (samples,) of 16 kHz PCM; returns the highest alert probability."""
        out = self.yam.step(self.state, pcm)
        return self.observe(out.embedding, out.scores)

    def observe(self, embedding: np.ndarray, scores: np.ndarray) -> float:
        """The rule on one chunk's YAMNet outputs (`step` without running YAMNet: a
        benchmark replays cached outputs through it)."""
        self.scores = scores
        parts = []
        if len(self.columns):
            x = np.concatenate([embedding, scores]).astype(np.float32)
            context = None
            if len(self._history) > 1:  # the mean of the last K patches, this one included
                self._history[self._seen % len(self._history)] = x
                self._seen += 1
                context = self._history[: min(self._seen, len(self._history))].mean(0)
            parts.append(self.head.probs(x, context)[self.columns])
        if self.classes:
            parts.append(scores[[c.column for c in self.classes]])
        self.p = np.concatenate(parts).astype(np.float32) if parts else self.p
        self.run = np.where(self.p >= self.thresholds, self.run + 1, 0)
        return float(self.p.max()) if len(self.p) else 0.0

    @property
    def ready(self) -> bool:
        return bool((self.run >= self.persistence).any())

    def fire(self, t: float) -> str | None:
        """The label to alert at stream time t (the most probable of those ready and out of
        refractory), or None; it starts its refractory time and sets `fired`."""
        best = None
        for i in np.flatnonzero(self.run >= self.persistence):
            if t - self.last.get(self.labels[i], -np.inf) < self.refractory_s:
                continue
            if best is None or self.p[i] > self.p[best]:
                best = i
        if best is None:
            return None
        label = self.labels[best]
        self.last[label] = t
        top = np.argsort(self.scores)[::-1][:TOP_CLASSES]
        names = tuple(self.yam.classes[j] for j in top)
        onset = max(0.0, t - float(self.run[best]) * self.chunk_s)
        self.fired = (label, float(self.p[best]), names, round(onset, 3))
        return label

    def spell(self, special: dict[str, int], detokenizer, tagger=None) -> None:
        """Each label's response as token ids: its `<alert:label>` token where the bundle's
        vocabulary has one (else the tag spelled in plain pieces, which decode to the same
        text), then the tagger's caption ids where it has the label, else the caption spelled."""
        from soundflow import protocol

        for label in self.labels:
            tag = protocol.alert_tag(label)
            caption = " " + self.captions[label]
            if tag in special:
                self.tag_ids[label] = special[tag]
                known = tagger.responses.get(label) if tagger is not None else None
                ids = tuple(known) if known else tuple(detokenizer.spell(caption))
            else:
                spelled = detokenizer.spell(tag + caption)
                self.tag_ids[label], ids = spelled[0], tuple(spelled[1:])
            self.responses[label] = ids


def decides(spec: Any, options: Any) -> bool:
    """Whether alert mode decides by the AudioSet branch: asked for (--alerts audioset, an
    --alert-class), or the bundle's head says so and no flag asks for another decider."""
    if options.alerts.decider == "audioset" or options.alerts.classes:
        return True
    head = spec.audioset.head if spec.audioset is not None else None
    return options.alerts.decider is None and head is not None and head.decides


def stream_rule(engine: Any, options: Any, chunk_s: float) -> AudiosetAlerts:
    """A stream's AudiosetAlerts for a bundle's engine and the run-time options."""
    spec = engine.spec
    if spec.audioset is None:
        raise BundleError(
            "alerts by AudioSet: this bundle has no audioset section; add YAMNet with "
            "`python -m soundflow.export.yamnet --bundle DIR`"
        )
    yam, head = engine_for(engine, spec.audioset)
    if head is None and not options.alerts.classes:
        raise BundleError(
            f"--alerts audioset: {spec.path} has no audioset.head; train one with "
            "`python -m soundflow.train.alert_head`, or name classes with --alert-class"
        )
    try:
        classes = tuple(class_alert(c, yam.classes) for c in options.alerts.classes)
        d = options.decision
        rule = AudiosetAlerts(
            yam, head, options.alerts.only, classes, d.refractory_s, d.threshold, chunk_s
        )
    except ValueError as e:
        raise BundleError(str(e)) from None
    rule.spell(spec.special, engine.detokenizer, spec.tagger)
    return rule
