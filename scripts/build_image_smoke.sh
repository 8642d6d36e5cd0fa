#!/usr/bin/env bash
# Build a target of ./Dockerfile without a Docker engine (buildah + debootstrap), check it,
# and smoke-run the DVC pipeline inside it on a synthetic archive, then `python -m imbsam.check_host`.
#
# Usage: scripts/build_image_smoke.sh [--target cpu|gpu] [--build-only | --smoke-only] [--no-cache] [--prune]
#   --target      cpu (default) or gpu. The gpu image is checked without a GPU: every library
#                 of MindSpore's GPU plugin resolves but the driver's libcuda.so.1, mindspore
#                 imports, MindSpore's own GPU environment check finds its CUDA and puts
#                 plugin/gpu11.6 on the library path, and `dvc repro` stops before the download
#                 naming --gpus all (and downloads with device.target=CPU), as does the host check.
#   --build-only  build the image and check it (imports, mindspore.run_check, dvc,
#                 git); no pipeline run.
#   --smoke-only  skip the build; smoke-run an image built before.
#   --no-cache    rebuild every layer (default: reuse buildah's layer cache).
#   --prune       afterwards delete dangling images (old layer caches; vfs keeps a
#                 full copy of the filesystem per layer).
#
# The cpu target's default base, python:3.11-slim-bookworm, cannot be pulled here, so
# a stand-in is made: Debian 12 minbase (debootstrap) as DEBIAN_IMAGE, plus a CPython
# >= 3.11.4 copied into /usr/local (where the python image has it) as BASE_IMAGE.
# Debian 12's own python3 (3.11.2) is too old for imbsam.data (tarfile filters).
#
# Needs root and Debian/Ubuntu apt (installs buildah and debootstrap if missing).
# Environment (defaults in brackets):
#   ROOTFS_CACHE  where the debootstrapped rootfs tarball is kept [/var/cache/imbsam-build]
#   DEBIAN_IMAGE  the imported rootfs [localhost/debian:bookworm-local]
#   PYTHON_PREFIX a relocatable CPython 3.11.x (x >= 4) built for Debian 12, e.g. a pyenv
#                 version [sys.base_prefix of the host's python3 if it qualifies]
#   BASE_IMAGE    DEBIAN_IMAGE + that Python [localhost/python:3.11-bookworm-local]
#   IMAGE         image to build and run [localhost/imbsam:TARGET]
#   HOST_CA       CA bundle handed to pip in the build; empty = none
#                 [/etc/ssl/certs/ca-certificates.crt]
#   SMOKE_USER    uid:gid the pipeline runs as, like `docker run --user` [1000:1000]
#   KEEP_WORKDIR  1 = keep the smoke workspace for inspection [0]
#   STORAGE_DRIVER  buildah's storage: overlay keeps each layer's changes, vfs a full copy of the
#                 filesystem per layer and container (74 GB at the peak of both builds, against 29)
#                 [overlay where the kernel mounts it, else vfs]
#   STORAGE_ROOT  where buildah keeps images [/var/lib/containers/storage-STORAGE_DRIVER]
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
    -h | --help) sed -n '2,36p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg (see --help)" >&2; exit 2 ;;
    esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOTFS_CACHE=${ROOTFS_CACHE:-/var/cache/imbsam-build}
DEBIAN_IMAGE=${DEBIAN_IMAGE:-localhost/debian:bookworm-local}
BASE_IMAGE=${BASE_IMAGE:-localhost/python:3.11-bookworm-local}
PYTHON_PREFIX=${PYTHON_PREFIX:-}
IMAGE=${IMAGE:-localhost/imbsam:$target}
HOST_CA=${HOST_CA-/etc/ssl/certs/ca-certificates.crt}
SMOKE_USER=${SMOKE_USER:-1000:1000}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'build_image_smoke: %s\n' "$*" >&2; exit 1; }
elapsed() { echo "$(($(date +%s) - $1)) s"; }
declare -A timings=()

[ "$(id -u)" = 0 ] || die "run as root (buildah without a daemon, debootstrap)"

