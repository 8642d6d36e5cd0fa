#!/bin/bash
# Build-time step 2 (every target): a venv at /opt/venv with requirements.lock.
# Usage: install-python.sh INTERPRETER
#   INTERPRETER  a Python (>= 3.11.4, < 3.13) on PATH, e.g. python3, or uv:VERSION to have uv
#                (bind-mounted by the gpu target) install a standalone CPython into
#                $UV_PYTHON_INSTALL_DIR first.
# Environment: PIP_CERT, PIP_INDEX_URL, UV_PYTHON_INSTALL_MIRROR (build args;
#   empty = unset), MINDSPORE_PRUNE_PLUGINS (devices whose MindSpore plugins are
#   deleted, e.g. "gpu ascend" for the cpu image: 1.8 GB of the wheel's 2.5 GB),
#   VENV_SYSTEM_SITE_PACKAGES=1 to let the venv see the base image's packages.
set -euo pipefail

interpreter=${1:?usage: install-python.sh INTERPRETER}

# pip reads PIP_* from the environment; an empty value must mean "not set".
[ -n "${PIP_CERT:-}" ] || unset PIP_CERT
[ -n "${PIP_INDEX_URL:-}" ] || unset PIP_INDEX_URL
if [ -n "${PIP_CERT:-}" ] && [ ! -r "$PIP_CERT" ]; then
    echo "install-python.sh: PIP_CERT=$PIP_CERT is not readable in the build;" \
         "mount it (--secret id=pip-cert,src=... or buildah --volume)" >&2
    exit 1
fi

if [[ $interpreter == uv:* ]]; then
    version=${interpreter#uv:}
    [ -n "${UV_PYTHON_INSTALL_MIRROR:-}" ] || unset UV_PYTHON_INSTALL_MIRROR
    if [ -n "${PIP_CERT:-}" ]; then export SSL_CERT_FILE=$PIP_CERT; fi
    uv python install --no-cache "$version"
    interpreter=$(uv python find --no-cache --managed-python "$version")
fi

# >= 3.11: requirements.lock pins packages that need it (aiohttp, atpublic, scipy).
# >= 3.11.4: imbsam.data extracts archives with tarfile's extraction filters (so
# Debian 12's python3, 3.11.2, does not do). < 3.13: the MindSpore wheel's range.
if ! "$interpreter" -c 'import sys; sys.exit(not (3, 11, 4) <= sys.version_info < (3, 13))'; then
    echo "install-python.sh: $interpreter is $("$interpreter" -V 2>&1); the image needs" \
         "Python >= 3.11.4 and < 3.13: choose a BASE_IMAGE that has it" >&2
    exit 1
fi

venv_args=()
[ "${VENV_SYSTEM_SITE_PACKAGES:-0}" = 1 ] && venv_args+=(--system-site-packages)
"$interpreter" -m venv "${venv_args[@]}" /opt/venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
/opt/venv/bin/pip install --no-cache-dir -r /usr/local/lib/imbsam/requirements.lock

# The unified wheel carries every device's plugin; a device's plugin cannot load
# without that device's libraries, so an image for another device drops it.
plugins=$(/opt/venv/bin/python -c 'import importlib.util as u, pathlib as p; print(p.Path(u.find_spec("mindspore").origin).parent / "lib" / "plugin")')
for device in ${MINDSPORE_PRUNE_PLUGINS:-}; do
    case $device in
    gpu | ascend) ;;
    *) echo "install-python.sh: MINDSPORE_PRUNE_PLUGINS: unknown device $device" >&2; exit 1 ;;
    esac
    rm -rf "${plugins:?}/$device" "$plugins/$device"[0-9]* \
        "$plugins/libmindspore_$device.so"* "$plugins/libmindspore_ops_$device.so"
done

/opt/venv/bin/pip check
/opt/venv/bin/dvc --version >/dev/null
# DVC's site cache (/var/tmp/dvc/repo/<hash of repo and user>): sticky and
# world-writable so that any --user uid can make its own entry.
install -d -m 1777 /var/tmp/dvc /var/tmp/dvc/repo
# The DVC cache volume's mount point (IMBSAM_DVC_CACHE_DIR): Docker initialises
# a new named volume with this mode, so any --user uid can write to it.
install -d -m 1777 /cache
rm -rf /root/.cache
