"""The AudioSet alert head (issue #30): a one-hidden-layer MLP over YAMNet's 1024-d embedding
and 521 scores of the last 0.96 s, trained on the allowed real sounds and the procedural
alarms, with every benign allowed sound and music as hard negatives; per-label thresholds
calibrated on a dev split (by source file) for a false-alarm budget. runtime/audioset_alerts.py
runs it.

    python -m soundflow.train.alert_head --out runs/alerthead [--resume] [--bundle DIR]

Stages, each cached under --out so that `--resume` picks up where a run stopped:
`features/*.npz` (YAMNet on augmented renderings, one file per source group), `head.npz`
(the trained weights), `calibration.json`; `--bundle DIR` then writes the head into a bundle
(`audioset.head` in its manifest, the file hashed in `files`).

Features are the runtime's own: each rendering is cut into 400 ms chunks and YAMNet is run on
the last 0.96 s after each chunk (silence before the rendering), as AudiosetEngine.step does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from soundflow.audio import AUDIOSET_PATCH_SAMPLES, CHUNK_SAMPLES, SAMPLE_RATE

CHUNK_S = CHUNK_SAMPLES / SAMPLE_RATE
# The head's outputs. The first ALERTS raise an alert by default; the rest are sounds users
# may opt in to (`listen --only dog_bark`), trained and calibrated alike.
ALERTS = (
    "smoke_alarm", "co_alarm", "siren", "car_horn", "doorbell", "phone_ring", "alarm",
    "kettle_whistle", "glass_break", "baby_cry", "crash", "explosion",
)  # fmt: skip
OPT_IN = ("dog_bark", "knock", "microwave_beep", "water_tap")
LABELS = ALERTS + OPT_IN
CAPTIONS = {  # the tagger's captions where it has the label (manifest `tagger.alerts`)
    "smoke_alarm": "a smoke alarm is going off",
    "co_alarm": "a carbon monoxide alarm is going off",
    "siren": "a siren is sounding nearby",
    "car_horn": "a car horn is honking",
    "doorbell": "someone rang the doorbell",
    "phone_ring": "a phone is ringing",
    "alarm": "an alarm is going off",
    "kettle_whistle": "the kettle is whistling",
    "glass_break": "something made of glass just broke",
    "baby_cry": "a baby is crying",
    "crash": "something just crashed",
    "explosion": "there was a loud bang",
    "dog_bark": "a dog is barking",
    "knock": "someone is knocking",
    "microwave_beep": "an appliance is beeping",
    "water_tap": "water is running",
}
# Library labels (sources/labels.csv) that are one of ours under another name.
ALIASES = {"alarm_clock": "alarm", "level_crossing": "alarm"}
# Whole packages of benign sounds (the tagger's hard negatives, `soundflow tagger --negatives`):
# music, game effects, spoken letters and voice packs. Files whose names say they may be
# alert-worthy are skipped (train/tagger.py NEGATIVE_SKIP).
NEGATIVE_PACKAGES = (
    "asterisk-moh-opsound-wav", "lincity-ng-data", "frozen-bubble-data", "pingus-data",
    "xmoto-data", "extremetuxracer-data", "fillets-ng-data", "wesnoth-1.16-data",
    "hedgewars-data", "tuxtype-data", "klettres-data",
)  # fmt: skip
DEV_MOD = 5  # files whose id hashes to 0 mod this are dev (20 %), never trained on
NEG_CLIP_S = 12.0  # a benign file's first seconds rendered (long soundtracks: three windows)
POS_CLIP_S = 10.0
LONG_S = 40.0  # a benign file this long (music, ambience) gets RenderConfig.long_windows more
FEATURE_DIM = 1024 + 521  # embedding, then scores
ONSET_PATCHES = 3  # a rendering's first positive patches: the onset's chunk and two more


@dataclass(frozen=True)
class HeadConfig:
    """The head's dimensions and training settings, saved with its weights."""

    labels: tuple[str, ...] = LABELS  # output order
    alerts: tuple[str, ...] = ALERTS  # the labels alerting by default
    input_dim: int = FEATURE_DIM  # YAMNet embedding (1024) + scores (521)
    hidden: int = 128
    # chosen on the dev split (recall at the false-alarm budget; 25 epochs at 2e-3 overfit:
    # thresholds near 0.99 and a lower dev recall)
    dropout: float = 0.5
    # an alert counts within two chunks of onset: a rendering's first positive patches
    # weigh this much more (1: no more)
    onset_weight: float = 1.0
    # patches the head hears: 1, the last 0.96 s alone; K > 1, that patch and the mean of
    # the last K (an alarm repeats, a clink or a chord does not): input_dim doubles
    context: int = 1
    epochs: int = 6
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        want = FEATURE_DIM * (2 if self.context > 1 else 1)
        if self.input_dim != want:
            raise ValueError(f"context {self.context} reads {want} features, not {self.input_dim}")

    @classmethod
    def make(cls, context: int = 1, **kw) -> HeadConfig:
        return cls(context=context, input_dim=FEATURE_DIM * (2 if context > 1 else 1), **kw)


