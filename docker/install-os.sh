#!/bin/bash
# Build-time step 1 (every target): OS packages the image needs, then no apt leftovers.
# Usage: install-os.sh [EXTRA_APT_PACKAGE...]
#   A base without python3 gets the distribution's python3 and python3-venv;
#   install-python.sh then checks the version.
# git is required by DVC; ca-certificates by pip and DVC's http remotes; libgomp1
# (OpenMP) by MindSpore's core library, which the wheel does not bundle.
set -euo pipefail

if ! command -v apt-get >/dev/null; then
    echo "install-os.sh: BASE_IMAGE must be Debian/Ubuntu based (no apt-get found)" >&2
    exit 1
fi
packages=(git ca-certificates libgomp1 "$@")
if ! command -v python3 >/dev/null; then
    packages+=(python3 python3-venv)
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${packages[@]}"
apt-get clean
rm -rf /var/lib/apt/lists/*

# A clone mounted at /workspace belongs to the host user, not to the container's
# uid: without this git (and so DVC) refuses it as "dubious ownership".
git config --system --add safe.directory '*'
