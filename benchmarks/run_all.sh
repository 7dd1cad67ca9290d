#!/usr/bin/env bash
# Every figure in benchmarks/README.md, one command each, in the order they were run.
# Usage: benchmarks/run_all.sh [RESULTS_DIR] [BUNDLE]   (BUNDLE default: the embedded one)
# Needs: pip install -e '.[train,bench]' (torch for `size`, pocketsphinx for `peer`) and the
# default data recipe's sources (scripts/setup-dev.sh) for the `peer` eval split.
set -euo pipefail
out=${1:-benchmarks/results}
bundle=${2:+--bundle $2}
work=${SOUNDFLOW_BENCH_WORK:-/tmp/soundflow-bench}
mkdir -p "$out" "$work"
soundflow bench latency $bundle --seconds 120 --json "$out/latency.json"
soundflow bench scale $bundle --minutes 60 --json "$out/scale.json"
soundflow bench soak $bundle --hours 8 --json "$out/soak.json"
soundflow bench size --sizes tiny,small,qwen2-0.5b --work "$work/size" --json "$out/size.json"
# FIFO against sync where generation is slow enough to matter: the random-weight "small"
# bundle (384 wide, 8 layers) that `bench size` just built.
soundflow bench latency --bundle "$work/size/small-v32768/bundle" --seconds 60 \
  --json "$out/latency_small.json"
soundflow data build --recipe default --split eval --hours 0.3 --seed 0 --out "$work/eval"
soundflow bench peer $bundle --data "$work/eval" --json "$out/peer.json"
# alert mode on real sounds held out of training (Tux Paint), every alert path of the bundle
soundflow bench alerts $bundle --json "$out/alerts.json"
