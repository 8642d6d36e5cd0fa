#!/bin/bash
# Build-time step 2 (every target): a venv at /opt/venv with requirements.lock.
# Usage: install-python.sh INTERPRETER
#   INTERPRETER  a Python (>= 3.11.4, < 3.13) on PATH, e.g. python3.
# Environment: PIP_CERT, PIP_INDEX_URL (build args; empty = unset),
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

/opt/venv/bin/pip check
/opt/venv/bin/dvc --version >/dev/null
rm -rf /root/.cache
