"""Commands that need the train extra: a missing module of it is one line with the install
command, not a traceback (`soundflow data`, `eval`, `calibrate`, `tagger`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

# What `pip install 'soundflow[train]'` brings; the runtime alone has none of them.
TRAIN_MODULES = {
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "onnx",
    "onnxscript",
    "tqdm",
    "matplotlib",
    "scipy",
}


@contextmanager
def train_extra(command: str) -> Iterator[None]:
    """Turn a ModuleNotFoundError for a train-extra module into a ClickException."""
    try:
        yield
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in TRAIN_MODULES:
            raise
        raise click.ClickException(
            f"`soundflow {command}` needs the train extra ({err.name} is not installed): "
            "pip install 'soundflow[train]'"
        ) from None


class TrainCommand(click.Command):
    """A command whose run imports the train extra (`@click.command(cls=TrainCommand)`)."""

    def invoke(self, ctx: click.Context):
        with train_extra(self.name or ctx.info_name or ""):
            return super().invoke(ctx)
