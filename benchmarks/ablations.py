"""Ablations of the default recipe, as the paper reports them: the stream-loss weight
lambda in {0, 0.5, 1, 2} (decision accuracy vs LM quality) and the chunk length
0.2 / 0.4 / 0.8 s (quality vs latency). Each variant is trained, exported and scored by
`soundflow eval` through the runtime; one JSON row per variant.

    python benchmarks/ablations.py --data runs/data/train --eval-data runs/data/eval \
        --steps 1200 --out runs/ablations --json benchmarks/results/ablations.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

# chunk_ms -> adapter_stack, so every chunk length gets a whole number of embeddings
STACK = {200: 1, 400: 2, 800: 2}


def variants(which: str) -> list[tuple[str, dict]]:
    out = []
    if which in ("lambda", "all"):
        out += [(f"lambda={lam}", {"lambda_stream": lam}) for lam in (0.0, 0.5, 1.0, 2.0)]
    if which in ("chunk", "all"):
        out += [(f"chunk={ms}ms", {"chunk_ms": ms}) for ms in (200, 400, 800)]
    return out


def recipe_for(change: dict, steps: int):
    from soundflow.train.recipes import get_recipe

    recipe = get_recipe("default", steps=steps)
    if "lambda_stream" in change:
        loss = dataclasses.replace(recipe.train.loss, lambda_stream=change["lambda_stream"])
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, loss=loss))
    if "chunk_ms" in change:
        ms = change["chunk_ms"]
        model = dataclasses.replace(recipe.model, chunk_ms=ms, adapter_stack=STACK[ms])
        # the same seconds of audio per segment whatever the chunk length
        stages = tuple(
            dataclasses.replace(s, chunks_per_sample=max(2, s.chunks_per_sample * 400 // ms))
            for s in recipe.stages
        )
        recipe = dataclasses.replace(recipe, model=model, stages=stages)
    return dataclasses.replace(
        recipe, name=f"default-ablation-{'-'.join(f'{k}{v}' for k, v in change.items())}"
    )


def run_variant(name: str, change: dict, args, done: dict[str, dict]) -> dict:
    from soundflow.export.onnx_export import export_bundle
    from soundflow.train.evaluate import evaluate_bundle
    from soundflow.train.run import run

    # lambda=1 and chunk=400 ms are both the unchanged recipe: train it once
    effective = {k: v for k, v in change.items() if v != {"lambda_stream": 1.0, "chunk_ms": 400}[k]}
    key = "-".join(f"{k}_{v}" for k, v in effective.items()) or "baseline"
    if key in done:
        return {**done[key], "variant": name, **change}
    work = Path(args.out) / key
    trained = work / "train_metrics.json"  # a rerun skips variants already trained
    if trained.is_file():
        metrics = json.loads(trained.read_text())
    else:
        t0 = time.time()
        metrics = run(
            recipe_for(change, args.steps),
            work / "ck",
            data=Path(args.data),
            eval_data=Path(args.eval_data),
            resume=True,
            log=lambda *_: None,
        )
        metrics["train_seconds"] = round(time.time() - t0, 1)
        trained.write_text(json.dumps(metrics) + "\n")
    export_bundle(work / "ck", work / "bundle", log=lambda *_: None)
    report = evaluate_bundle(work / "bundle", args.eval_data, max_streams=args.max_streams)
    done[key] = {
        "variant": name,
        **change,
        "steps": args.steps,
        "train_seconds": metrics["train_seconds"],
        "final_lm_loss": metrics.get("lm"),
        "final_stream_loss": metrics.get("stream"),
        "eval_control_accuracy": metrics.get("eval_control_accuracy"),
        "eval_respond_recall": metrics.get("eval_respond_recall"),
        "wer": report["wer"],
        "trigger_accuracy": report["trigger_accuracy"],
        "false_alerts_per_hour": report["false_alerts_per_hour"],
        "assist_exact_match": report["assist_exact_match"],
        "trigger_delay_s_median": report["alert"]["trigger_delay_s_median"],
        "decision_ms_p50": report["runtime"]["decision_ms_p50"],
    }
    return done[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--eval-data", required=True)
    ap.add_argument(
        "--steps", type=int, default=1200, help="total steps per variant (stages scaled)"
    )
    ap.add_argument("--which", choices=("lambda", "chunk", "all"), default="all")
    ap.add_argument("--max-streams", type=int, default=None, help="eval streams per variant")
    ap.add_argument("--out", default="runs/ablations")
    ap.add_argument("--json", default="benchmarks/results/ablations.json")
    args = ap.parse_args()
    rows, done = [], {}
    for name, change in variants(args.which):
        rows.append(run_variant(name, change, args, done))
        print(json.dumps(rows[-1]))
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
