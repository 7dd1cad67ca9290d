#!/usr/bin/env bash
# Rebuilds the embedded default bundle (soundflow/assets/default_bundle) from its recipe.
# Today that is the smoke recipe: an untrained stand-in, labelled so in its manifest.
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE="${1:-smoke}"
WORK="${WORK:-$(mktemp -d)}"
soundflow train --recipe "$RECIPE" --out "$WORK/ck"
soundflow export "$WORK/ck" --out soundflow/assets/default_bundle
du -sh soundflow/assets/default_bundle