@dataclass(frozen=True)
class RenderConfig:
    """How many augmented renderings of each source, and their augmentation ranges."""

    real_positive: int = 40  # renderings of each real alert-worthy file
    procedural_train: int = 60  # procedural instances per label, train bands
    procedural_dev: int = 15  # ... eval bands (dev)
    standard_train: int = 200  # train/data/alarms.py instances per alarm, train bands
    standard_dev: int = 40  # ... eval bands (dev)
    negative_train: int = 120  # alarms.py's synthetic hard negatives, per kind
    negative_dev: int = 30
    benign: int = 2  # renderings of each benign file per round
    benign_rounds: tuple[int, int] = (2, 3)  # rounds of benign renderings: train, dev
    long_windows: int = 8  # more windows of each benign file longer than LONG_S
    snr_db: tuple[float, float] = (0.0, 20.0)  # foreground over bed
    bed_prob: float = 0.85
    room_prob: float = 0.5
    eq_prob: float = 0.4
    speed: tuple[float, float] = (0.9, 1.1)
    level_db: tuple[float, float] = (-35.0, -3.0)  # the foreground's peak, dBFS
    positive_db: float = -12.0  # a patch is a positive when its foreground is this near its max


def split_of(file_id: str) -> str:
    return "dev" if zlib.crc32(file_id.encode()) % DEV_MOD == 0 else "train"


# ------------------------------------------------------------------------------- sources
def sources() -> list[dict]:
    """Every allowed source: {id, kind ("real" | "procedural" | "benign"), label (ours or
    None), split, path or procedural name}. Held-out packages (train/heldout.py) never."""
    from soundflow.train.data import alarms, procedural
    from soundflow.train.data.library import package_clips
    from soundflow.train.heldout import held_out_source
    from soundflow.train.tagger import package_files

    out = []
    clips, _ = package_clips()
    for c in clips:
        label = ALIASES.get(c.label, c.label)
        label = label if label in LABELS else None
        out.append(
            {"id": c.id, "kind": "real" if label else "benign", "label": label, "path": c.path}
        )
    seen = {c.path for c in clips}
    for f in package_files(list(NEGATIVE_PACKAGES)):
        if str(f) not in seen:
            out.append({"id": f"file:{f}", "kind": "benign", "label": None, "path": str(f)})
    for s in out:
        if s["path"] and held_out_source(s["path"]) is not None:
            raise ValueError(f"{s['path']} is held out (train/heldout.py)")
        s["split"] = split_of(s["id"])
    # a label's real files are few (1-4): a third of them (rounded down) go to dev, so every
    # label keeps one to train on
    for label in {s["label"] for s in out if s["kind"] == "real"}:
        mine = sorted(
            (s for s in out if s["label"] == label), key=lambda s: zlib.crc32(s["id"].encode())
        )
        for i, s in enumerate(mine):
            s["split"] = "dev" if i < len(mine) // 3 else "train"
    # alarms written from the standards, and synthetic hard negatives (train/data/alarms.py)
    for name in (*alarms.ALARMS, *alarms.NEGATIVES):
        label = name if name in alarms.ALARMS else None
        for split in ("train", "dev"):
            out.append(
                {"id": f"standard:{name}", "kind": "standard", "label": label,
                 "path": None, "split": split}
            )  # fmt: skip
    # procedural sounds: train draws from the train bands of each parameter, dev the eval bands
    for name in procedural.SOUNDS:
        label = name if name in LABELS else None
        for split in ("train", "dev"):
            out.append(
                {"id": f"procedural:{name}", "kind": "procedural", "label": label,
                 "path": None, "split": split}
            )  # fmt: skip
    return out


