#!/usr/bin/env bash
# Rebuilds the embedded default bundle (soundflow/assets/default_bundle) from its recipe.
#   ./scripts/build_default_bundle.sh default   # the real default: 20 h of data, ~2 h on 2 cores
#   ./scripts/build_default_bundle.sh smoke     # the untrained stand-in, about a minute
# Training resumes if interrupted: rerun the same command (WORK keeps the run).
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE="${1:-default}"
WORK="${WORK:-runs}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # one thread trains this small model fastest
if [ "$RECIPE" = "smoke" ]; then
  soundflow train --recipe smoke --out "$WORK/smoke"
  soundflow export "$WORK/smoke" --out soundflow/assets/default_bundle
  rm -f soundflow/assets/demo.flac  # the smoke model gets the generated tone scene
else
  soundflow data build --recipe default --hours 20 --seed 2 --workers 2 --out "$WORK/data/train"
  soundflow data build --recipe default --hours 1 --seed 2 --workers 2 --split eval \
    --out "$WORK/data/eval"
  # Two data-parallel processes of one thread each use 2 cores best (1.8x one process).
  soundflow train --recipe "$RECIPE" --data "$WORK/data/train" --eval-data "$WORK/data/eval" \
    --out "$WORK/$RECIPE" --resume --nproc "${NPROC:-2}" ${UNTIL:+--until "$UNTIL"}
  soundflow export "$WORK/$RECIPE" --out soundflow/assets/default_bundle
  python scripts/make_demo.py "$WORK/data/eval" soundflow/assets/demo.flac
  soundflow eval --data "$WORK/data/eval" --json "$WORK/eval.json"
fi
du -sh soundflow/assets/default_bundle
