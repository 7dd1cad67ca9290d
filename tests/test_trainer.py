"""The one trainer with the smallest kind that plugs in (a linear model on drawn points):
the schedule, loss terms logged per step, and a resume that ends where a straight run does."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from soundflow.train.kinds.decoder.kind import DecoderKind
from soundflow.train.kinds.decoder.model import LossTerms
from soundflow.train.kinds.whisper.recipes import ALL
from soundflow.train.kinds.whisper.recipes import Stage as WhisperStage
from soundflow.train.kinds.whisper.train import WhisperKind
from soundflow.train.trainer import Kind, Plan, Position, lr_at, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class Stage:
    name: str
    steps: int
    lr: float
    warmup: int = 2
    trainable: str = "all"
    floor: ClassVar[float] = 0.1


class LineKind:
    """y = w x + b on points drawn from the step alone; the checkpoint is a torch file."""

    batch_size, weight_decay = 4, 0.0

    def __init__(self):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)

    def param_groups(self, stage):
        return [([self.model.weight], stage.lr), ([self.model.bias], stage.lr * 2)]

    def batches(self, stage, pos):
        g = torch.Generator().manual_seed(pos.stage * 1000 + pos.step)
        x = torch.randn(self.batch_size, 3, generator=g)
        return [(x, x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3)]

    def label_counts(self, batches):
        return {"n": float(sum(len(x) for x, _ in batches))}

    def loss_terms(self, model, batch, totals):
        x, y = batch
        mse = ((model(x) - y) ** 2).sum() / totals["n"]
        return LossTerms(loss=mse, lm=mse, stream=mse.detach() * 0)

    def evaluate(self, stage):
        return None

    def save(self, out: Path, weights, extra, pos):
        torch.save({"weights": weights, "extra": extra}, out / "model.pt")


PLAN = Plan("line", (Stage("a", 5, 0.3), Stage("b", 6, 0.2)), log_every=3, ckpt_every=4)


def quiet(*_):
    pass


def test_kinds_are_kinds():
    assert isinstance(LineKind(), Kind)
    for cls in (DecoderKind, WhisperKind):  # what the protocol asks of a kind, each has
        assert all(hasattr(cls, m) for m in ("param_groups", "batches", "loss_terms", "save"))


def test_schedule_warms_up_then_decays_to_the_floor():
    s = Stage("a", 12, 1.0, warmup=4)
    lrs = [lr_at(i, s, 1.0) for i in range(s.steps)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))
    assert lr_at(s.steps, s, 1.0) == pytest.approx(0.1)  # the floor, a tenth
    w = WhisperStage("x", 300, 1e-4, "decoder", ALL)
    assert w.warmup == 20 and lr_at(300, w, 1e-4) == pytest.approx(0.0, abs=1e-20)


def test_straight_and_resumed_runs_end_on_the_same_weights(tmp_path):
    straight = LineKind()
    (tmp_path / "s").mkdir()
    metrics = train(PLAN, straight, tmp_path / "s", log=quiet)
    rows = [json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").open()]
    assert [r["step"] for r in rows] == list(range(1, 12))
    losses = [r["loss"] for r in rows]
    assert sum(losses[-3:]) < sum(losses[:3]) / 2  # it learns
    assert metrics["step"] == 11 and metrics["stage"] == "b"

    (tmp_path / "r").mkdir()
    first = LineKind()
    train(PLAN, first, tmp_path / "r", until=7, log=quiet)  # mid-stage "b"
    state = json.loads((tmp_path / "r" / "trainer_state" / "state.json").read_text())
    assert Position(**state) == Position(1, 2, 7)
    second = LineKind()  # a fresh process: weights come back from the checkpoint
    second.model.load_state_dict(torch.load(tmp_path / "r" / "model.pt")["weights"])
    train(PLAN, second, tmp_path / "r", resume=True, log=quiet)
    for a, b in zip(straight.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
    saved = torch.load(tmp_path / "r" / "model.pt")["extra"]
    assert saved == {"recipe": "line", "step": 11, "stage": "b"}
