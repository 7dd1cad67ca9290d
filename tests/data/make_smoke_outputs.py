"""Writes tests/data/smoke_outputs.npz: the golden smoke checkpoint's outputs on a fixed
input (its adapter embeddings and its decoder's logits over them), which test_golden.py
compares with what the model code computes now. Re-run it with make_golden.py:

    python tests/data/make_smoke_outputs.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "smoke_outputs.npz"
SEED = 7
CHUNKS = 3


def compute(checkpoint: Path = HERE / "smoke_checkpoint") -> dict[str, np.ndarray]:
    """Embeddings and the last positions' logits of a fixed seeded input, float32."""
    import torch

    from soundflow import audio
    from soundflow.train.checkpoint import load_checkpoint

    torch.manual_seed(0)
    model, _, _ = load_checkpoint(checkpoint)
    model.eval()
    rng = np.random.default_rng(SEED)
    pcm = (0.1 * rng.standard_normal(CHUNKS * audio.CHUNK_SAMPLES)).astype(np.float32)
    with torch.no_grad():
        embeds, _ = model.audio_embeds(torch.from_numpy(pcm)[None])
        logits = model.decoder(inputs_embeds=embeds).logits
    return {"embeds": embeds[0].numpy(), "logits": logits[0, -4:].numpy()}


def main() -> None:
    np.savez_compressed(OUT, **compute())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