containers=()
workdir=""
cleanup() {
    local c
    for c in "${containers[@]}"; do "${bah[@]}" rm "$c" >/dev/null 2>&1 || true; done
    if [ -n "$workdir" ] && [ "$KEEP_WORKDIR" != 1 ]; then rm -rf "$workdir"; fi
}
trap cleanup EXIT

need=()
command -v buildah >/dev/null || need+=(buildah)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
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
# shellcheck disable=SC2207  # storage's words are options
bah=(buildah $(storage "$STORAGE_DRIVER"))
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

# A working container in $ctr, removed on exit whatever happens.
new_container() {
    ctr=$("${bah[@]}" from --pull-never "$1")
    containers+=("$ctr")
}
new_scratch_container() {
    ctr=$("${bah[@]}" from scratch)
    containers+=("$ctr")
}

# Runtime libraries of CPython's extension modules, as the python:3.11-slim image has.
PYTHON_RUNTIME_DEBS=ca-certificates,netbase,tzdata,libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,libreadline8,libncursesw6,libuuid1,zlib1g,libexpat1,libnsl2,libtirpc3,libgdbm6

build_debian() {
    image_exists "$DEBIAN_IMAGE" && { log "base image $DEBIAN_IMAGE exists"; return; }
    # Named after its package list, so a changed list makes a new one.
    local tarball
    tarball=$ROOTFS_CACHE/debian-bookworm-minbase-$(md5sum <<<"$PYTHON_RUNTIME_DEBS" | cut -c1-8).tar
    if [ ! -s "$tarball" ]; then
        log "debootstrap Debian 12 minbase -> $tarball"
        mkdir -p "$ROOTFS_CACHE"
        local t0 rootfs
        t0=$(date +%s)
        rootfs=$(mktemp -d "$ROOTFS_CACHE/rootfs.XXXXXX")
        debootstrap --variant=minbase --include="$PYTHON_RUNTIME_DEBS" bookworm "$rootfs" >&2
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
        tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
        timings[debootstrap]=$(elapsed "$t0")
    fi
    log "importing the rootfs as $DEBIAN_IMAGE"
    new_scratch_container
    local mnt
    mnt=$("${bah[@]}" mount "$ctr")
    tar -C "$mnt" -xf "$tarball"
    "${bah[@]}" umount "$ctr" >/dev/null
    "${bah[@]}" config --cmd /bin/bash "$ctr"
    "${bah[@]}" commit --quiet "$ctr" "$DEBIAN_IMAGE" >/dev/null
}

find_python_prefix() {
    if [ -z "$PYTHON_PREFIX" ] && command -v python3 >/dev/null; then
        PYTHON_PREFIX=$(python3 -c 'import sys; print(sys.base_prefix)')
    fi
    local py=$PYTHON_PREFIX/bin/python3
    if [ ! -x "$py" ] || [ "$PYTHON_PREFIX" = /usr ] \
        || ! "$py" -c 'import sys; sys.exit(not (3, 11, 4) <= sys.version_info < (3, 12))'; then
        die "need PYTHON_PREFIX: a CPython 3.11.4+ install built on Debian 12 outside /usr" \
               "(e.g. pyenv's), or a machine that can pull python:3.11-slim-bookworm" \
               "(then: BASE_IMAGE=python:3.11-slim-bookworm)"
    fi
}

