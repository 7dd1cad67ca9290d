"""Fine-tune the Whisper-based model through the paper's four stages on stream shards, with the
encoder frozen: every stream is encoded once (its frames cached on disk), then only the
decoder trains. Checkpoints and optimizer state are written every few minutes for --resume.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from soundflow import audio, protocol
from soundflow.train.dataset import ShardSource, chunk_targets
from soundflow.train.whisper_model import (
    WhisperSoundFlow,
    cross_layout,
    load_whisper_checkpoint,
    save_whisper_checkpoint,
    segment_losses,
)

# The recipes (plain data) sit below both this loop and train/whisper_warmstart.py, which
# reads a bundle's recipe; their names stay importable from here.
from soundflow.train.whisper_recipes import (  # noqa: F401
    ALL,
    INSTRUCTION,
    PHRASES,
    RECIPES,
    Stage,
    WhisperRecipe,
)

PHRASE_MAX_S, PHRASE_GAP_S = 3.0, 0.3


def phrase_targets(record: dict) -> list[dict]:
    """Transcribe targets as phrases: consecutive words of one speaker, split at a pause of
    PHRASE_GAP_S or when the phrase would pass PHRASE_MAX_S, each due at its last word's end."""
    out, cur = [], []
    for w in sorted(record.get("words", []), key=lambda w: w["start"]):
        if cur and (
            w["start"] - cur[-1]["end"] > PHRASE_GAP_S
            or w["end"] - cur[0]["start"] > PHRASE_MAX_S
            or w.get("speaker") != cur[-1].get("speaker")
        ):
            out.append({"t": cur[-1]["end"], "text": " ".join(x["word"] for x in cur)})
            cur = []
        cur.append(w)
    if cur:
        out.append({"t": cur[-1]["end"], "text": " ".join(x["word"] for x in cur)})
    return out


def set_trainable(model: WhisperSoundFlow, which: str) -> list[dict]:
    """Parameter groups for a stage; the encoder and Whisper's own token rows never train."""
    for p in model.parameters():
        p.requires_grad = False
    d = model.decoder
    d.embed_new.requires_grad = True
    layer_params = []
    if which in ("cross", "decoder"):
        for layer in d.layers:
            e = layer.encoder_attn
            mods = [e.q_proj, e.out_proj, layer.encoder_attn_layer_norm]
            if which == "decoder":
                mods += [
                    layer.self_attn,
                    layer.self_attn_layer_norm,
                    layer.fc1,
                    layer.fc2,
                    layer.final_layer_norm,
                ]
            for m in mods:
                for p in m.parameters():
                    p.requires_grad = True
                    layer_params.append(p)
        # Cross-attention keys and values stay frozen: the memory is computed once per frame.
        for layer in d.layers:
            for p in (
                *layer.encoder_attn.k_proj.parameters(),
                *layer.encoder_attn.v_proj.parameters(),
            ):
                p.requires_grad = False
        layer_params = [p for p in layer_params if p.requires_grad]
        if which == "decoder":
            for p in d.norm.parameters():
                p.requires_grad = True
                layer_params.append(p)
    return [{"params": [d.embed_new], "group": "new"}, {"params": layer_params, "group": "layers"}]


class FrameCache:
    """Each chunk's encoder window (frames + valid length), computed once with the frozen
    streamed encoder and stored float16 beside its lengths; read back memory-mapped."""

    def __init__(self, source: ShardSource, model: WhisperSoundFlow, root: Path):
        self.source, self.model, self.root = source, model, Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        w = model.cfg.window
        self.tag = f"win{w.chunk_ms}-{w.left_context_ms}"

    def path(self, i: int) -> Path:
        # Stream ids repeat across builds (train-000000 in every one): the seed tells them apart.
        rec = self.source.records[i][1]
        return self.root / f"{rec['id']}.{rec.get('seed', 0)}.{self.tag}.npy"

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        p = self.path(i)
        lengths_path = p.with_suffix(".len.npy")
        if not lengths_path.is_file():
            pcm, _ = self.source.get(i)
            windows, lengths = self.model.encoder.encode_offline(pcm)
            for arr, dst in ((windows.astype(np.float16), p), (lengths, lengths_path)):
                tmp = dst.with_name(dst.name + ".tmp.npy")
                np.save(tmp, arr)
                tmp.replace(dst)
        return np.load(p, mmap_mode="r"), np.load(lengths_path)

    def ready(self) -> list[int]:
        """Streams whose frames are on disk (another process may still be writing more)."""
        return [
            i for i in range(len(self.source)) if self.path(i).with_suffix(".len.npy").is_file()
        ]

    def fill(self, log=print) -> None:
        t0 = time.time()
        for i in range(len(self.source)):
            self.get(i)
            if i % 10 == 0:
                log(f"frames: {i + 1}/{len(self.source)} streams ({time.time() - t0:.0f} s)")


