"""The alert tagger (runtime/tagger.py runs it): a small head over a bundle's own encoder
frames, trained and calibrated on built streams, the encoder and decoder left as they are.

Whisper's encoder features name sounds well (Whisper-AT, arXiv 2307.03183, reads audio
events off a frozen Whisper with a light head), while the decoder's one <respond> step had to
learn 13 alert labels from a few hundred events. Features are the runtime's own: the encoder
graph of the bundle, run on each chunk's window as a stream would run it, cached per stream.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import soundfile as sf
import torch
from torch import nn

from soundflow import audio
from soundflow.train.evaluate import ALERT_WINDOW_S

SOURCE = "present.0.encoder.value"  # a linear map of the encoder's output, per frame
NOT_SOUNDS = ("Speech",)  # event categories that are not a sound to name (unless an alert)
SPEECH = "speech"  # the speech gate's output: the last label of a head that has one


@dataclass(frozen=True)
class TaggerConfig:
    """The head's dimensions and labels, saved with its weights."""

    labels: tuple[str, ...]  # output order: the alert labels first, then auxiliary sounds
    alerts: tuple[str, ...]  # the labels it may raise an alert for
    frames: int = 40  # the newest 0.8 s of the window (chunk + the one before)
    width: int = 384  # heads * head_dim of the source output
    hidden: int = 256
    dropout: float = 0.2
    source: str = SOURCE
    # a speech gate (transcribe mode reads a window only where it heard speech): its own
    # small branch, trained after the sound head and apart from it, output last as SPEECH
    speech: bool = False
    speech_hidden: int = 64

    @property
    def sounds(self) -> tuple[str, ...]:
        """The sound head's labels (every label but the speech gate's)."""
        return self.labels[:-1] if self.speech else self.labels


class TaggerHead(nn.Module):
    """(batch, frames, width) -> (batch, labels) probabilities: per-frame projection, then
    mean and max over the frames (an onset shows in the max, a steady sound in the mean)."""

    def __init__(self, config: TaggerConfig) -> None:
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(config.width)
        self.proj = nn.Linear(config.width, config.hidden)
        self.drop = nn.Dropout(config.dropout)
        self.out = nn.Linear(2 * config.hidden, len(config.sounds))
        self.speech = None
        if config.speech:  # the sound head trains as it would without the gate (same draws)
            rng = torch.get_rng_state()
            self.speech = nn.Sequential(
                nn.LayerNorm(config.width), nn.Linear(config.width, config.speech_hidden)
            )
            self.speech_out = nn.Linear(2 * config.speech_hidden, 1)
            torch.set_rng_state(rng)

    def sound_logits(self, frames: torch.Tensor) -> torch.Tensor:
        h = nn.functional.gelu(self.proj(self.norm(frames)))
        return self.out(self.drop(torch.cat([h.mean(1), h.amax(1)], -1)))

    def speech_logits(self, frames: torch.Tensor) -> torch.Tensor:
        h = nn.functional.gelu(self.speech(frames))
        return self.speech_out(torch.cat([h.mean(1), h.amax(1)], -1))

    def logits(self, frames: torch.Tensor) -> torch.Tensor:
        out = self.sound_logits(frames)
        return out if self.speech is None else torch.cat([out, self.speech_logits(frames)], -1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(frames))


