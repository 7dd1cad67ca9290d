#!/usr/bin/env bash
# Install the training sources train/data/README.md lists: espeak-ng, festival voices, and the Debian
# sound packages. Only the packages with rows in sources/labels.csv are indexed today; the
# rest are installed so their labels can be curated (see train/data/README.md).
set -euo pipefail
CORE="espeak-ng libespeak-ng1 festival festvox-kallpc16k festvox-us-slt-hts fortunes wordnet-base"
LABELLED="sound-theme-freedesktop oxygen-sounds colobot-common-sounds openttd-opensfx"
UNLABELLED="tuxpaint-data tuxpaint-stamps-default lincity-ng-data wesnoth-1.16-data
  warzone2100-data hedgewars-data fillets-ng-data freedoom frozen-bubble-data extremetuxracer-data
  pingus-data xmoto-data tuxtype-data klettres-data asterisk-moh-opsound-wav"
PKGS="$CORE $LABELLED"
if [[ "${1:-}" == "--all" || "${2:-}" == "--all" ]]; then PKGS="$PKGS $UNLABELLED"; fi
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
if [[ "${1:-}" == "--dry-run" ]]; then echo "$SUDO apt-get install -y --no-install-recommends $PKGS"; exit 0; fi
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $PKGS
