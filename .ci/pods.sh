#!/usr/bin/env bash
# The image and the chart's pods, for real: hadolint on the Containerfile,
# the image built with podman, then .ci/check_pods.py runs the rendered agent
# Deployments as containers against a private NATS and MLflow (readiness,
# `helm test`, planner.status, SIGTERM). Prints the image size, the build
# time and what check_pods.py measured.
#
# Needs root (rootful podman); installs podman, runc, debootstrap and
# catatonit (the pods' infra containers) from Debian if missing.
# Usage: pods.sh [build|run]: the image only, the pods only (of the image
# built before), or both (the default).
# Environment: PY (default .venv/bin/python), IMAGE (the agent image, default
# localhost/scanflow-agents:ci), SERVING_IMAGE (default
# localhost/scanflow-agents-serving:ci), BASE_IMAGE (see .ci/podman-setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
BIN="$(dirname "$PY")"
IMAGE="${IMAGE:-localhost/scanflow-agents:ci}"
SERVING_IMAGE="${SERVING_IMAGE:-localhost/scanflow-agents-serving:ci}"
WHAT="${1:-all}"
case "$WHAT" in
    build | run | all) ;;
    *) echo "usage: $0 [build|run]" >&2; exit 2 ;;
esac

if ! command -v catatonit >/dev/null && [ ! -x /usr/libexec/podman/catatonit ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends catatonit >/dev/null
fi
# shellcheck source=.ci/podman-setup.sh
source .ci/podman-setup.sh

if [ "$WHAT" != run ]; then
    echo "--- hadolint Containerfile"
    "$BIN/hadolint" Containerfile

    # Both targets of the Containerfile: they share its first stage, and the
    # agent image is the chart's, the serving image the planner's workloads'.
    for target in serving agent; do
        tag="$IMAGE"
        [ "$target" = serving ] && tag="$SERVING_IMAGE"
        echo "--- podman build --target $target $tag (base $BASE_IMAGE)"
        previous="$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
        started=$(date +%s)
        podman build --pull=never --network=host --quiet --target "$target" \
            --build-arg BASE_IMAGE="$BASE_IMAGE" \
            --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
            --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
            --secret id=pipca,src=/etc/ssl/certs/ca-certificates.crt \
            -f Containerfile -t "$tag" . >/dev/null
        echo "build $target: $(( $(date +%s) - started )) s; size: $(podman image inspect "$tag" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"
        # The image this tag named before, and its untagged layers, are of no more use.
        if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$tag")" ]; then
            podman rmi "$previous" >/dev/null 2>&1 || true
        fi
    done
fi
if [ "$WHAT" = build ]; then exit 0; fi

echo "--- the chart's pods as containers"
HELM="$(bash .ci/fetch-helm.sh)"
"$PY" .ci/check_pods.py --image "$IMAGE" --serving-image "$SERVING_IMAGE" --helm "$HELM"
