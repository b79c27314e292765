#!/usr/bin/env bash
# promtool comes from Debian's prometheus package; link it into the project's tool directory.
set -euo pipefail
DEST="${1:-$PWD/.tools/bin}"
mkdir -p "$DEST"
if ! command -v promtool >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
ln -sf "$(command -v promtool)" "$DEST/promtool"
"$DEST/promtool" --version | head -1