def label_sets(records: list[dict]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(alert labels, other sound labels) over the streams' events, sorted."""
    alerts, sounds = set(), set()
    for rec in records:
        for ev in rec["events"]:
            if ev.get("alert"):
                alerts.add(ev["label"])
            elif ev.get("category") not in NOT_SOUNDS:
                sounds.add(ev["label"])
    return tuple(sorted(alerts)), tuple(sorted(sounds - alerts))


def chunk_targets(record: dict, chunks: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """(len(chunks), labels) 0/1: a label is on in a chunk whose head window (the newest
    0.8 s up to the chunk's end) overlaps its event by more than 0.1 s."""
    chunk_s = audio.CHUNK_MS / 1000
    end = (np.asarray(chunks) + 1) * chunk_s
    y = np.zeros((len(end), len(labels)), np.float32)
    index = {lab: i for i, lab in enumerate(labels)}
    for ev in record["events"]:
        i = index.get(ev["label"])
        if i is not None and (ev.get("alert") or ev.get("category") not in NOT_SOUNDS):
            y[(end > ev["start"] + 0.1) & (end - 2 * chunk_s < ev["end"]), i] = 1.0
    return y


SPEECH_OVERLAP_S = 0.05  # of a word inside a chunk's head window, for the speech target


def speech_targets(record: dict, chunks: np.ndarray) -> np.ndarray:
    """(len(chunks),) 0/1: on where the chunk's head window (the newest 0.8 s up to its end)
    holds part of a spoken word, any speaker's (the gate must open for every caption)."""
    chunk_s = audio.CHUNK_MS / 1000
    end = (np.asarray(chunks) + 1) * chunk_s
    y = np.zeros(len(end), np.float32)
    spans = [(w["start"], w["end"]) for w in record["words"]]
    spans += [(e["start"], e["end"]) for e in record["events"] if e.get("category") == "Speech"]
    for a, b in spans:
        overlap = np.minimum(end, b) - np.maximum(end - 2 * chunk_s, a)
        y[overlap > SPEECH_OVERLAP_S] = 1.0
    return y


def chosen_chunks(record: dict, n: int, every: int) -> np.ndarray:
    """Every `every`-th chunk, and every chunk near a sound event (where the labels are)."""
    keep = np.zeros(n, bool)
    keep[::every] = True
    chunk_s = audio.CHUNK_MS / 1000
    for ev in record["events"]:
        if ev.get("alert") or ev.get("category") not in NOT_SOUNDS:
            a, b = int((ev["start"] - 0.8) / chunk_s), int((ev["end"] + 0.8) / chunk_s) + 1
            keep[max(a, 0) : b] = True
    return np.flatnonzero(keep)


def stream_features(engine, samples: np.ndarray, chunks: np.ndarray, config: TaggerConfig):
    """(len(chunks), frames, width) float16: the tagger's input after each chosen chunk, the
    encoder run on that chunk's window as a stream runs it (its PCM history is its state)."""
    from soundflow.runtime.tagger import newest_frames, source_index

    cs = engine.spec.chunk_samples
    history = int(engine.spec.manifest["encoder"].get("history_samples", 0))
    name = engine.spec.encoder_state[0].input
    where = source_index(config.source, engine.spec.layers)
    out = np.zeros((len(chunks), config.frames, config.width), np.float16)
    for j, c in enumerate(chunks):
        chunk = np.ascontiguousarray(samples[c * cs : (c + 1) * cs][None])
        state = {name: np.ascontiguousarray(samples[max(0, c * cs - history) : c * cs][None])}
        entry, _ = engine.encode(chunk, state)
        out[j] = newest_frames(entry, *where, config.frames)[0]
    return out


def load_stream(data: Path, record: dict) -> np.ndarray:
    x, sr = sf.read(Path(data) / record["audio"], dtype="float32")
    if sr != audio.SAMPLE_RATE or x.ndim != 1:
        raise ValueError(f"{record['audio']}: expected mono {audio.SAMPLE_RATE} Hz, got {sr} Hz")
    return x


def cached_features(engine, data: Path, cache: Path, config: TaggerConfig, every: int, log=print):
    """[(record, chunks, features)] for every stream of a built split, computed once per
    stream into `cache` (one .npz each; a rerun reads them, an interrupted one resumes)."""
    out = []
    metas = sorted((Path(data) / "meta").glob("*.json"))
    cache.mkdir(parents=True, exist_ok=True)
    for k, meta in enumerate(metas):
        record = json.loads(meta.read_text())
        f = cache / f"{meta.stem}.npz"
        if f.exists():
            z = np.load(f)
            out.append((record, z["chunks"], z["features"]))
            continue
        x = load_stream(data, record)
        chunks = chosen_chunks(record, len(x) // engine.spec.chunk_samples, every)
        feats = stream_features(engine, x, chunks, config)
        tmp = cache / f"{meta.stem}.tmp.npz"
        np.savez(tmp, chunks=chunks, features=feats)
        tmp.replace(f)
        log(f"  features {data.name}/{meta.stem}: {len(chunks)} chunks ({k + 1}/{len(metas)})")
        out.append((record, chunks, feats))
    return out


# Benign clips from whole packages (`soundflow tagger --negatives PKG`): a file whose name
# says it may be worth an alert is left out rather than taught as benign.
NEGATIVE_SKIP = (
    "alarm", "bang", "bell", "bomb", "break", "crash", "explo", "fire", "glass", "gun",
    "help", "horn", "raze", "ring", "scream", "shot", "siren",
)  # fmt: skip
AUDIO_SUFFIXES = (".wav", ".ogg", ".flac", ".oga")
CLIP_MAX_S = 20.0


def package_files(packages: list[str]) -> list[Path]:
    """The audio files of installed Debian packages, minus names in NEGATIVE_SKIP."""
    import subprocess

    out = []
    for pkg in packages:
        r = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise ValueError(f"package {pkg} is not installed: apt-get install {pkg}")
        for line in r.stdout.splitlines():
            p = Path(line)
            name = p.name.lower()
            if name.endswith(AUDIO_SUFFIXES) and not any(w in name for w in NEGATIVE_SKIP):
                if p.is_file():
                    out.append(p)
    return sorted(set(out))


def clip_features(engine, files: list[Path], config: TaggerConfig, seed: int = 0):
    """(n, frames, width) features of every chunk that holds part of a benign clip, each
    clip (its first CLIP_MAX_S) at a random level after 1-2 s of quiet room noise."""
    from soundflow.train.heldout import read_16k

    rng = np.random.default_rng(seed)
    cs = engine.spec.chunk_samples
    out = []
    for f in files:
        try:
            x = read_16k(f)[: int(CLIP_MAX_S * audio.SAMPLE_RATE)]
        except Exception:  # noqa: BLE001 - an unreadable file is skipped, not fatal
            continue
        peak = float(np.abs(x).max()) if len(x) else 0.0
        if peak < 1e-4:
            continue
        x = x / peak * 10 ** (rng.uniform(-26, -3) / 20)
        lead = int(rng.uniform(1.0, 2.0) * audio.SAMPLE_RATE)
        noise = rng.standard_normal(lead + len(x) + cs).astype(np.float32) * 10 ** (-60 / 20)
        noise[lead : lead + len(x)] += x
        chunks = np.arange(lead // cs, (lead + len(x)) // cs + 1)
        out.append(stream_features(engine, noise, chunks, config))
    if not out:
        return np.zeros((0, config.frames, config.width), np.float16)
    return np.concatenate(out)


def fit(
    config: TaggerConfig,
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
    seed: int,
    log=print,
    speech: tuple[np.ndarray, np.ndarray] | None = None,
):
    """Train a head on (n, frames, width) features and (n, sounds) targets: AdamW, a cosine
    schedule, batches drawn with replacement, positives weighted up (they are rare).
    `speech`: (indices into x, 0/1 targets) for the speech gate, trained afterwards with the
    sound head frozen (rows whose speech is unknown, the package clips, are left out)."""
    torch.manual_seed(seed)
    head = TaggerHead(config)
    sound = [p for n, p in head.named_parameters() if not n.startswith("speech")]
    xt = torch.from_numpy(x)
    _train(head.sound_logits, sound, xt, torch.from_numpy(y), 3.0, steps, seed, log)
    if config.speech:
        if speech is None:
            raise ValueError("a head with a speech gate needs its speech targets")
        rows, targets = torch.from_numpy(speech[0]), torch.from_numpy(speech[1][:, None])
        gate = [p for n, p in head.named_parameters() if n.startswith("speech")]
        log(f"  speech gate: {len(rows)} chunks, {float(targets.mean()):.0%} with speech")
        steps = min(SPEECH_STEPS, steps)
        _train(head.speech_logits, gate, xt[rows], targets, 1.0, steps, seed, log)
    return head.eval()


SPEECH_STEPS = 1500  # the gate's branch is small (at most the sound head's steps)


def _train(logits_of, params, xt, yt, pos_weight, steps, seed, log) -> None:
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=steps, pct_start=0.05)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.full((yt.shape[1],), pos_weight))
    gen = torch.Generator().manual_seed(seed)
    logits_of.__self__.train()
    for step in range(steps):
        i = torch.randint(0, len(xt), (256,), generator=gen)
        loss = loss_fn(logits_of(xt[i].float()), yt[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 1000 == 0 or step == steps - 1:
            log(f"  step {step}: loss {loss.item():.4f}")


@torch.no_grad()
def predict(head: TaggerHead, feats: np.ndarray) -> np.ndarray:
    return head(torch.from_numpy(feats).float()).numpy()


def run_rule(
    config: TaggerConfig, probs, chunks, thresholds, patience, refractory_s, verify=None, heard=None
):
    """The runtime's decision (runtime/tagger.AlertRule) over one stream's probabilities:
    [(t, label)] of the alerts it raises. `verify`: {label: runtime VerifySpec}, with
    `heard`: {position in chunks: the words a reading of that chunk's window held}."""
    from soundflow.runtime.tagger import AlertRule

    spec = SimpleNamespace(
        labels=config.labels,
        thresholds=dict(zip(config.alerts, thresholds, strict=True)),
        patience=patience,
        verify=verify,
    )
    rule = AlertRule(spec, refractory_s)
    chunk_s = audio.CHUNK_MS / 1000
    out = []
    for j, (p, c) in enumerate(zip(probs, chunks, strict=True)):
        rule.update(p)
        t = (c + 1) * chunk_s
        for label in rule.to_verify(t):
            rule.confirm(label, (heard or {}).get(j, set()))
        if rule.ready:
            label = rule.fire(t)
            if label is not None:
                out.append((t, label))
    return out


def score(config, streams, thresholds, patience, refractory_s, verify=None, heard=None) -> dict:
    """Alert accuracy and false alerts per hour of the rule on dev streams, scored as
    `soundflow eval` scores the runtime (train/evaluate.score_alerts). `heard`: per stream,
    the words of the window readings (`run_rule`)."""
    from soundflow.train.evaluate import new_alert_tally, score_alerts

    acc, hours = new_alert_tally(), 0.0
    for k, (record, chunks, probs) in enumerate(streams):
        h = heard[k] if heard is not None else None
        alerts = run_rule(config, probs, chunks, thresholds, patience, refractory_s, verify, h)
        responses = [SimpleNamespace(t=t, tags={"alert": lab}) for t, lab in alerts]
        score_alerts(record, responses, audio.CHUNK_MS / 1000, acc)
        hours += record["duration"] / 3600
    return {
        "events": acc["events"],
        "correct": acc["correct"],
        "accuracy": acc["correct"] / max(acc["events"], 1),
        "false": acc["false"],
        "false_per_hour": acc["false"] / max(hours, 1e-9),
        "hours": hours,
    }


# A label confirmed by words is read only in chunks where its probability reaches at least
# this (the lowest verify threshold calibration may choose): the dev readings to make.
VERIFY_FLOOR = 0.2


def calibrate_verify(
    config, streams, heard, thresholds, patience, refractory_s, false_cost, label, words
):
    """The verify threshold of `label` (runtime/tagger.VerifySpec) on dev streams whose
    readings `heard` holds: the one that maximises right alerts minus `false_cost` times
    false ones over every label (the others as calibrated), the highest of equals (fewest
    readings); None where no threshold beats the label's own rule alone."""
    from soundflow.runtime.tagger import VerifySpec

    base = score(config, streams, thresholds, patience, refractory_s)
    best, value = None, base["correct"] - false_cost * base["false"]
    for g in np.round(np.arange(VERIFY_FLOOR, 0.951, 0.05), 2):
        verify = {label: VerifySpec(float(g), tuple(words))}
        r = score(config, streams, thresholds, patience, refractory_s, verify, heard)
        v = r["correct"] - false_cost * r["false"]
        # ascending thresholds: a better one, or (once one beat the base) an equal higher one
        if v > value + 1e-9 or (best is not None and abs(v - value) <= 1e-9):
            best, value = float(g), v
    return best


def _label_alerts(p: np.ndarray, t: np.ndarray, threshold, patience, refractory_s):
    """Times one label alone would alert at (its run of chunks over threshold, refractory)."""
    over = p >= threshold
    run = np.zeros(len(p), np.int64)
    count = 0
    for j, o in enumerate(over):  # runs are short: a plain loop is fast enough here
        count = count + 1 if o else 0
        run[j] = count
    out, last = [], -np.inf
    for j in np.flatnonzero(run >= patience):
        if t[j] - last >= refractory_s:
            out.append(t[j])
            last = t[j]
    return out


def calibrate(config, streams, patience, refractory_s, false_cost, grid=None):
    """A threshold per alert label, each the one that maximises its right alerts minus
    `false_cost` times its alerts outside any event of its label, on dev streams (every
    chunk computed); labels are calibrated one at a time (they rarely compete)."""
    grid = np.round(np.arange(0.3, 0.991, 0.01), 2) if grid is None else grid
    chunk_s = audio.CHUNK_MS / 1000
    thresholds = []
    for label in config.alerts:
        col = config.labels.index(label)
        best = None
        for g in grid:
            right = wrong = 0
            for record, chunks, probs in streams:
                times = _label_alerts(
                    probs[:, col], (chunks + 1) * chunk_s, g, patience, refractory_s
                )
                events = [e for e in record["events"] if e["label"] == label]
                hit = set()
                for tt in times:
                    ev = next(
                        (k for k, e in enumerate(events) if e["start"] <= tt <= e["end"] + chunk_s),
                        None,
                    )
                    if ev is None:
                        wrong += 1
                    elif ev not in hit:
                        e = events[ev]
                        right += tt <= min(e["end"], e["start"] + ALERT_WINDOW_S) + chunk_s
                        hit.add(ev)
            value = right - false_cost * wrong
            if best is None or value > best[0] + 1e-9:
                best = (value, g)
        thresholds.append(float(best[1]))
    return np.array(thresholds)


# Of the dev windows that hold speech, the share the gate must let be read. A missed word is
# lost for good while a needless reading costs a few decoder steps, so the bar is high: on
# the default's 3 h dev split 0.995 gave threshold 0.88 (0.2 % of speechless windows read),
# 0.999 gives 0.17 (1.1 %), a margin for voices the dev split does not hold.
SPEECH_RECALL = 0.999


def window_open(p: np.ndarray, window: int, threshold: float) -> np.ndarray:
    """Per chunk of one stream (every chunk, in order): whether the gate is open, i.e. the
    speech probability met `threshold` on one of the last `window` chunks (the chunks whose
    audio the window reading hears). runtime/tagger.SpeechGate decides the same way."""
    over = (np.asarray(p) >= threshold).astype(np.int64)
    c = np.concatenate([[0], np.cumsum(over)])
    j = np.arange(len(over))
    return (c[j + 1] - c[np.maximum(j + 1 - window, 0)]) > 0


def calibrate_gate(streams, window: int, recall: float = SPEECH_RECALL, grid=None) -> dict:
    """The speech gate's threshold on dev streams (every chunk computed; the last column of
    each probs array is p(speech)): the highest one that still opens for `recall` of the
    windows holding speech, and the share of speechless windows it still opens for."""
    grid = np.round(np.arange(0.01, 0.991, 0.01), 2) if grid is None else grid
    # per stream: which windows hold speech (a word in one of their chunks' newest 0.8 s)
    wants = [window_open(speech_targets(r, c), window, 0.5) for r, c, _ in streams]
    best = None
    for g in grid:
        held = opened = quiet = quiet_open = 0
        for (_, _, probs), want in zip(streams, wants, strict=True):
            got = window_open(probs[:, -1], window, g)
            held += int(want.sum())
            opened += int((got & want).sum())
            quiet += int((~want).sum())
            quiet_open += int((got & ~want).sum())
        if held and opened / held >= recall:
            best = {
                "threshold": float(g),
                "recall": round(opened / held, 4),
                "quiet_windows_read": round(quiet_open / max(quiet, 1), 4),
                "window_chunks": window,
                "speech_windows": held,
                "quiet_windows": quiet,
            }
    if best is None:
        if not any(speech_targets(r, c).any() for r, c, _ in streams):
            raise ValueError("the dev split holds no speech to calibrate the speech gate on")
        raise ValueError(f"no speech gate threshold keeps {recall:.1%} of speech windows")
    return best


def save(head: TaggerHead, path: Path, extra: dict) -> None:
    torch.save({"config": asdict(head.config), "state": head.state_dict(), **extra}, path)


def load(path: Path) -> tuple[TaggerHead, dict]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    c = ck["config"]
    config = TaggerConfig(**{**c, "labels": tuple(c["labels"]), "alerts": tuple(c["alerts"])})
    head = TaggerHead(config)
    head.load_state_dict(ck["state"])
    return head.eval(), ck
