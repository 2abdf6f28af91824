#!/usr/bin/env bash
# Sourced by the container steps of CI: makes rootful podman usable on a machine
# without a Docker engine or an image registry, and provides the base image.
#
# - installs podman, runc and debootstrap from Debian if missing;
# - points CONTAINERS_CONF at a private engine configuration: runc (Debian's
#   crun cannot start containers under hybrid cgroups), cgroupfs, and ulimits
#   at or below the host's hard limits (root here cannot raise them, and
#   podman's defaults are higher);
# - builds the base image localhost/debian-py:bookworm (Debian minbase with
#   python3 and venv) with debootstrap from the mirror apt already uses, since
#   no registry such as docker.io may be reachable. Skipped when it exists.
#
# Exports: CONTAINERS_CONF, BASE_IMAGE.
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-localhost/debian-py:bookworm}"
export BASE_IMAGE

if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        podman runc debootstrap ca-certificates >/dev/null
fi

CONTAINERS_CONF="${CONTAINERS_CONF:-${XDG_CACHE_HOME:-$HOME/.cache}/scanflow-agents/containers.conf}"
if [ ! -f "$CONTAINERS_CONF" ]; then
    mkdir -p "$(dirname "$CONTAINERS_CONF")"
    nofile="$(ulimit -Hn)"; nproc="$(ulimit -Hu)"
    [ "$nofile" = unlimited ] || [ "$nofile" -gt 20000 ] && nofile=20000
    [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
    cat >"$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
fi
export CONTAINERS_CONF

debian_mirror() {
    # The first Debian mirror apt is configured with (deb822 or one-line sources).
    local url
    url="$(grep -hoE '^URIs:[[:space:]]*[^[:space:]]+' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v security | head -n 1 || true)"
    if [ -z "$url" ]; then
        url="$(grep -hE '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '{print $2}' | grep -v security | head -n 1 || true)"
    fi
    echo "${url:-http://deb.debian.org/debian}"
}

if ! podman image exists "$BASE_IMAGE"; then
    rootfs="$(mktemp -d -t scanflow-rootfs-XXXXXX)"
    echo "building $BASE_IMAGE with debootstrap from $(debian_mirror)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$(debian_mirror)" >/dev/null
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar --numeric-owner -C "$rootfs" -c . \
        | podman import --change 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
fi