def draw(
    source: ShardSource,
    recipe: WhisperRecipe,
    stage: Stage,
    index: int,
    chunk_ms: int,
    pool: list[int] | None = None,
):
    """Sample `index` of a stage: (stream, task, start chunk, per-chunk response texts),
    from `pool` (stream indices; default all)."""
    rng = np.random.default_rng([recipe.seed, zlib.crc32(stage.name.encode()), index])
    i = int(rng.integers(len(source))) if pool is None else pool[int(rng.integers(len(pool)))]
    rec = source.records[i][1]
    tasks = list(stage.tasks)
    p = np.array([stage.tasks[t] for t in tasks])
    task = tasks[int(rng.choice(len(tasks), p=p / p.sum()))]
    total = int(rec["duration"] * 1000 // chunk_ms)
    n = recipe.n_chunks
    if task == "transcribe" and stage.captions == "phrase":
        rec = {**rec, "targets": {**rec["targets"], "transcribe": phrase_targets(rec)}}
    due = chunk_targets(rec, task, chunk_ms, total)
    last = max(0, total - n)
    if due and rng.random() < recipe.focus_prob:
        c = sorted(due)[int(rng.integers(len(due)))]
        start = int(np.clip(c - rng.integers(n), 0, last))
    else:
        start = int(rng.integers(last + 1))
    return i, task, start, [due.get(start + c) for c in range(n)]


def make_batch(model, tok, cache: FrameCache, recipe, stage, step: int, pool=None):
    """-> (memory (B, n_chunks * window_frames, d), layouts, per-sample window lengths)."""
    wf = model.cfg.memory_frames
    n = recipe.n_chunks
    layouts, memories, lengths = [], [], []
    for j in range(recipe.batch):
        i, task, start, texts = draw(
            cache.source, recipe, stage, step * recipe.batch + j, model.cfg.chunk_ms, pool
        )
        windows, lens = cache.get(i)
        win = np.zeros((n, wf, windows.shape[2]), np.float32)
        got = np.asarray(windows[start : start + n], np.float32)
        win[: len(got)] = got
        ln = np.zeros(n, np.int64)
        ln[: len(got)] = lens[start : start + n]
        ln[len(got) :] = 1  # past the stream's end: one (zero) frame, never a label there
        responses = [None if t is None else tok.encode(t)[:48] for t in texts]
        layouts.append(cross_layout(model.vocab, task, responses))
        memories.append(win.reshape(n * wf, -1))
        lengths.append(ln)
    return torch.from_numpy(np.stack(memories)), layouts, lengths


def lr_at(step: int, stage: Stage, base: float) -> float:
    warm = max(1, min(20, stage.steps // 10))
    if step < warm:
        return base * (step + 1) / warm
    return base * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, stage.steps - warm)))


