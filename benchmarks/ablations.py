"""Ablations as the paper reports them: the stream-loss weight lambda in {0, 0.5, 1, 2}
(decision accuracy vs LM quality) and the chunk length 0.2 / 0.4 / 0.8 s (quality vs
latency). Each variant is trained, exported and scored by `soundflow eval` through the
runtime; one JSON row per variant. Three ways to pay for it:

    # from scratch, any recipe (the default recipe needs hours per variant on a CPU)
    python benchmarks/ablations.py --recipe default --data runs/data/train \
        --eval-data runs/data/eval --steps 8000
    # lambda only, as a fine-tune: each variant reruns the last stage of a finished run
    # from the checkpoint where the stage before it ended (`soundflow train --until`)
    python benchmarks/ablations.py --which lambda --from-run runs/default-stage3 \
        --data runs/data/train --eval-data runs/data/eval --steps 300
    # the smoke recipe on generated tone streams: both ablations in minutes
    python benchmarks/ablations.py --recipe smoke --json benchmarks/results/ablations_smoke.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

# chunk_ms -> adapter_stack, so every chunk length gets a whole number of embeddings
STACK = {200: 1, 400: 2, 800: 2}
UNCHANGED = {"lambda_stream": 1.0, "chunk_ms": 400}


def variants(which: str) -> list[tuple[str, dict]]:
    out = []
    if which in ("lambda", "all"):
        out += [(f"lambda={lam}", {"lambda_stream": lam}) for lam in (0.0, 0.5, 1.0, 2.0)]
    if which in ("chunk", "all"):
        out += [(f"chunk={ms}ms", {"chunk_ms": ms}) for ms in (200, 400, 800)]
    return out


def recipe_for(change: dict, args):
    from soundflow.train.kinds.decoder.recipes import get_recipe

    if args.from_run:  # a fine-tune: only the last stage runs, for --steps
        recipe = get_recipe(args.recipe)
        last = dataclasses.replace(recipe.stages[-1], steps=args.steps)
        recipe = dataclasses.replace(recipe, stages=(*recipe.stages[:-1], last))
    else:
        recipe = get_recipe(args.recipe, steps=args.steps)
    if "lambda_stream" in change:
        loss = dataclasses.replace(recipe.train.loss, lambda_stream=change["lambda_stream"])
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, loss=loss))
    if "chunk_ms" in change:
        ms = change["chunk_ms"]
        stack = STACK[ms] if recipe.model.adapter_stack == 2 else recipe.model.adapter_stack
        model = dataclasses.replace(recipe.model, chunk_ms=ms, adapter_stack=stack)
        # the same seconds of audio per segment whatever the chunk length
        stages = tuple(
            dataclasses.replace(s, chunks_per_sample=max(2, s.chunks_per_sample * 400 // ms))
            for s in recipe.stages
        )
        recipe = dataclasses.replace(recipe, model=model, stages=stages)
    tag = "-".join(f"{k}{v}" for k, v in change.items())
    return dataclasses.replace(recipe, name=f"{args.recipe}-ablation-{tag}")


def start_from(run_dir: Path, ck: Path, stages: int) -> None:
    """Copy a run stopped where its second-to-last stage ended into `ck`, to resume from."""
    state = json.loads((run_dir / "trainer_state" / "state.json").read_text())
    from soundflow.train.kinds.decoder.recipes import get_recipe

    recipe = get_recipe(json.loads((run_dir / "recipe.json").read_text())["name"])
    before = recipe.stages[stages - 2]
    if (state["stage"], state["step"]) != (stages - 2, before.steps):
        raise SystemExit(
            f"--from-run {run_dir} is at stage {state['stage']} step {state['step']}; it must "
            f"stop where stage {before.name!r} ends (soundflow train --until "
            f"{sum(s.steps for s in recipe.stages[: stages - 1])})"
        )
    if not ck.exists():
        shutil.copytree(run_dir, ck)


def run_variant(name: str, change: dict, args, done: dict[str, dict]) -> dict:
    from soundflow.export.onnx_export import export_bundle
    from soundflow.train.evaluate import evaluate_bundle
    from soundflow.train.run import run

    # lambda=1 and chunk=400 ms are both the unchanged recipe: train it once
    effective = {k: v for k, v in change.items() if v != UNCHANGED[k]}
    key = "-".join(f"{k}_{v}" for k, v in effective.items()) or "baseline"
    if key in done:
        shared = {k: v for k, v in done[key].items() if k not in UNCHANGED}
        return {**shared, "variant": name, **change}
    work = Path(args.out) / key
    trained = work / "train_metrics.json"  # a rerun skips variants already trained
    if trained.is_file():
        metrics = json.loads(trained.read_text())
    else:
        recipe = recipe_for(change, args)
        if args.from_run:
            start_from(Path(args.from_run), work / "ck", len(recipe.stages))
        t0 = time.time()
        metrics = run(
            recipe,
            work / "ck",
            data=Path(args.data) if args.data else None,
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
        "eval_lm_loss": metrics.get("eval_lm"),
        "eval_control_accuracy": metrics.get("eval_control_accuracy"),
        "eval_respond_recall": metrics.get("eval_respond_recall"),
        "wer": report["wer"],
        "trigger_accuracy": report["trigger_accuracy"],
        "alert_f1": report["alert"]["f1"],
        "false_alerts_per_hour": report["false_alerts_per_hour"],
        "assist_exact_match": report["assist_exact_match"],
        "trigger_delay_s_median": report["alert"]["trigger_delay_s_median"],
        "decision_ms_p50": report["runtime"]["decision_ms_p50"],
    }
    return done[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="default", choices=("default", "smoke"))
    ap.add_argument("--data", help="training streams (the smoke recipe generates its own)")
    ap.add_argument("--eval-data", help="eval streams (smoke: a generated toy split)")
    ap.add_argument("--steps", type=int, default=None, help="steps per variant (stages scaled)")
    ap.add_argument("--from-run", help="fine-tune: rerun the last stage from this run")
    ap.add_argument("--which", choices=("lambda", "chunk", "all"), default="all")
    ap.add_argument("--max-streams", type=int, default=None, help="eval streams per variant")
    ap.add_argument("--out", default="runs/ablations")
    ap.add_argument("--json", default="benchmarks/results/ablations.json")
    args = ap.parse_args()
    if args.from_run and args.which != "lambda":
        ap.error("--from-run fine-tunes a trained model: only --which lambda keeps its shapes")
    if args.from_run and not args.steps:
        ap.error("--from-run needs --steps (the length of the rerun last stage)")
    if args.eval_data is None:
        if args.recipe != "smoke":
            ap.error("--eval-data is required for the default recipe")
        from soundflow.train.smoke import write_toy_split

        args.eval_data = str(Path(args.out) / "toy_eval")
        if not (Path(args.eval_data) / "streams.jsonl").is_file():
            write_toy_split(args.eval_data)
    rows, done = [], {}
    for name, change in variants(args.which):
        rows.append(run_variant(name, change, args, done))
        print(json.dumps(rows[-1]), flush=True)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
