#!/usr/bin/env bash
# Installs everything the tests and the training recipes need on a fresh Debian/Ubuntu
# machine: the synthesizers and audio stack from apt, then soundflow with all extras.
set -euo pipefail
cd "$(dirname "$0")/.."

# sound-theme-freedesktop: tests/test_alert_head.py rings its phone through the default bundle.
APT_PACKAGES=(
  espeak-ng libespeak-ng1 festival festvox-kallpc16k festvox-us-slt-hts sox flac libsndfile1
  libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins fortunes wordnet-base
  flite tuxpaint-stamps-default tuxpaint-data sound-theme-freedesktop
)
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
else
  echo "setup-dev.sh: no apt-get; install these yourself: ${APT_PACKAGES[*]}" >&2
fi

# The pinned CPU build; an unpinned torch would pull a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[train,mic,dev,bench]'
