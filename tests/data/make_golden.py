"""Write the golden smoke checkpoint the test suite loads instead of retraining.

    python tests/data/make_golden.py        # -> tests/data/smoke_checkpoint/

`soundflow train --recipe smoke` (seeded: the recipe's `TrainConfig.seed`), kept to what a
checkpoint is (config.json, model.safetensors, tokenizer.json; no optimizer state or log).
Re-run it after a change to the model, the tokenizer or the checkpoint format, and commit
the result; tests/conftest.py exports the bundle from it once per session.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "smoke_checkpoint"
KEEP = ("config.json", "model.safetensors", "tokenizer.json")


def main() -> int:
    import torch

    from soundflow.train.kinds.decoder.recipes import get_recipe
    from soundflow.train.run import run

    torch.manual_seed(0)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        run(get_recipe("smoke"), Path(tmp), log=lambda *_: None)
        if OUT.exists():
            shutil.rmtree(OUT)
        OUT.mkdir(parents=True)
        for name in KEEP:
            shutil.copy2(Path(tmp) / name, OUT / name)
    size = sum((OUT / n).stat().st_size for n in KEEP)
    print(f"wrote {OUT} ({size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