def is_bed(s: dict) -> bool:
    """Benign files long enough to lie under a rendering: music, voices, ambience."""
    return s["kind"] == "benign" and s["path"] is not None and "#" not in s["path"]


# ------------------------------------------------------------------------------- rendering
def _read(path: str) -> np.ndarray:
    from soundflow.train.data.library import _read_file

    x = _read_file(path)
    return np.clip(x, -1.0, 1.0) if x.size else np.zeros(CHUNK_SAMPLES, np.float32)


def _bed(rng: np.random.Generator, n: int, beds: list[str], split: str) -> np.ndarray:
    from soundflow.train.data import procedural

    if beds and rng.uniform() < 0.6:
        x = _read(str(rng.choice(beds)))
        if len(x) < SAMPLE_RATE:
            x = np.tile(x, SAMPLE_RATE // max(len(x), 1) + 1)
        if len(x) < n:
            x = np.tile(x, n // len(x) + 1)
        start = int(rng.integers(0, len(x) - n + 1))
        return x[start : start + n].astype(np.float32)
    make = procedural.BEDS[str(rng.choice(list(procedural.BEDS)))]
    return make(procedural.Params(rng, "eval" if split == "dev" else "train"), n)


def _rms_windows(x: np.ndarray) -> np.ndarray:
    """RMS of the last 0.96 s after each chunk: (chunks,)."""
    pad = np.concatenate([np.zeros(AUDIOSET_PATCH_SAMPLES, np.float32), x])
    c = np.concatenate([[0.0], np.cumsum(pad.astype(np.float64) ** 2)])
    ends = AUDIOSET_PATCH_SAMPLES + CHUNK_SAMPLES * np.arange(1, len(x) // CHUNK_SAMPLES + 1)
    return np.sqrt((c[ends] - c[ends - AUDIOSET_PATCH_SAMPLES]) / AUDIOSET_PATCH_SAMPLES)


def render(fg: np.ndarray, rng, cfg: RenderConfig, beds: list[str], split: str):
    """One augmented rendering of a foreground: (audio (n,), foreground RMS per chunk
    (chunks,), onset chunk). Speed, EQ, room, level, then a bed at a random SNR."""
    from soundflow.train.data import augment

    x = augment.speed_perturb(fg.astype(np.float32), float(rng.uniform(*cfg.speed)))
    if rng.uniform() < cfg.eq_prob:
        x = augment.band_limit(x, float(rng.uniform(60, 500)), float(rng.uniform(3000, 7800)))
    if rng.uniform() < cfg.room_prob:
        rir = augment.room_impulse(rng, float(rng.uniform(0.15, 0.9)), float(rng.uniform(-3, 12)))
        x = augment.reverberate(x, rir)
    x = x * (10 ** (rng.uniform(*cfg.level_db) / 20) / (np.abs(x).max() + 1e-9))
    pre = int(rng.uniform(0.4, 2.0) * SAMPLE_RATE)
    n = pre + len(x) + int(0.8 * SAMPLE_RATE)
    n += -n % CHUNK_SAMPLES
    fgt = np.zeros(n, np.float32)
    fgt[pre : pre + len(x)] = x
    mix = fgt.copy()
    fg_rms = _rms_windows(fgt)
    if rng.uniform() < cfg.bed_prob:
        bed = _bed(rng, n, beds, split)
        bed_rms = float(np.sqrt(np.mean(bed.astype(np.float64) ** 2))) + 1e-9
        snr = rng.uniform(*cfg.snr_db)
        mix += bed * (fg_rms.max() / bed_rms / 10 ** (snr / 20))
    else:
        mix += (rng.standard_normal(n) * 10 ** (rng.uniform(-75, -55) / 20)).astype(np.float32)
    peak = np.abs(mix).max()
    if peak > 0.99:
        mix, fg_rms = mix * (0.99 / peak), fg_rms * (0.99 / peak)
    return mix.astype(np.float32), fg_rms, pre // CHUNK_SAMPLES


def yamnet_chunks(engine, x: np.ndarray) -> np.ndarray:
    """YAMNet after each 400 ms chunk of `x`, as the runtime's step: (chunks, 1545) float16."""
    state, out = engine.new_state(), []
    for i in range(0, len(x) - CHUNK_SAMPLES + 1, CHUNK_SAMPLES):
        o = engine.step(state, x[i : i + CHUNK_SAMPLES])
        out.append(np.concatenate([o.embedding, o.scores]))
    return np.asarray(out, np.float16)


def build_group(engine, group: list[dict], cfg: RenderConfig, beds, seed: int,
                long_only: bool = False) -> dict:  # fmt: skip
    """Features of every rendering of a group of sources: X (n, 1545), y (n,) label index
    or -1 (benign), w (n,) 1 or 0 (a positive rendering's quiet patch: ignored), example
    (n,) rendering index, onset (renderings,) chunk of the foreground's start, file id.
    `long_only`: only the benign files longer than LONG_S (music, ambience), each rendered
    at `cfg.long_windows` more windows (a soundtrack is minutes of hard negatives)."""
    from soundflow.train.data import alarms, procedural

    rng = np.random.default_rng(seed)
    xs, ys, ws, ex, onsets, files, labels = [], [], [], [], [], [], []
    for s in group:
        label = LABELS.index(s["label"]) if s["label"] else -1
        dev = s["split"] == "dev"
        if s["kind"] == "procedural":
            k = cfg.procedural_dev if dev else cfg.procedural_train
            k = k if label >= 0 else max(2, k // 4)
        elif s["kind"] == "standard":
            k = (
                (cfg.standard_dev if dev else cfg.standard_train)
                if label >= 0
                else (cfg.negative_dev if dev else cfg.negative_train)
            )
        else:
            k = cfg.real_positive if label >= 0 else cfg.benign
        base = None if s["kind"] in ("procedural", "standard") else _read(s["path"])
        if long_only:
            k = cfg.long_windows if len(base) > LONG_S * SAMPLE_RATE else 0
        for _ in range(k):
            if s["kind"] == "standard":
                name = s["id"].split(":")[1]
                make = alarms.ALARMS.get(name) or alarms.NEGATIVES[name]
                fg = make(procedural.Params(rng, "eval" if dev else "train"))
            elif base is None:
                bands = "eval" if s["split"] == "dev" else "train"
                fg = procedural.SOUNDS[s["label"] or s["id"].split(":")[1]].make(
                    procedural.Params(rng, bands)
                )
            else:
                cap = POS_CLIP_S if label >= 0 else NEG_CLIP_S
                start = 0
                if len(base) > cap * SAMPLE_RATE and label < 0:
                    start = int(rng.integers(0, len(base) - int(cap * SAMPLE_RATE)))
                fg = base[start : start + int(cap * SAMPLE_RATE)]
            mix, fg_rms, onset = render(fg, rng, cfg, beds, s["split"])
            feats = yamnet_chunks(engine, mix)
            n = len(feats)
            fg_rms = fg_rms[:n]
            if label >= 0:
                on = fg_rms >= fg_rms.max() * 10 ** (cfg.positive_db / 20)
                y = np.where(on, label, -1)
                w = np.where(on | (fg_rms < fg_rms.max() * 1e-3), 1.0, 0.0)
            else:
                y, w = np.full(n, -1), np.ones(n)
            xs.append(feats)
            ys.append(y)
            ws.append(w)
            ex.append(np.full(n, len(onsets)))
            onsets.append(onset)
            files.append(s["id"])
            labels.append(label)
    if not xs:  # a group with no long file (long_only): kept, so --resume skips it
        xs, ys, ws, ex = [np.zeros((0, FEATURE_DIM), np.float16)], [[]], [[]], [[]]
    return {
        "X": np.concatenate(xs),
        "y": np.concatenate(ys).astype(np.int16),
        "w": np.concatenate(ws).astype(np.float32),
        "example": np.concatenate(ex).astype(np.int32),
        "onset": np.asarray(onsets, np.int32),
        "label": np.asarray(labels, np.int16),
        "source": np.asarray(files, dtype=str),
    }


def build_features(out: Path, cfg: RenderConfig, log=print, limit: int | None = None) -> None:
    """features/{train,dev}-{kind}-{k}.npz for every source group not yet built."""
    from soundflow.runtime.audioset import AudiosetEngine

    engine = AudiosetEngine.from_bundle(None, threads=1)
    srcs = sources()
    if limit is not None:
        srcs = [s for s in srcs if s["kind"] != "benign"] + [
            s for s in srcs if s["kind"] == "benign"
        ][:limit]
    (out / "features").mkdir(parents=True, exist_ok=True)
    (out / "sources.json").write_text(json.dumps(srcs, indent=0) + "\n")
    for split in ("train", "dev"):
        beds = [s["path"] for s in srcs if is_bed(s) and s["split"] == split]
        rounds = cfg.benign_rounds[split == "dev"]
        todo = [("real", 4, ""), ("procedural", 4, ""), ("standard", 2, "")]
        # later rounds of benign renderings: more dev hours for the false-alarm budget
        todo += [("benign", 60, f"{r}" if r else "") for r in range(rounds)]
        todo += [("benign", 60, "long")] if cfg.long_windows else []
        for kind, size, rnd in todo:
            group = [s for s in srcs if s["split"] == split and s["kind"] == kind]
            for k in range(0, len(group), size):
                f = out / "features" / f"{split}-{kind}{rnd}-{k // size:03d}.npz"
                if f.exists():
                    continue
                t0 = time.perf_counter()
                seed = zlib.crc32(f.name.encode())
                data = build_group(engine, group[k : k + size], cfg, beds, seed, rnd == "long")
                tmp = f.with_suffix(".tmp.npz")
                np.savez(tmp, **data)
                tmp.replace(f)
                log(f"  {f.name}: {len(data['y'])} patches, {time.perf_counter() - t0:.0f} s")


def load_features(out: Path, split: str) -> dict:
    """Every group of a split, concatenated (example indices made unique)."""
    files = sorted((out / "features").glob(f"{split}-*.npz"))
    parts = [np.load(f) for f in files if ".tmp" not in f.name]  # not one being written
    if not parts:
        raise FileNotFoundError(f"no {split} features under {out / 'features'}; build them first")
    data, offset = {k: [] for k in ("X", "y", "w", "example", "onset", "label", "source")}, 0
    for p in parts:
        for k in ("X", "y", "w", "onset", "label", "source"):
            data[k].append(p[k])
        data["example"].append(p["example"] + offset)
        offset += len(p["onset"])
    return {k: np.concatenate(v) for k, v in data.items()}


# ------------------------------------------------------------------------------- training
def train_head(out: Path, config: HeadConfig, log=print) -> dict:
    """Fit the MLP (torch at train time) on the train split; head.npz holds plain arrays
    the runtime reads with numpy: mean, std (1545,), w1 (1545, H), b1, w2 (H, L), b2."""
    import torch
    from torch import nn

    torch.manual_seed(config.seed)
    d = load_features(out, "train")
    X = with_context(d["X"], d["example"], config.context).astype(np.float32)
    mean, std = X.mean(0), X.std(0) + 1e-3
    X = (X - mean) / std
    L = len(config.labels)
    Y = np.zeros((len(X), L), np.float32)
    pos = d["y"] >= 0
    Y[np.flatnonzero(pos), d["y"][pos]] = 1.0
    W = d["w"].copy()
    if config.onset_weight != 1.0:  # a rendering's patches are contiguous, in order
        starts = np.r_[0, np.flatnonzero(np.diff(d["example"])) + 1]
        seen = np.cumsum(pos) - np.repeat(
            np.cumsum(pos)[starts] - pos[starts], np.diff(np.r_[starts, len(pos)])
        )
        W[pos & (seen <= ONSET_PATCHES)] *= config.onset_weight
    log(f"train: {len(X)} patches, {int(pos.sum())} positive, {int((W == 0).sum())} ignored")
    # each label's positives weigh as much in all as a tenth of the negatives
    counts = Y.sum(0) + 1
    pos_w = torch.tensor(np.clip(0.1 * (~pos).sum() / counts, 1.0, 50.0), dtype=torch.float32)
    model = nn.Sequential(
        nn.Linear(config.input_dim, config.hidden),
        nn.ReLU(),
        nn.Dropout(config.dropout),
        nn.Linear(config.hidden, L),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    Xt, Yt, Wt = torch.from_numpy(X), torch.from_numpy(Y), torch.from_numpy(W)
    steps = config.epochs * (len(X) // 512 + 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=steps)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_w, reduction="none")
    g = torch.Generator().manual_seed(config.seed)
    for epoch in range(config.epochs):
        perm, total = torch.randperm(len(X), generator=g), 0.0
        model.train()
        for i in range(0, len(X), 512):
            b = perm[i : i + 512]
            loss = (loss_fn(model(Xt[b]), Yt[b]).mean(1) * Wt[b]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
        if epoch % 5 == 4 or epoch == config.epochs - 1:
            log(f"  epoch {epoch + 1}: loss {total / len(X):.4f}")
    lin1, lin2 = model[0], model[3]
    head = {
        "mean": mean.astype(np.float32),
        "std": std.astype(np.float32),
        "w1": lin1.weight.detach().numpy().T.astype(np.float16),
        "b1": lin1.bias.detach().numpy().astype(np.float32),
        "w2": lin2.weight.detach().numpy().T.astype(np.float16),
        "b2": lin2.bias.detach().numpy().astype(np.float32),
        "labels": np.asarray(config.labels),
        "config": np.asarray(json.dumps(asdict(config))),
    }
    head = quantize_w1(head)
    np.savez(out / "head.npz", **head)
    return head


def with_context(X: np.ndarray, example: np.ndarray, k: int) -> np.ndarray:
    """(n, 1545) patches, contiguous per rendering -> (n, 3090): each patch and the mean of
    its rendering's last `k` patches up to it (fewer at its start), as AudiosetAlerts keeps
    them; `k` 1: X unchanged."""
    if k <= 1:
        return X
    X = X.astype(np.float32)
    c = np.cumsum(np.concatenate([np.zeros((1, X.shape[1]), np.float32), X]), 0)
    i = np.arange(len(X))
    starts = np.r_[0, np.flatnonzero(np.diff(example)) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, len(X)]))
    lo = np.maximum(i - k + 1, first)
    mean = (c[i + 1] - c[lo]) / (i + 1 - lo)[:, None]
    return np.concatenate([X, mean], 1)


def head_context(head) -> int:
    return int(json.loads(str(head["config"])).get("context", 1))


def quantize_w1(head: dict) -> dict:
    """w1 as int8 with one symmetric scale per hidden unit (`w1_scale`): half the fp16 size,
    which keeps the default bundle under 50 MB with 256 hidden units. Calibration runs on
    the quantized arrays, so the thresholds are the shipped head's own."""
    if "w1_scale" in head:
        return head
    w1 = np.asarray(head["w1"], np.float32)
    scale = np.maximum(np.abs(w1).max(0), 1e-8) / 127.0
    q = np.clip(np.round(w1 / scale), -127, 127).astype(np.int8)
    return {**head, "w1": q, "w1_scale": scale.astype(np.float32)}


def head_probs(head, X: np.ndarray) -> np.ndarray:
    """(n, input_dim) -> (n, labels) with the stored arrays (runtime/audioset_alerts.py's math)."""
    from soundflow.runtime.audioset_alerts import mlp_probs

    return mlp_probs(head, X)


# ------------------------------------------------------------------------------- calibration
def alerts_of(p: np.ndarray, threshold: float, persistence: int, refractory: int) -> np.ndarray:
    """Chunks (indices) an alert fires at, for one label's probabilities over one stream."""
    run, last, out = 0, -(10**9), []
    for i, v in enumerate(p):
        run = run + 1 if v >= threshold else 0
        if run >= persistence and i - last >= refractory:
            out.append(i)
            last = i
    return np.asarray(out, np.int64)


def calibrate(out: Path, head, budget_per_hour: float, persistence: int, refractory_s: float,
              floor: float = 0.3, min_recall: float = 0.5, log=print) -> dict:  # fmt: skip
    """Per label: the lowest threshold (>= floor) whose false alerts on the dev split's
    benign renderings stay within `budget_per_hour` (hours: the whole dev split, as a
    stream's hours count); its dev recall (an alert within two chunks of the onset chunk).
    A default alert label stays one only if its dev recall reaches `min_recall` (a label the
    dev split cannot show working would spend the false-alarm budget for nothing; it stays
    opt-in, `listen --only`).
    An alert-worthy sound named by another alert label is a misnaming, not a false alert:
    the rule fires the most probable label, and recall counts the right one."""
    d = load_features(out, "dev")
    P = head_probs(head, with_context(d["X"], d["example"], head_context(head)).astype(np.float32))
    ex, labels = d["example"], d["label"]
    order = [np.flatnonzero(ex == e) for e in range(len(d["onset"]))]
    hours = len(P) * CHUNK_S / 3600
    refractory = int(round(refractory_s / CHUNK_S))
    grid = np.concatenate([np.round(np.arange(floor, 0.99, 0.01), 2), [0.99, 0.995, 0.998, 0.999]])
    benign = [e for e in range(len(order)) if labels[e] < 0]
    result = {}
    for j, label in enumerate(head_labels(head)):
        mine = [e for e in range(len(order)) if labels[e] == j]
        best = None
        for th in grid:
            false = sum(len(alerts_of(P[order[e], j], th, persistence, refractory)) for e in benign)
            if false / hours <= budget_per_hour:
                best = (th, false)
                break
        th, false = best if best is not None else (1.0, -1)  # never: no threshold kept it
        hits = 0
        for e in mine:
            a = alerts_of(P[order[e], j], th, persistence, refractory)
            hits += bool(((a >= d["onset"][e]) & (a <= d["onset"][e] + 2)).any())
        recall = round(hits / len(mine), 3) if mine else None
        result[label] = {
            "threshold": float(th),
            "dev_events": len(mine),
            "dev_recall": recall,
            "dev_false_per_hour": round(false / hours, 2) if false >= 0 else None,
            "default": label in head_alerts(head) and recall is not None and recall >= min_recall,
        }
        log(f"  {label:15s} th {th:.2f} recall {recall} ({len(mine)})"
            f"{' default' if result[label]['default'] else ''}")  # fmt: skip
    return {"dev_hours": round(hours, 3), "labels": result}


def head_labels(head) -> tuple[str, ...]:
    return tuple(str(x) for x in head["labels"])


def head_alerts(head) -> tuple[str, ...]:
    """The labels the head was trained to alert on by default (its config's `alerts`)."""
    return tuple(json.loads(str(head["config"]))["alerts"])


# ------------------------------------------------------------------------------- bundle
HEAD_FILE = "audioset_head.npz"


def write_to_bundle(bundle: Path, out: Path, calibration: dict, persistence: int,
                    refractory_s: float, budget: float, decides: bool = False) -> None:  # fmt: skip
    """Copy head.npz into the bundle and declare it as `audioset.head` (hashed in files);
    `decides`: alert mode decides by it unless `--alerts` says otherwise (else opt-in,
    `listen --alerts audioset`)."""
    import shutil

    from soundflow.runtime.audioset_alerts import HEAD_SECTION

    m_path = bundle / "manifest.json"
    m = json.loads(m_path.read_text())
    if "audioset" not in m:
        raise SystemExit(f"{bundle} has no audioset section: add YAMNet first")
    (bundle / HEAD_FILE).unlink(missing_ok=True)  # never write through a hard link
    shutil.copyfile(out / "head.npz", bundle / HEAD_FILE)
    data = (bundle / HEAD_FILE).read_bytes()
    head = np.load(bundle / HEAD_FILE)
    config = json.loads(str(head["config"]))
    m["audioset"][HEAD_SECTION] = {
        "file": HEAD_FILE,
        "labels": list(config["labels"]),
        "alerts": {
            lab: {
                "threshold": calibration["labels"][lab]["threshold"],
                "caption": CAPTIONS[lab],
                "default": calibration["labels"][lab].get("default", lab in config["alerts"]),
            }
            for lab in config["labels"]
        },
        "input_dim": int(config["input_dim"]),
        "hidden": int(config["hidden"]),
        "context": int(config.get("context", 1)),
        "persistence": persistence,
        "refractory_s": refractory_s,
        "decides": decides,
        "calibration": {
            "dev_hours": calibration["dev_hours"],
            "false_per_hour_per_label": budget,
            "recipe": f"python -m soundflow.train.alert_head --out DIR --budget {budget} "
            f"--hidden {config['hidden']} --epochs {config.get('epochs', HeadConfig.epochs)} "
            + (f"--context {config['context']} " if config.get("context", 1) > 1 else "")
            + (f"--onset-weight {ow} " if (ow := config.get("onset_weight", 1.0)) != 1.0 else "")
            + f"--persistence {persistence} --min-dev-recall "
            f"{calibration.get('min_dev_recall', 0.0)}{' --decides' if decides else ''} "
            "--bundle BUNDLE",
            "dev_recall": {k: v.get("dev_recall") for k, v in calibration["labels"].items()},
        },
    }
    m["files"][HEAD_FILE] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    m["files"] = dict(sorted(m["files"].items()))
    tmp = m_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(m, indent=2) + "\n")  # write_manifest's layout
    tmp.replace(m_path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out", type=Path, required=True, help="work dir (features, head, calibration)"
    )
    ap.add_argument("--resume", action="store_true", help="keep what --out already holds")
    ap.add_argument("--bundle", type=Path, default=None, help="write the head into this bundle")
    ap.add_argument("--budget", type=float, default=0.45, help="dev false alerts/hour per label")
    ap.add_argument("--persistence", type=int, default=2, help="chunks in a row over threshold")
    ap.add_argument("--refractory-s", type=float, default=8.0)
    ap.add_argument("--limit-benign", type=int, default=None, help="benign files (smoke runs)")
    ap.add_argument("--epochs", type=int, default=HeadConfig.epochs)
    ap.add_argument("--hidden", type=int, default=HeadConfig.hidden)
    ap.add_argument("--context", type=int, default=HeadConfig.context,
                    help="patches averaged beside the last (1: the last alone)")  # fmt: skip
    ap.add_argument("--onset-weight", type=float, default=HeadConfig.onset_weight)
    ap.add_argument(
        "--min-dev-recall", type=float, default=0.5, help="a default label's dev recall, at least"
    )
    ap.add_argument("--decides", action="store_true", help="the bundle's alert mode uses it")
    args = ap.parse_args(argv)
    out = args.out
    if out.exists() and not args.resume and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: pass --resume to continue it")
    out.mkdir(parents=True, exist_ok=True)
    print("features")
    build_features(out, RenderConfig(), limit=args.limit_benign)
    if args.resume and (out / "head.npz").exists():
        head = dict(np.load(out / "head.npz"))
        print("head: kept")
    else:
        print("head")
        config = HeadConfig.make(
            args.context, epochs=args.epochs, hidden=args.hidden, onset_weight=args.onset_weight
        )
        head = train_head(out, config)
    print("calibration")
    cal = calibrate(out, head, args.budget, args.persistence, args.refractory_s,
                    min_recall=args.min_dev_recall)  # fmt: skip
    cal.update(persistence=args.persistence, refractory_s=args.refractory_s, budget=args.budget,
               min_dev_recall=args.min_dev_recall)  # fmt: skip
    (out / "calibration.json").write_text(json.dumps(cal, indent=1) + "\n")
    if args.bundle is not None:
        write_to_bundle(
            args.bundle, out, cal, args.persistence, args.refractory_s, args.budget, args.decides
        )
        print(f"wrote {args.bundle / HEAD_FILE}")


if __name__ == "__main__":
    main()
