#!/usr/bin/env bash
# Build a target of ./Dockerfile without a Docker engine (buildah), then check the image with the tests in
# tests/image/: for cpu they run the DVC pipeline inside it on a synthetic archive and then
# `python -m imbsam.check_host`; the gpu image is checked without a GPU (every library of MindSpore's GPU
# plugin resolves but the driver's libcuda.so.1, MindSpore's own GPU environment check finds its CUDA, and
# `dvc repro` stops before the download naming --gpus all, as does the host check).
#
# Usage: scripts/build_image_smoke.sh [--target cpu|gpu] [--build-only | --smoke-only] [--no-cache] [--prune]
#   --target      cpu (default) or gpu.
#   --build-only  build the image and check it (imports, mindspore.run_check, dvc, git, and the gpu
#                 image's checks); no pipeline run in the cpu image.
#   --smoke-only  skip the build; check an image built before.
#   --no-cache    rebuild every layer (default: reuse buildah's layer cache).
#   --prune       afterwards delete dangling images (old layer caches; vfs keeps a
#                 full copy of the filesystem per layer).
#
# The base is python:3.11-slim-bookworm, pulled; where it cannot be pulled, scripts/offline_base.sh makes
# a stand-in once (Debian 12 minbase and the host's CPython; it reads ROOTFS_CACHE, DEBIAN_IMAGE and
# PYTHON_PREFIX).
#
# Needs root, Debian/Ubuntu apt (installs buildah if missing) and the dev requirements (pytest).
# Environment (defaults in brackets):
#   BASE_IMAGE    the base of the build [python:3.11-slim-bookworm if it can be pulled, else
#                 localhost/python:3.11-bookworm-local]
#   IMAGE         image to build and check [localhost/imbsam:TARGET]
#   HOST_CA       CA bundle handed to pip in the build; empty = none
#                 [/etc/ssl/certs/ca-certificates.crt]
#   SMOKE_USER    uid:gid the checks run as, like `docker run --user` [1000:1000]
#   KEEP_WORKDIR  1 = keep the checks' workspaces for inspection [0]
#   STORAGE_DRIVER  buildah's storage: overlay keeps each layer's changes, vfs a full copy of the
#                 filesystem per layer and container (74 GB at the peak of both builds, against 29)
#                 [overlay where the kernel mounts it, else vfs]
#   STORAGE_ROOT  where buildah keeps images [/var/lib/containers/storage-STORAGE_DRIVER]
#   PYTHON        the Python that runs the tests [python3]
set -euo pipefail

mode=full
target=cpu
no_cache=()
prune=0
while [ $# -gt 0 ]; do
    arg=$1
    shift
    case $arg in
    --target)
        target=${1:-}
        shift || true
        case $target in cpu | gpu) ;; *) echo "--target takes cpu or gpu" >&2; exit 2 ;; esac ;;
    --build-only) mode=build ;;
    --smoke-only) mode=smoke ;;
    --no-cache) no_cache=(--no-cache) ;;
    --prune) prune=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "unknown option: $arg (see --help)" >&2; exit 2 ;;
    esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${IMAGE:-localhost/imbsam:$target}
HOST_CA=${HOST_CA-/etc/ssl/certs/ca-certificates.crt}
SMOKE_USER=${SMOKE_USER:-1000:1000}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
PYTHON=${PYTHON:-python3}
PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm
OFFLINE_BASE=localhost/python:3.11-bookworm-local

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'build_image_smoke: %s\n' "$*" >&2; exit 1; }
elapsed() { echo "$(($(date +%s) - $1)) s"; }
declare -A timings=()

[ "$(id -u)" = 0 ] || die "run as root (buildah without a daemon)"

if ! command -v buildah >/dev/null; then
    log "installing buildah"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah
fi

# A storage root holds one driver's layers: each driver gets its own.
storage() { echo --storage-driver "$1" --root "${STORAGE_ROOT:-/var/lib/containers/storage-$1}" --runroot "/run/containers/storage-$1"; }
if [ -z "${STORAGE_DRIVER:-}" ]; then
    STORAGE_DRIVER=vfs
    if grep -qw overlay /proc/filesystems; then
        # shellcheck disable=SC2046  # storage's words are options
        if probe=$(buildah $(storage overlay) from scratch 2>/dev/null); then
            buildah $(storage overlay) mount "$probe" >/dev/null 2>&1 && STORAGE_DRIVER=overlay
            buildah $(storage overlay) rm "$probe" >/dev/null 2>&1 || true
        fi
    fi
