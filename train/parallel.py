"""How training is spread over ranks: one process, DDP (replicas), or FSDP (sharded
parameters, for decoders too large for one device); and how their state is saved.

Checkpoints and optimizer state are always gathered to full, unsharded tensors, so a run
written by N workers of one strategy resumes on M workers of any strategy.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

STRATEGIES = ("ddp", "fsdp")


def autocast(device: torch.device):
    """bf16 mixed precision on a GPU; full fp32 on the CPU (where it is not faster)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Parallel:
    def __init__(self, strategy: str, size: int):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy {strategy!r}: use one of {STRATEGIES}")
        self.strategy, self.size = strategy, size
        self.sharded = strategy == "fsdp" and size > 1

    def prepare(self, model: nn.Module) -> None:
        """FSDP shards once, in place: every decoder layer and encoder block is a unit."""
        if not self.sharded:
            return
        from torch.distributed.fsdp import fully_shard

        for layer in model.decoder.model.layers:
            fully_shard(layer)
        for block in model.encoder.blocks:
            fully_shard(block)
        fully_shard(model)

    def wrap(self, model: nn.Module) -> nn.Module:
        """What the step calls forward on. DDP is rebuilt per stage, since the set of
        trainable parameters changes; an FSDP model is its own wrapper."""
        if self.size > 1 and not self.sharded:
            return nn.parallel.DistributedDataParallel(model)
        return model

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Full CPU state dict. Collective under FSDP: every rank must call it."""
        if not self.sharded:
            return {k: v.detach().cpu() for k, v in model.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model, options=opts)

    def optimizer_state(self, model: nn.Module, opt: torch.optim.Optimizer) -> dict:
        if not self.sharded:
            return opt.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(model, opt, options=opts)

    def load_optimizer_state(
        self, model: nn.Module, opt: torch.optim.Optimizer, state: dict
    ) -> None:
        if not self.sharded:
            opt.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(model, opt, state, options=StateDictOptions(full_state_dict=True))
