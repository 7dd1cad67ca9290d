"""Writes tests/data/default_outputs.json: what the embedded default bundle answers, in fast
mode, on the shipped demo clip in each mode (captions, both alert deciders, answers). A
refactor that must not change behaviour keeps this file as it is; a change that means to
alter outputs (new weights, a new policy) regenerates it and says so in its commit:

    python tests/data/make_default_outputs.py
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).with_name("default_outputs.json")
# (name, mode, run-time overrides): every decider the default bundle ships
RUNS = (
    ("transcribe", "transcribe", {}),
    ("alert", "alert", {}),
    ("alert_audioset", "alert", {"alerts": "audioset"}),
    ("assist", "assist", {}),
)
PROB_DIGITS = 4  # probabilities compared to this many digits: threads may reorder a sum


def demo_pcm():
    import soundfile as sf

    from soundflow.runtime.bundle import default_bundle_dir

    pcm, rate = sf.read(default_bundle_dir().parent / "demo.flac", dtype="float32")
    assert rate == 16000
    return pcm


def outputs(engine, pcm) -> dict:
    """Each run's responses (time, chunk, raw text, tags, probability) and its counts."""
    from soundflow.train.evaluate import run_stream

    out = {}
    for name, mode, overrides in RUNS:
        responses, summary = run_stream(engine, pcm, mode, **overrides)
        out[name] = {
            "chunks": summary.chunks,
            "responses": [
                {
                    "t": round(r.t, 3),
                    "chunk": r.chunk,
                    "raw": r.raw,
                    "tags": r.tags,
                    "probability": round(r.probability, PROB_DIGITS),
                    "classes": list(r.classes) if r.classes else None,
                    "onset": r.onset,
                }
                for r in responses
            ],
        }
    return out


def main() -> None:
    from soundflow.runtime.kinds import open_engine

    OUT.write_text(json.dumps(outputs(open_engine(), demo_pcm()), indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