def train_whisper(
    recipe: WhisperRecipe,
    data: list[Path],
    out: Path,
    frames_dir: Path,
    whisper_dir: Path | None = None,
    resume: bool = True,
    until: str | None = None,
    checkpoint_every_s: float = 300.0,
    ready_only: bool = False,
    init_bundle: Path | None = None,
    log=print,
) -> Path:
    """Run (or continue) the recipe's stages; returns the checkpoint directory.
    `ready_only`: draw only from streams whose frames are cached already, rescanning as
    `precompute_frames` processes add more (trains while they encode; not reproducible
    sample for sample, so the recipe's default encodes everything first).
    `init_bundle`: a continuation recipe's starting point, a whisper-cross bundle."""
    from soundflow.train.whisper_ckpt import load_whisper

    out = Path(out)
    state_path = out / "trainer_state.pt"
    source = ShardSource(data)
    if resume and state_path.is_file():
        model, tok, _ = load_whisper_checkpoint(out / "checkpoint")
        state = torch.load(state_path, weights_only=False)
        log(f"resuming at stage {state['stage']} step {state['step']}")
    else:
        tags = sorted(
            {m.group(0) for t in source.texts() for m in protocol.TAG_PATTERN.finditer(t)}
        )
        lineage = []
        if recipe.continues != (init_bundle is not None):
            raise ValueError(
                f"recipe {recipe.name} "
                + (
                    "continues a bundle: pass --init-bundle"
                    if recipe.continues
                    else "starts from Whisper: drop --init-bundle"
                )
            )
        if init_bundle is not None:
            from soundflow.train.whisper_warmstart import bundle_lineage, model_from_bundle

            model, tok, _ = model_from_bundle(init_bundle, whisper_dir, log=log)
            missing = sorted(set(tags) - set(model.vocab.tags))
            if missing:
                raise ValueError(f"{init_bundle} has no tokens for the data's tags {missing}")
            lineage = bundle_lineage(init_bundle)
        else:
            model, tok = WhisperSoundFlow.from_whisper(
                load_whisper(whisper_dir), tags, **recipe.dims
            )
        state = {"stage": 0, "step": 0, "opt": None, "log": [], "lineage": lineage}
    cache = FrameCache(source, model, frames_dir)
    if not ready_only:
        cache.fill(log)
    pool = cache.ready() if ready_only else None
    model.train()
    t_save = time.time()
    for si in range(state["stage"], len(recipe.stages)):
        stage = recipe.stages[si]
        groups = set_trainable(model, stage.trainable)
        opt = torch.optim.AdamW(groups, lr=1.0, weight_decay=0.0)
        if state["opt"] is not None and state["stage"] == si:
            opt.load_state_dict(state["opt"])
        t0 = time.time()
        for step in range(state["step"] if state["stage"] == si else 0, stage.steps):
            for grp in opt.param_groups:
                base = recipe.new_lr if grp["group"] == "new" else stage.lr
                grp["lr"] = lr_at(step, stage, base)
            if ready_only and step % 10 == 0:
                pool = cache.ready()
                if not pool:
                    raise FileNotFoundError(f"no cached frames in {frames_dir} yet")
            frames, layouts, ctx = make_batch(model, tok, cache, recipe, stage, step, pool)
            losses = segment_losses(model, frames, layouts, ctx)
            stream = losses["stream"] / losses["n_stream"].clamp(min=1)
            lm = losses["lm"] / losses["n_lm"].clamp(min=1)
            loss = lm + recipe.lam * stream
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            opt.step()
            rate = (step + 1 - (state["step"] if state["stage"] == si else 0)) / (time.time() - t0)
            entry = {"stage": stage.name, "step": step, "lm": float(lm), "stream": float(stream)}
            state["log"].append(entry)
            if step % 10 == 0 or step == stage.steps - 1:
                eta = (stage.steps - step - 1) / max(rate, 1e-9)
                log(
                    f"[{stage.name} {step + 1}/{stage.steps}] lm {float(lm):.3f} stream "
                    f"{float(stream):.4f}  {rate:.2f} step/s  stage ETA {eta / 60:.1f} min"
                )
            if time.time() - t_save > checkpoint_every_s:
                _save(
                    model,
                    tok,
                    out,
                    recipe,
                    state | {"stage": si, "step": step + 1, "opt": opt.state_dict()},
                )
                t_save = time.time()
        state.update(stage=si + 1, step=0, opt=None)
        _save(model, tok, out, recipe, state)
        if until == stage.name:
            log(f"stopped after stage {stage.name} (--until)")
            break
    return out / "checkpoint"


def _save(model, tok, out: Path, recipe: WhisperRecipe, state: dict) -> None:
    done = sum(s.steps for s in recipe.stages[: state["stage"]]) + state["step"]
    extra = {
        "recipe": recipe.name,
        "stage": state["stage"],
        "step": state["step"],
        "stages": [asdict(s) for s in recipe.stages],
        # Every run this model's weights went through, oldest first (a continuation adds one).
        "lineage": [*state.get("lineage", []), {"recipe": recipe.name, "steps": done}],
    }
    save_whisper_checkpoint(model, tok, out / "checkpoint", extra)
    tmp = out / "trainer_state.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(out / "trainer_state.pt")
    (out / "train_log.json").write_text(json.dumps(state["log"][-2000:]))


def chunk_samples(recipe: WhisperRecipe) -> int:
    return audio.chunk_samples(recipe.dims.get("chunk_ms", audio.CHUNK_MS))


def precompute_frames(
    data: list[Path],
    frames_dir: Path,
    shard: tuple[int, int] = (0, 1),
    whisper_dir: Path | None = None,
    log=print,
) -> None:
    """Encode streams `i % n == k` of `data` (run n processes to use n cores)."""
    from soundflow.train.whisper_ckpt import load_whisper

    source = ShardSource(data)
    model, _ = WhisperSoundFlow.from_whisper(load_whisper(whisper_dir), [])
    cache = FrameCache(source, model, frames_dir)
    k, n = shard
    t0 = time.time()
    mine = [i for i in range(len(source)) if i % n == k]
    with torch.no_grad():
        for j, i in enumerate(mine):
            cache.get(i)
            log(f"frames shard {k}/{n}: {j + 1}/{len(mine)} streams ({time.time() - t0:.0f} s)")
