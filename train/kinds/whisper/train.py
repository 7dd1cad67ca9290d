"""The Whisper kind for the one trainer (train/trainer.py): the encoder stays frozen, so every
stream is encoded once (its frames cached on disk) and only the decoder trains on them.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from soundflow import audio, protocol
from soundflow.train.dataset import ShardSource, chunk_targets
from soundflow.train.kinds.decoder.model import LossTerms
from soundflow.train.kinds.whisper.model import (
    IGNORE,
    WhisperSoundFlow,
    cross_layout,
    load_whisper_checkpoint,
    save_whisper_checkpoint,
    segment_losses,
)

# The recipes (plain data) sit below both this kind and train/kinds/whisper/warmstart.py, which
# reads a bundle's recipe; their names stay importable from here.
from soundflow.train.kinds.whisper.recipes import (  # noqa: F401
    ALL,
    INSTRUCTION,
    PHRASES,
    RECIPES,
    Stage,
    WhisperRecipe,
)
from soundflow.train.trainer import Plan, Position, train

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


class WhisperKind:
    """The Whisper kind for train/trainer.py: cached frames -> one batch per step -> the
    decoder's loss terms L = L_lm + lam * L_stream; its checkpoint keeps the lineage."""

    weight_decay = 0.0

    def __init__(
        self,
        recipe: WhisperRecipe,
        model: WhisperSoundFlow,
        tok,
        cache: FrameCache,
        ready_only: bool = False,
        lineage: list[dict] | None = None,
    ):
        self.recipe, self.model, self.tok, self.cache = recipe, model, tok, cache
        self.batch_size = recipe.batch
        self.ready_only, self.lineage = ready_only, list(lineage or [])
        self.pool = cache.ready() if ready_only else None

    def param_groups(self, stage: Stage) -> list[tuple[list[torch.nn.Parameter], float]]:
        new, layers = set_trainable(self.model, stage.trainable)
        return [(new["params"], self.recipe.new_lr), (layers["params"], stage.lr)]

    def batches(self, stage: Stage, pos: Position) -> list:
        if self.ready_only and pos.step % 10 == 0:
            self.pool = self.cache.ready()
            if not self.pool:
                raise FileNotFoundError(f"no cached frames in {self.cache.root} yet")
        r, m = self.recipe, self.model
        return [make_batch(m, self.tok, self.cache, r, stage, pos.step, self.pool)]

    def label_counts(self, batches: list) -> dict[str, float]:
        lays = [lay for _, ls, _ in batches for lay in ls]
        return {
            "n_lm": float(sum(x != IGNORE for lay in lays for x in lay.lm)),
            "n_stream": float(sum(x != IGNORE for lay in lays for x in lay.control)),
        }

    def loss_terms(self, model, batch, totals: dict[str, float]) -> LossTerms:
        frames, layouts, lengths = batch
        losses = segment_losses(model, frames, layouts, lengths)
        lm = losses["lm"] / max(totals["n_lm"], 1.0)
        stream = losses["stream"] / max(totals["n_stream"], 1.0)
        return LossTerms(loss=lm + self.recipe.lam * stream, lm=lm, stream=stream)

    def evaluate(self, stage: Stage) -> None:
        return None  # held-out numbers come from `soundflow eval` on the exported bundle

    def save(self, out: Path, weights: dict, extra: dict, pos: Position) -> None:
        r = self.recipe
        extra = {
            "recipe": r.name,
            "stage": pos.stage,
            "step": pos.step,
            "stages": [asdict(s) for s in r.stages],
            # Every run this model's weights went through, oldest first (a continuation adds one).
            "lineage": [*self.lineage, {"recipe": r.name, "steps": pos.global_step}],
        }
        save_whisper_checkpoint(self.model, self.tok, out / "checkpoint", extra)


def plan(recipe: WhisperRecipe, ckpt_every: int = 200) -> Plan:
    """Checkpoints every `ckpt_every` steps (~4 min on 2 cores) and at each stage's end."""
    return Plan(
        recipe.name, recipe.stages, log_every=10, ckpt_every=ckpt_every, eval_every=ckpt_every
    )


def stage_end(recipe: WhisperRecipe, name: str) -> int:
    """The global step at which stage `name` ends (what --until-stage stops at)."""
    names = [s.name for s in recipe.stages]
    if name not in names:
        raise ValueError(f"recipe {recipe.name} has no stage {name!r}; stages: {names}")
    return sum(s.steps for s in recipe.stages[: names.index(name) + 1])


def train_whisper(
    recipe: WhisperRecipe,
    data: list[Path],
    out: Path,
    frames_dir: Path,
    whisper_dir: Path | None = None,
    resume: bool = True,
    until: int | None = None,
    until_stage: str | None = None,
    ckpt_every: int = 200,
    ready_only: bool = False,
    init_bundle: Path | None = None,
    log=print,
) -> Path:
    """Run (or continue, from OUT/trainer_state) the recipe's stages on the one trainer;
    returns the checkpoint directory. `until` / `until_stage`: stop at that global step /
    after that stage (checkpointed). `ready_only`: draw only from streams whose frames are
    cached already, rescanning as `precompute_frames` processes add more (trains while they
    encode; not reproducible sample for sample, so the recipe's default encodes everything
    first). `init_bundle`: a continuation recipe's starting point, a whisper-cross bundle."""
    from soundflow.train.kinds.whisper.ckpt import load_whisper

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = ShardSource(data)
    if until_stage is not None:
        end = stage_end(recipe, until_stage)
        until = end if until is None else min(until, end)
    resuming = resume and (out / "trainer_state" / "state.json").is_file()
    if resuming:
        model, tok, training = load_whisper_checkpoint(out / "checkpoint")
        lineage = training.get("lineage", [])[:-1]  # the last entry is this run's own
    else:
        if (out / "trainer_state.pt").is_file():
            raise ValueError(
                f"{out} holds a run of the old Whisper loop (trainer_state.pt), which "
                "--resume no longer reads: train into a fresh --out"
            )
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
            from soundflow.train.kinds.whisper.warmstart import bundle_lineage, model_from_bundle

            model, tok, _ = model_from_bundle(init_bundle, whisper_dir, log=log)
            missing = sorted(set(tags) - set(model.vocab.tags))
            if missing:
                raise ValueError(f"{init_bundle} has no tokens for the data's tags {missing}")
            lineage = bundle_lineage(init_bundle)
        else:
            model, tok = WhisperSoundFlow.from_whisper(
                load_whisper(whisper_dir), tags, **recipe.dims
            )
    cache = FrameCache(source, model, frames_dir)
    if not ready_only:
        cache.fill(log)
    kind = WhisperKind(recipe, model, tok, cache, ready_only=ready_only, lineage=lineage)
    train(plan(recipe, ckpt_every), kind, out, resume=resuming, until=until, log=log)
    return out / "checkpoint"


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
    from soundflow.train.kinds.whisper.ckpt import load_whisper

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
