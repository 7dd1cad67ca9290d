"""Audio constants shared by training, export and the runtime, with their units.

Derived values are computed here, never retyped elsewhere (whisper's audio.py habit).
"""

SAMPLE_RATE = 16_000  # Hz; every source is resampled to this, mono
CHUNK_MS = 400  # default decision interval; 200 and 800 are supported too
N_FFT = 400  # samples: 25 ms analysis window
HOP_LENGTH = 160  # samples: 10 ms between mel frames
N_MELS = 80  # mel bands of the log-mel frontend
F_MIN = 0.0  # Hz
F_MAX = SAMPLE_RATE / 2  # Hz

CHUNK_SAMPLES = SAMPLE_RATE * CHUNK_MS // 1000  # 6400 at 400 ms
FRAMES_PER_CHUNK = CHUNK_SAMPLES // HOP_LENGTH  # 40 mel frames at 400 ms
FRONTEND_OVERLAP = N_FFT - HOP_LENGTH  # samples carried between chunks: 240
SUPPORTED_CHUNK_MS = (200, 400, 800)
# YAMNet (the AudioSet branch, runtime/audioset.py) reads one 0.96 s patch: 96 frames of
# its own 64-band log-mel, inside its graph.
AUDIOSET_PATCH_MS = 960
AUDIOSET_PATCH_SAMPLES = SAMPLE_RATE * AUDIOSET_PATCH_MS // 1000  # 15360


def chunk_samples(chunk_ms: int) -> int:
    """Samples in one chunk of `chunk_ms`; refuses lengths the frontend cannot frame."""
    samples = SAMPLE_RATE * chunk_ms // 1000
    if samples * 1000 != SAMPLE_RATE * chunk_ms or samples % HOP_LENGTH:
        raise ValueError(
            f"chunk length {chunk_ms} ms is not a whole number of {HOP_LENGTH}-sample hops; "
            f"use one of {SUPPORTED_CHUNK_MS} ms"
        )
    return samples


def chunk_seconds(chunk_ms: int) -> float:
    return chunk_ms / 1000.0
