"""How to stream Whisper tiny.en's encoder, measured: each way's frames are read by Whisper's
own (frozen, never fine-tuned) decoder, so the WER says how much of the full-context frames'
information survives. Sets are held out of training: flite voices rms/awb on eval-split
sentences and Tux Paint's real spoken descriptions.

    python benchmarks/whisper_streaming.py --json benchmarks/results/whisper_streaming.json

Ways: `full` (the whole utterance in Whisper's 30 s window: the ceiling); `spliced-L` (each
400 ms chunk re-encoded with L s of left context, its newest 20 frames kept and spliced
after the earlier chunks'); `window-4` (the shipped memory: the last chunk's whole window,
the chunk + 4 s, read as one input); `causal-4` (one pass with a chunk-causal mask and 4 s
of left context: what a CarelessWhisper-style encoder computes, without the fine-tuning
it needs). Utterances are read from the stream's start and flite's are at most 4.4 s long,
so every way's frames cover the whole utterance (Tux Paint's clips are 1-3 s); the
`--offset` run puts 6 s of other speech before each one, the steady state of an always-on
stream.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from soundflow.audio import SAMPLE_RATE
from soundflow.protocol import MASK_VALUE
from soundflow.train.evaluate import edit_distance, normalize
from soundflow.train.kinds.whisper.ckpt import load_whisper
from soundflow.train.kinds.whisper.encoder import WhisperWindowEncoder, WindowConfig

MAX_UTTERANCE_S = 4.4  # the window: longer utterances would be cut by window-4, not misread


def flite_set(n: int = 12) -> list[tuple[np.ndarray, str]]:
    import soundfile as sf
    import soxr

    from soundflow.train.data import natural

    rng = np.random.default_rng(3)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        while len(out) < n:
            text = natural.sentence(rng, "eval")
            wav = Path(tmp) / f"{len(out)}.wav"
            voice = ("rms", "awb")[len(out) % 2]
            subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(wav)], check=True)
            x, sr = sf.read(wav, dtype="float32")
            if len(x) / sr <= MAX_UTTERANCE_S:  # one window holds it: every way sees it all
                out.append((soxr.resample(x, sr, SAMPLE_RATE).astype(np.float32), text))
    return out


def tuxpaint_set(n: int = 12) -> list[tuple[np.ndarray, str]]:
    import soundfile as sf
    import soxr

    files = sorted(Path("/usr/share/tuxpaint/stamps").rglob("*_desc.ogg"))[:n]
    out = []
    for f in files:
        txt = f.with_name(f.name[: -len("_desc.ogg")] + ".txt")
        if not txt.is_file():
            continue
        x, sr = sf.read(f, dtype="float32")
        x = x.mean(1) if x.ndim > 1 else x
        out.append(
            (soxr.resample(x, sr, SAMPLE_RATE).astype(np.float32), txt.read_text().splitlines()[0])
        )
    return out


@torch.no_grad()
def causal_frames(hf_enc, pcm: np.ndarray, left_ms: int) -> np.ndarray:
    """One pass, block-causal: frame i sees its own chunk and `left_ms` before it."""
    from transformers import WhisperFeatureExtractor

    s = 6400
    pcm = np.pad(pcm, (0, -len(pcm) % s))
    mel = WhisperFeatureExtractor(feature_size=80)._np_extract_fbank_features(pcm[None], "cpu")
    x = torch.nn.functional.gelu(hf_enc.conv1(torch.from_numpy(mel)))
    x = torch.nn.functional.gelu(hf_enc.conv2(x)).transpose(1, 2)
    t = x.shape[1]
    x = x + hf_enc.embed_positions.weight[:t]
    chunk = torch.arange(t) // 20
    left = left_ms // 20
    i, j = torch.arange(t)[:, None], torch.arange(t)[None]
    ok = (chunk[j] <= chunk[i]) & (j >= (chunk[i] + 1) * 20 - 20 - left)
    mask = torch.where(ok, 0.0, MASK_VALUE)[None, None]
    enc = WhisperWindowEncoder(hf_enc, WindowConfig(400, 4000))
    for layer in enc.layers:
        b, n, d = x.shape
        h = layer.ln1(x)

        def split(z, b=b, n=n, d=d, heads=layer.heads):
            return z.view(b, n, heads, d // heads).transpose(1, 2)

        att = torch.nn.functional.scaled_dot_product_attention(
            split(layer.q(h)), split(layer.k(h)), split(layer.v(h)), attn_mask=mask
        )
        x = x + layer.o(att.transpose(1, 2).reshape(b, n, d))
        x = x + layer.fc2(torch.nn.functional.gelu(layer.fc1(layer.ln2(x))))
    return enc.norm(x)[0].numpy()


@torch.no_grad()
def transcribe(model, tok, frames: np.ndarray, ids: dict) -> str:
    from transformers.modeling_outputs import BaseModelOutput

    out = model.generate(
        encoder_outputs=BaseModelOutput(last_hidden_state=torch.from_numpy(frames)[None]),
        decoder_input_ids=torch.tensor([[ids["<|startoftranscript|>"], ids["<|notimestamps|>"]]]),
        max_new_tokens=60,
        # As the runtime does (runtime/kinds/whisper.py): without it, frames the decoder cannot read
        # make it loop to max_new_tokens, and the WER measures the loop, not the frames.
        no_repeat_ngram_size=3,
    )
    return tok.decode(out[0].tolist())


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="utterances per set")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--offset", action="store_true", help="6 s of other speech before each")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor

    ck = load_whisper()
    model = ck.model()
    tok = Tokenizer.from_file(str(ck.tokenizer_file))
    fe = WhisperFeatureExtractor(feature_size=80)
    enc = model.model.encoder
    sets = {"flite (rms, awb)": flite_set(args.n), "tuxpaint (real)": tuxpaint_set(args.n)}
    if args.offset:  # steady state: the window starts in earlier speech, not at silence
        lead = np.concatenate([p for p, _ in flite_set(4)])[: 6 * SAMPLE_RATE]
        sets = {
            k: [(np.concatenate([lead, p]), t, len(lead)) for p, t in v] for k, v in sets.items()
        }
    else:
        sets = {k: [(p, t, 0) for p, t in v] for k, v in sets.items()}
    ways = ["full", "spliced-2", "spliced-4", "window-4", "causal-4"]
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "sets": {}, "cost": {}}
    for name, items in sets.items():
        row = {}
        for way in ways:
            edits = words = 0
            for pcm, text, lead in items:
                if way == "full":  # the utterance alone: what offline Whisper would see
                    feats = fe(
                        pcm[lead:], sampling_rate=SAMPLE_RATE, return_tensors="pt"
                    ).input_features
                    frames = enc(feats).last_hidden_state[0].numpy()
                elif way.startswith("spliced"):
                    w = WhisperWindowEncoder(enc, WindowConfig(400, int(way[-1]) * 1000))
                    frames = w.chunk_frames(pcm)
                elif way == "window-4":
                    w = WhisperWindowEncoder(enc, WindowConfig(400, 4000))
                    windows, lengths = w.encode_offline(pcm)
                    frames = windows[-1, : lengths[-1]]
                else:
                    frames = causal_frames(enc, pcm, int(way[-1]) * 1000)
                if way.startswith(("spliced", "causal")) and lead:
                    frames = frames[lead // 320 :]  # the utterance's own frames
                hyp = transcribe(model, tok, frames, ck.token_ids)
                ref = normalize(text)
                edits += edit_distance(ref, normalize(hyp))
                words += len(ref)
            row[way] = round(edits / max(words, 1), 4)
        report["sets"][name] = row | {"utterances": len(items)}
    # Per-chunk cost on this machine's threads (torch; ONNX Runtime is in `soundflow bench`).
    for way, left in (("spliced-2", 2000), ("window-4", 4000)):
        w = WhisperWindowEncoder(enc, WindowConfig(400, left))
        x = torch.zeros(1, w.cfg.window_samples)
        with torch.no_grad():
            w.encode_window(x)
            t0 = time.perf_counter()
            for _ in range(20):
                w.encode_window(x)
        report["cost"][way] = {
            "ms_per_chunk": round((time.perf_counter() - t0) / 20 * 1000, 1),
            "state_bytes": w.cfg.history_samples * 4,
        }
    # The causal way's cost per chunk: 20 new frames attending to a cached (L + 0.4) s.
    layers, d = len(enc.layers), enc.config.d_model
    report["cost"]["causal-4"] = {
        "ms_per_chunk": None,
        "state_bytes": layers * 2 * 220 * d * 4,
        "note": "not timed: untrained (see WER); ~1/11 of window-4's FLOPs by construction",
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