fi
# The storage options, for scripts/offline_base.sh and the tests too.
IMBSAM_BUILDAH_STORAGE=$(storage "$STORAGE_DRIVER")
export IMBSAM_BUILDAH_STORAGE
# shellcheck disable=SC2206  # the variable holds options, one per word
bah=(buildah $IMBSAM_BUILDAH_STORAGE)
# The disk a build takes at its peak (GB), with margin, beyond what storage already holds. Measured with
# build, check and smoke run: on overlay 13 GB for cpu, then 16 GB more for gpu; on vfs, which copies the whole
# filesystem for every layer and container, 74 GB for the two.
declare -A need_gb=([vfs-cpu]=40 [vfs-gpu]=60 [overlay-cpu]=18 [overlay-gpu]=22)
graph_root=$("${bah[@]}" info --format '{{.store.GraphRoot}}')
mkdir -p "$graph_root"
free_gb=$(df -BG --output=avail "$graph_root" /var/tmp | awk 'NR > 1 {gsub("G", ""); print $1}' | sort -n | head -n 1)
if [ "$mode" != smoke ] && [ "$free_gb" -lt "${need_gb[$STORAGE_DRIVER-$target]}" ]; then
    die "$free_gb GB free under $graph_root and /var/tmp, but the $target build on $STORAGE_DRIVER storage needs" \
        "about ${need_gb[$STORAGE_DRIVER-$target]} GB: free some disk, or point STORAGE_ROOT elsewhere"
fi
image_exists() { "${bah[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# BASE_IMAGE: the python image where it can be pulled, else the offline stand-in (made if missing).
choose_base() {
    [ -z "${BASE_IMAGE:-}" ] || return 0
    local error
    if image_exists "$PYTHON_IMAGE" || error=$("${bah[@]}" pull --quiet "$PYTHON_IMAGE" 2>&1 >/dev/null); then
        BASE_IMAGE=$PYTHON_IMAGE
        return
    fi
    log "cannot pull $PYTHON_IMAGE (${error##*$'\n'}): building on the offline stand-in $OFFLINE_BASE"
    BASE_IMAGE=$OFFLINE_BASE
    image_exists "$BASE_IMAGE" || BASE_IMAGE=$BASE_IMAGE "$repo/scripts/offline_base.sh"
}

build_image() {
    local ca_args=()
    if [ -n "$HOST_CA" ]; then
        [ -r "$HOST_CA" ] || die "HOST_CA=$HOST_CA is not readable"
        ca_args=(--volume "$HOST_CA:/host-ca.crt:ro" --build-arg PIP_CERT=/host-ca.crt)
    fi
    log "building $IMAGE (target $target on $BASE_IMAGE)"
    local t0
    t0=$(date +%s)
    "${bah[@]}" bud --isolation chroot --layers --force-rm "${no_cache[@]}" \
        --target "$target" --build-arg BASE_IMAGE="$BASE_IMAGE" "${ca_args[@]}" \
        -f "$repo/Dockerfile" -t "$IMAGE" "$repo" >&2
    timings[image build]=$(elapsed "$t0")
}

# tests/image/ against the image: the cpu image's pipeline run only in full and smoke mode.
check_image() {
    log "checking $IMAGE (tests/image, as uid $SMOKE_USER)"
    local t0 args=(-v --durations=5 tests/image)
    [ "$mode" != build ] || args+=(--ignore tests/image/test_image_cpu_pipeline.py)
    t0=$(date +%s)
    (cd "$repo" && IMBSAM_IMAGE=$IMAGE IMBSAM_IMAGE_USER=$SMOKE_USER IMBSAM_IMAGE_KEEP_WORKDIR=$KEEP_WORKDIR \
        "$PYTHON" -m pytest "${args[@]}") >&2 || die "the checks of $IMAGE failed (above)"
    timings[image checks]=$(elapsed "$t0")
}

t_start=$(date +%s)
if [ "$mode" != smoke ]; then
    choose_base
    build_image
else
    image_exists "$IMAGE" || die "$IMAGE does not exist: build it first (drop --smoke-only)"
fi
check_image

log "summary"
size=$("${bah[@]}" images --format '{{.Size}}' "$IMAGE" | head -n 1)
echo "image $IMAGE: $size ($STORAGE_DRIVER storage in $graph_root)"
for k in "image build" "image checks"; do
    if [ -n "${timings[$k]:-}" ]; then echo "$k: ${timings[$k]}"; fi
done
echo "total: $(elapsed "$t_start")"
if [ "$prune" = 1 ]; then
    log "deleting dangling images"
    "${bah[@]}" rmi --prune >/dev/null || true
fi
echo "OK"
