#!/usr/bin/env bash
# A stand-in for python:3.11-slim-bookworm where that image cannot be pulled: Debian 12 minbase
# (debootstrap) as DEBIAN_IMAGE, plus a CPython >= 3.11.4 copied into /usr/local (where the python image
# has it) as BASE_IMAGE. Debian 12's own python3 (3.11.2) is too old for imbsam.data (tarfile filters).
# scripts/build_image_smoke.sh calls it when the python image cannot be pulled.
#
# Usage: scripts/offline_base.sh
# Needs root and Debian/Ubuntu apt (installs debootstrap if missing). Does nothing for an image that exists.
# Environment (defaults in brackets):
#   BASE_IMAGE     the image to make [localhost/python:3.11-bookworm-local]
#   DEBIAN_IMAGE   the imported rootfs it starts from [localhost/debian:bookworm-local]
#   ROOTFS_CACHE   where the debootstrapped rootfs tarball is kept [/var/cache/imbsam-build]
#   PYTHON_PREFIX  a relocatable CPython 3.11.x (x >= 4) built for Debian 12, e.g. a pyenv version
#                  [sys.base_prefix of the host's python3 if it qualifies]
#   IMBSAM_BUILDAH_STORAGE  buildah's storage options (--storage-driver, --root, --runroot) [buildah's own]
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-localhost/python:3.11-bookworm-local}
DEBIAN_IMAGE=${DEBIAN_IMAGE:-localhost/debian:bookworm-local}
ROOTFS_CACHE=${ROOTFS_CACHE:-/var/cache/imbsam-build}
PYTHON_PREFIX=${PYTHON_PREFIX:-}
# shellcheck disable=SC2206  # the variable holds options, one per word
bah=(buildah ${IMBSAM_BUILDAH_STORAGE:-})

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'offline_base: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (buildah without a daemon, debootstrap)"
image_exists() { "${bah[@]}" inspect --type image "$1" >/dev/null 2>&1; }
image_exists "$BASE_IMAGE" && { log "base image $BASE_IMAGE exists"; exit 0; }

ctr=""
trap '[ -z "$ctr" ] || "${bah[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT

# Runtime libraries of CPython's extension modules, as the python:3.11-slim image has.
PYTHON_RUNTIME_DEBS=ca-certificates,netbase,tzdata,libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,libreadline8,libncursesw6,libuuid1,zlib1g,libexpat1,libnsl2,libtirpc3,libgdbm6

build_debian() {
    image_exists "$DEBIAN_IMAGE" && { log "base image $DEBIAN_IMAGE exists"; return; }
    # Named after its package list, so a changed list makes a new one.
    local tarball
    tarball=$ROOTFS_CACHE/debian-bookworm-minbase-$(md5sum <<<"$PYTHON_RUNTIME_DEBS" | cut -c1-8).tar
    if [ ! -s "$tarball" ]; then
        if ! command -v debootstrap >/dev/null; then
            log "installing debootstrap"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
        fi
        log "debootstrap Debian 12 minbase -> $tarball"
        mkdir -p "$ROOTFS_CACHE"
        local t0 rootfs
        t0=$(date +%s)
        rootfs=$(mktemp -d "$ROOTFS_CACHE/rootfs.XXXXXX")
        debootstrap --variant=minbase --include="$PYTHON_RUNTIME_DEBS" bookworm "$rootfs" >&2
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
        tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
        log "debootstrap: $(($(date +%s) - t0)) s"
    fi
    log "importing the rootfs as $DEBIAN_IMAGE"
    ctr=$("${bah[@]}" from scratch)
    local mnt
    mnt=$("${bah[@]}" mount "$ctr")
    tar -C "$mnt" -xf "$tarball"
    "${bah[@]}" umount "$ctr" >/dev/null
    "${bah[@]}" config --cmd /bin/bash "$ctr"
    "${bah[@]}" commit --quiet --rm "$ctr" "$DEBIAN_IMAGE" >/dev/null
    ctr=""
}

find_python_prefix() {
    if [ -z "$PYTHON_PREFIX" ] && command -v python3 >/dev/null; then
        PYTHON_PREFIX=$(python3 -c 'import sys; print(sys.base_prefix)')
    fi
    local py=$PYTHON_PREFIX/bin/python3
    if [ ! -x "$py" ] || [ "$PYTHON_PREFIX" = /usr ] \
        || ! "$py" -c 'import sys; sys.exit(not (3, 11, 4) <= sys.version_info < (3, 12))'; then
        die "need PYTHON_PREFIX: a CPython 3.11.4+ install built on Debian 12 outside /usr" \
            "(e.g. pyenv's), or a machine that can pull python:3.11-slim-bookworm"
    fi
}

build_debian
find_python_prefix
log "adding CPython from $PYTHON_PREFIX to /usr/local: $BASE_IMAGE"
ctr=$("${bah[@]}" from --pull-never "$DEBIAN_IMAGE")
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
"${bah[@]}" commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
ctr=""
log "made $BASE_IMAGE"
