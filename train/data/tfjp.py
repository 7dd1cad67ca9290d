"""TFJP (time-frequency joint preprocessing): make short clips stitch into long streams.

Clip excess silence, estimate the noise floor, locate the informative core, align clip
boundaries to half a chunk, and cross-fade joins in a short-window spectral domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from soundflow.audio import CHUNK_SAMPLES, SAMPLE_RATE

HALF_CHUNK = CHUNK_SAMPLES // 2  # 200 ms at the default chunk; 100 and 400 ms chunks divide it


@dataclass(frozen=True)
class TFJPConfig:
    frame_ms: int = 10  # analysis frame for energies
    floor_percentile: float = 10.0  # quiet frames define the noise floor
    active_margin_db: float = 12.0  # a frame this far above the floor is "active"
    max_silence_s: float = 0.6  # longer inner silences are shortened to this
    join_ms: int = 20  # overlap of a spectral cross-fade
    join_fft: int = 64  # STFT window of the cross-fade (4 ms): short so transients stay put
    half_chunk: int = HALF_CHUNK  # samples; boundaries are aligned to multiples of this


def frame_db(x: np.ndarray, frame: int) -> np.ndarray:
    """Per-frame RMS level in dBFS. x: (samples,) -> (frames,)."""
    n = max(1, len(x) // frame)
    seg = np.zeros(n * frame, np.float64)
    seg[: min(len(x), n * frame)] = x[: n * frame]
    rms = np.sqrt(np.mean(seg.reshape(n, frame) ** 2, axis=1))
    return 20 * np.log10(rms + 1e-9)


def noise_floor_db(x: np.ndarray, cfg: TFJPConfig = TFJPConfig()) -> float:
    """The level (dBFS) of the quiet frames: a low percentile of frame levels."""
    frame = SAMPLE_RATE * cfg.frame_ms // 1000
    return float(np.percentile(frame_db(x, frame), cfg.floor_percentile))


def active_frames(x: np.ndarray, cfg: TFJPConfig = TFJPConfig()) -> np.ndarray:
    """Boolean (frames,): frames loud enough above the floor to carry information."""
    frame = SAMPLE_RATE * cfg.frame_ms // 1000
    db = frame_db(x, frame)
    floor = float(np.percentile(db, cfg.floor_percentile))
    # A clip that is all signal (a tone bed) has floor ~ peak: then every frame counts.
    if db.max() - floor < cfg.active_margin_db:
        return db > db.max() - cfg.active_margin_db
    return db > floor + cfg.active_margin_db


def core_span(x: np.ndarray, cfg: TFJPConfig = TFJPConfig()) -> tuple[int, int]:
    """(start, end) samples of the informative core: first to last active frame."""
    frame = SAMPLE_RATE * cfg.frame_ms // 1000
    act = np.nonzero(active_frames(x, cfg))[0]
    if len(act) == 0:
        return 0, len(x)
    return int(act[0]) * frame, min(len(x), (int(act[-1]) + 1) * frame)


def smooth_join(a: np.ndarray, b: np.ndarray, cfg: TFJPConfig = TFJPConfig()) -> np.ndarray:
    """Concatenate a and b through a spectral cross-fade over `join_ms` (length shrinks by it).

    Per STFT bin the fade interpolates magnitudes, so two sides in opposite phase do not
    cancel (a plain linear fade dips to zero there), and the first/last frames are exactly
    a's tail and b's head, so the seam has neither a step nor a gap.
    """
    overlap = min(SAMPLE_RATE * cfg.join_ms // 1000, len(a), len(b))
    if overlap < 2 * cfg.join_fft:
        return np.concatenate([a, b]).astype(np.float32)
    tail, head = a[-overlap:].astype(np.float64), b[:overlap].astype(np.float64)
    nfft, hop = cfg.join_fft, cfg.join_fft // 4
    kw = dict(fs=1.0, window="hann", nperseg=nfft, noverlap=nfft - hop)
    _, t, ta = signal.stft(tail, **kw)
    _, _, hb = signal.stft(head, **kw)
    # Weight 1 while a frame still touches the tail's start, 0 once it touches the end.
    ramp = np.clip((t - nfft / 2) / max(1.0, overlap - nfft), 0.0, 1.0)
    w = 0.5 * (1 + np.cos(np.pi * ramp))  # (frames,) 1 -> 0
    mix = w * ta + (1 - w) * hb
    target = w * np.abs(ta) + (1 - w) * np.abs(hb)
    gain = np.minimum(target / np.maximum(np.abs(mix), 1e-9), 4.0)
    gain[:, (w == 1) | (w == 0)] = 1.0
    # DC and Nyquist are real-valued: no phase to rotate, so a sign flip must pass through 0.
    gain[0], gain[-1] = 1.0, 1.0
    _, seam = signal.istft(mix * gain, **kw)
    seam = seam[:overlap]
    return np.concatenate([a[:-overlap], seam, b[overlap:]]).astype(np.float32)


def clip_silence(x: np.ndarray, cfg: TFJPConfig = TFJPConfig()) -> np.ndarray:
    """Shorten every inactive run longer than `max_silence_s` to that length.

    Leading and trailing silence are clipped the same way; the cut is a smooth join.
    """
    frame = SAMPLE_RATE * cfg.frame_ms // 1000
    act = active_frames(x, cfg)
    max_frames = int(cfg.max_silence_s * 1000 / cfg.frame_ms)
    join_frames = int(np.ceil(cfg.join_ms / cfg.frame_ms))
    pieces: list[tuple[int, int]] = []  # kept sample ranges
    keep_from, i, n = 0, 0, len(act)
    while i < n:
        if act[i]:
            i += 1
            continue
        j = i
        while j < n and not act[j]:
            j += 1
        if j - i > max_frames:
            # Keep half the bound on each side; the join eats `join_frames` of it.
            half = (max_frames - join_frames) // 2
            pieces.append((keep_from, (i + half + join_frames) * frame))
            keep_from = (j - half) * frame
        i = j
    pieces.append((keep_from, len(x)))
    out = x[pieces[0][0] : pieces[0][1]].astype(np.float32)
    for lo, hi in pieces[1:]:
        out = smooth_join(out, x[lo:hi], cfg)
    return out


def align_half_chunk(
    x: np.ndarray, onset: int, cfg: TFJPConfig = TFJPConfig()
) -> tuple[np.ndarray, int]:
    """Pad so the onset sample and the clip's end both fall on half-chunk multiples.

    Placed at a half-chunk multiple, the clip's onset then lands on a chunk start or a
    chunk middle, never a few samples before a decision boundary. Returns (clip, onset).
    """
    half = cfg.half_chunk
    lead = (-onset) % half
    total = len(x) + lead
    trail = (-total) % half
    y = np.concatenate(
        [np.zeros(lead, np.float32), x.astype(np.float32), np.zeros(trail, np.float32)]
    )
    return y, onset + lead


def fade_edges(x: np.ndarray, ms: float = 10.0) -> np.ndarray:
    """Raised-cosine fade in/out so a clip added onto a bed starts and ends at zero."""
    n = min(len(x) // 2, int(SAMPLE_RATE * ms / 1000))
    if n == 0:
        return x
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))
    y = x.astype(np.float32).copy()
    y[:n] *= ramp
    y[-n:] *= ramp[::-1]
    return y


def prepare_clip(x: np.ndarray, cfg: TFJPConfig = TFJPConfig()) -> tuple[np.ndarray, int, int]:
    """The whole TFJP pass for one clip: clip silence, find the core, trim, fade, align.

    Returns (clip, onset, offset): samples of the core's start and end inside the clip.
    """
    y = clip_silence(x, cfg)
    start, end = core_span(y, cfg)
    pad = SAMPLE_RATE * cfg.frame_ms // 1000
    lo, hi = max(0, start - pad), min(len(y), end + pad)
    y = fade_edges(y[lo:hi], ms=cfg.frame_ms / 2)
    y, onset = align_half_chunk(y, start - lo, cfg)
    return y, onset, onset + (end - start)