build_base() {
    image_exists "$BASE_IMAGE" && { log "base image $BASE_IMAGE exists"; return; }
    build_debian
    find_python_prefix
    log "adding CPython from $PYTHON_PREFIX to /usr/local: $BASE_IMAGE"
    new_container "$DEBIAN_IMAGE"
    local mnt
    mnt=$("${bah[@]}" mount "$ctr")
    # The interpreter, its shared library and standard library; not its site-packages.
    (cd "$PYTHON_PREFIX" && tar --exclude=./lib/python3.11/site-packages \
        --exclude=./lib/python3.11/test --exclude='__pycache__' -cf - \
        ./bin/python3.11 ./lib/libpython3.11.so* ./lib/python3.11) | tar -C "$mnt/usr/local" -xf -
    mkdir -p "$mnt/usr/local/lib/python3.11/site-packages"
    ln -sf python3.11 "$mnt/usr/local/bin/python3"
    ln -sf python3 "$mnt/usr/local/bin/python"
    chroot "$mnt" /sbin/ldconfig
    chroot "$mnt" /usr/local/bin/python3 -c 'import ssl, sqlite3, lzma, bz2, ctypes, venv, ensurepip, tarfile; tarfile.data_filter'
    "${bah[@]}" umount "$ctr" >/dev/null
    "${bah[@]}" commit --quiet "$ctr" "$BASE_IMAGE" >/dev/null
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

check_image() {
    log "checking $IMAGE as uid $SMOKE_USER"
    new_container "$IMAGE"
    local c=$ctr
    # buildah run does not apply ENTRYPOINT: call it, as docker run would.
    # shellcheck disable=SC2016  # expanded inside the container
    "${bah[@]}" run --isolation chroot --user "$SMOKE_USER" "$c" -- \
        /usr/local/lib/imbsam/entrypoint.sh bash -c '
            set -euo pipefail
            echo "IMBSAM_IMAGE_TARGET=$IMBSAM_IMAGE_TARGET HOME=$HOME uid=$(id -u)"
            python --version; git --version; dvc --version
            python -c "import mindspore as ms; print(\"mindspore\", ms.__version__); ms.set_device(\"CPU\"); ms.run_check()"
            test ! -e /root/.cache && ! find /opt/venv -name "*.whl" | grep -q .
        ' >&2
}

# Without a GPU: what can be checked of the gpu image short of running a kernel.
check_gpu_image() {
    log "checking the gpu image without a GPU: libraries, MindSpore's CUDA check, the missing-GPU stop"
    new_container "$IMAGE"
    # shellcheck disable=SC2016  # expanded inside the container
    "${bah[@]}" run --isolation chroot --user "$SMOKE_USER" "$ctr" -- \
        /usr/local/lib/imbsam/entrypoint.sh bash -c '
            set -euo pipefail
            plugin=$(python -c "import importlib.util as u, pathlib as p; print(p.Path(u.find_spec(\"mindspore\").origin).parent / \"lib\" / \"plugin\")")
            libs=("$plugin"/libmindspore_gpu.so.11.6 "$plugin"/gpu/*.so* "$plugin"/gpu11.6/*.so*)
            unresolved=$(for lib in "${libs[@]}"; do ldd "$lib" | awk "/not found/ {print \$1}"; done | sort -u)
            echo "ldd of ${#libs[@]} plugin libraries: unresolved: ${unresolved:-none}"
            [ "$unresolved" = libcuda.so.1 ] || { echo "only the driver (libcuda.so.1) may be missing"; exit 1; }
            python -c "import mindspore; print(\"import mindspore:\", mindspore.__version__)"
            out=$(python - "$plugin" 2>&1 <<PY
import os, sys
from mindspore.run_check._check_version import GPUEnvChecker
checker = GPUEnvChecker(os.path.join(sys.argv[1], "libmindspore_gpu.so.11.6"))
checker.check_version()
checker.set_env()
print("MindSpore GPU check: CUDA", checker.v, "LD_LIBRARY_PATH", os.environ["LD_LIBRARY_PATH"])
assert checker.v.startswith("11.6."), checker.v
assert os.path.join(sys.argv[1], "gpu11.6") in os.environ["LD_LIBRARY_PATH"].split(":")
PY
            )
            echo "$out"
            if grep -E "WARNING|ERROR|Cannot find cuda" <<<"$out"; then echo "MindSpore GPU check complained"; exit 1; fi
            /opt/cuda/bin/nvcc --version
            # With CUDA_HOME, as with a GPU: the loader picks the 11.6 build off nvcc and fails on the driver alone.
            picked=$(CUDA_HOME=/opt/cuda python -c "import mindspore" 2>&1)
            grep -q "libmindspore_gpu.so.11.6 failed" <<<"$picked" && grep -q "libcuda.so.1" <<<"$picked" \
                || { echo "the plugin loader did not pick libmindspore_gpu.so.11.6: $picked"; exit 1; }
            echo "plugin loader: libmindspore_gpu.so.11.6 chosen, stops only at the driver (libcuda.so.1)"
        ' >&2

    make_workspace
    new_container "$IMAGE"
    local out
    # shellcheck disable=SC2016  # expanded inside the container
    out=$("${bah[@]}" run --isolation chroot --user "$SMOKE_USER" -v "$workdir/workspace:/workspace" \
        --workingdir /workspace "$ctr" -- /usr/local/lib/imbsam/entrypoint.sh bash -c '
            set -uo pipefail
            source .smoke-init.sh && init_workspace
            echo "=== dvc exp run"
            dvc exp run -S "data.url=$archive" -S "data.md5=$md5"
            echo "exit status $?"
            test ! -e data/archive/cifar-100-python.tar.gz && echo "nothing downloaded"
            dvc exp run download -S "data.url=$archive" -S "data.md5=$md5" -S device.target=CPU \
                && test -s data/archive/cifar-100-python.tar.gz && echo "device.target=CPU downloads"
            python -m imbsam.check_host --out /tmp/host-check
            echo "check_host exit status $?"
        ' 2>&1) || true
    echo "$out" >&2
    # The run's own lines only: the host check below names --gpus all too.
    local repro
    repro=$(sed -n '/^=== dvc exp run$/,/^exit status /p' <<<"$out")
    grep -q -- "--gpus all" <<<"$repro" || die "dvc repro without a GPU did not name --gpus all"
    grep -q "^exit status [1-9]" <<<"$repro" || die "dvc repro without a GPU did not fail"
    grep -q "nothing downloaded" <<<"$out" || die "dvc repro without a GPU downloaded before stopping"
    grep -q "device.target=CPU downloads" <<<"$out" || die "device.target=CPU did not run the download"
    grep -q "check_host exit status 1" <<<"$out" && grep -q "^FAIL: the host section stopped: .*--gpus all" <<<"$out" \
        || die "python -m imbsam.check_host without a GPU did not fail naming --gpus all"
}

# $workdir/workspace: the files a fresh clone has, owned by SMOKE_USER; $workdir/cache for DVC.
make_workspace() {
    [ -n "$workdir" ] || workdir=$(mktemp -d /var/tmp/imbsam-smoke.XXXXXX)
    rm -rf "$workdir/workspace" "$workdir/cache"
    mkdir "$workdir/workspace" "$workdir/cache"
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
        | tar --null -T - -cf -) | tar -C "$workdir/workspace" -xf -
    # Inside the container: a git + DVC repository of the workspace and a synthetic archive
    # ($archive, $md5), for the commands that follow.
    cat >"$workdir/workspace/.smoke-init.sh" <<'SH'
init_workspace() {
    export GIT_AUTHOR_NAME=smoke GIT_AUTHOR_EMAIL=smoke@localhost
    export GIT_COMMITTER_NAME=smoke GIT_COMMITTER_EMAIL=smoke@localhost
    git init -q && git add -A && git commit -qm "smoke snapshot"
    if [ ! -d .dvc ]; then dvc init -q && git add .dvc && git commit -qm "dvc init"; fi
    mkdir -p /tmp/imbsam-smoke
    archive=/tmp/imbsam-smoke/synthetic.tar.gz
    local out
    out=$(python -m imbsam.synthetic "$archive" --train-per-class 20 --test-per-class 5)
    md5=$(grep -oE "\b[0-9a-f]{32}\b" <<<"$out" | tail -n 1)
    test -n "$md5" || { echo "no md5 in imbsam.synthetic output"; return 1; }
}
SH
    chown -R "$SMOKE_USER" "$workdir/workspace" "$workdir/cache"
}

smoke_run() {
    log "smoke run: dvc exp run in $IMAGE as uid $SMOKE_USER"
    for f in stages/report.py imbsam/synthetic.py dvc.yaml params.yaml; do
        [ -e "$repo/$f" ] || die "$f is missing: the pipeline is not complete yet"
    done
    make_workspace
    new_container "$IMAGE"
    local c=$ctr t0
    t0=$(date +%s)
    # -v .../cache:/cache exercises the DVC cache volume route of the entrypoint.
    # shellcheck disable=SC2016  # expanded inside the container
    "${bah[@]}" run --isolation chroot --user "$SMOKE_USER" \
        -v "$workdir/workspace:/workspace" -v "$workdir/cache:/cache" \
        --workingdir /workspace "$c" -- /usr/local/lib/imbsam/entrypoint.sh bash -c '
            set -euo pipefail
            source .smoke-init.sh && init_workspace
            test "$(dvc cache dir)" = /cache || { echo "DVC cache is not /cache"; exit 1; }
            dvc exp run \
                -S "data.url=$archive" -S "data.md5=$md5" -S model.arch=resnet32 \
                -S train.epochs=1 -S train.max_steps_per_epoch=2 -S "train.seeds=[0]" \
                -S train.schedule=step_cosine
            test -s reports/report.md
            # The host check, every section, on the cheap network only; it leaves the workspace as it was.
            python -m imbsam.check_host --archs resnet32 --steps 1 --out /tmp/host-check
            grep -q "^\*\*PASS: .* give the authors. update" /tmp/host-check/host-check.md
        ' >&2
    timings[smoke run]=$(elapsed "$t0")

    local ws=$workdir/workspace
    [ -s "$ws/reports/report.md" ] || die "reports/report.md was not written"
    [ "$(stat -c %u:%g "$ws/reports/report.md")" = "$SMOKE_USER" ] \
        || die "reports/report.md is owned by $(stat -c %u:%g "$ws/reports/report.md"), not $SMOKE_USER"
    [ -n "$(find "$workdir/cache" -type f -print -quit)" ] || die "the DVC cache volume stayed empty"
    if find "$ws" -uid 0 -print -quit | grep -q .; then die "root-owned files in the workspace"; fi

    # Without --user (root in the container, files owned by the host user) git must
    # still accept the clone (safe.directory), and DVC must find the run up to date.
    new_container "$IMAGE"
    local status
    status=$("${bah[@]}" run --isolation chroot -v "$ws:/workspace" -v "$workdir/cache:/cache" \
        --workingdir /workspace "$ctr" -- /usr/local/lib/imbsam/entrypoint.sh \
        bash -c 'git status --short && dvc status --json') \
        || die "git/dvc status as root on a clone owned by $SMOKE_USER failed"
    echo "$status" >&2
    # Only the download stage, which runs first in every repro to validate params.yaml, is always changed.
    grep -qx '{"download": \["always changed"\]}' <<<"$status" || die "dvc status after the run is not up to date"

    log "reports/report.md (head)"
    head -n 30 "$ws/reports/report.md" >&2
}

t_start=$(date +%s)
if [ "$mode" != smoke ]; then
    build_base
    build_image
    check_image
else
    image_exists "$IMAGE" || die "$IMAGE does not exist: build it first (drop --smoke-only)"
fi
# The gpu image's pipeline needs a GPU: here it is checked for what runs without one.
if [ "$target" = gpu ]; then
    t0=$(date +%s)
    check_gpu_image
    timings[gpu checks]=$(elapsed "$t0")
elif [ "$mode" != build ]; then
    smoke_run
fi

log "summary"
size=$("${bah[@]}" images --format '{{.Size}}' "$IMAGE" | head -n 1)
echo "image $IMAGE: $size ($STORAGE_DRIVER storage in $graph_root)"
for k in debootstrap "image build" "smoke run" "gpu checks"; do
    if [ -n "${timings[$k]:-}" ]; then echo "$k: ${timings[$k]}"; fi
done
echo "total: $(elapsed "$t_start")"
if [ "$prune" = 1 ]; then
    log "deleting dangling images"
    "${bah[@]}" rmi --prune >/dev/null || true
fi
echo "OK"
