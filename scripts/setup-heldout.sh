#!/usr/bin/env bash
# Installs what the benchmarks need beyond setup-dev.sh: held-out recordings of packages
# design.md does not allow for training (train/heldout.py's HELD_OUT: the noise beds of
# `python -m soundflow.benchmarks.noisy_captions` and the benign audio of the alert bench)
# and stress-ng for the under-load rows. About 400 MB, mostly widelands-data.
set -euo pipefail
# asterisk-core-sounds-en(-wav): the real recorded prompts of train/heldout.py's `asterisk` set
# (the wav files, and the transcript file the other package ships).
PACKAGES=(widelands-data minetest-data stress-ng asterisk-core-sounds-en-wav asterisk-core-sounds-en)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
echo "installed: ${PACKAGES[*]}"
