#!/bin/bash
# Entrypoint of every target: prepare the environment for the image's device, then
# run the command (default: dvc repro) in /workspace.
set -euo pipefail

# The environment every target runs with, stated once here: the targets stand on different bases, so no
# Dockerfile stage reaches them all. A value given with `docker run -e` wins; IMBSAM_DVC_CACHE_DIR= (empty)
# leaves DVC's cache in the clone.
export IMBSAM_DVC_CACHE_DIR=${IMBSAM_DVC_CACHE_DIR-/cache} \
    DVC_NO_ANALYTICS=${DVC_NO_ANALYTICS-1} \
    MPLBACKEND=${MPLBACKEND-Agg} \
    PYTHONUNBUFFERED=${PYTHONUNBUFFERED-1} \
    PIP_NO_CACHE_DIR=${PIP_NO_CACHE_DIR-1} \
    PIP_DISABLE_PIP_VERSION_CHECK=${PIP_DISABLE_PIP_VERSION_CHECK-1} \
    LANG=${LANG-C.UTF-8}

# HOME must be writable for any --user uid (git, DVC and matplotlib write there).
if [ ! -w "${HOME:-/nonexistent}" ]; then
    export HOME=/tmp
fi
# A --user uid has no /etc/passwd entry: Python's getpass.getuser(), which DVC
# calls, then fails unless USER or LOGNAME names the user.
if [ -z "${USER:-}" ]; then
    USER=$(id -un 2>/dev/null) || USER=uid$(id -u)
    export USER
fi
export LOGNAME=${LOGNAME:-$USER}
# Nor a name for git, which `dvc exp run` needs to commit experiments: a fallback
# identity, used only when neither git's config nor the environment gives one.
if ! git config user.name >/dev/null 2>&1; then
    export GIT_AUTHOR_NAME=${GIT_AUTHOR_NAME:-$USER} GIT_COMMITTER_NAME=${GIT_COMMITTER_NAME:-$USER}
fi
if ! git config user.email >/dev/null 2>&1; then
    export GIT_AUTHOR_EMAIL=${GIT_AUTHOR_EMAIL:-$USER@imbsam.invalid}
    export GIT_COMMITTER_EMAIL=${GIT_COMMITTER_EMAIL:-$USER@imbsam.invalid}
fi

# MindSpore's plugin loader tries the GPU plugin only with CUDA_HOME set, and without a GPU it logs in
# every process that the plugin cannot load (there is no driver). The first stage stops on a missing
# GPU anyway, unless device.target=CPU asks for the CPU, which is then all it needs.
if [ "${IMBSAM_IMAGE_TARGET:-}" = gpu ] && ! compgen -G "/dev/nvidia[0-9]*" >/dev/null; then
    unset CUDA_HOME
fi

if [ "${IMBSAM_IMAGE_TARGET:-}" = ascend ]; then
    # Said before anything runs; the first stage then stops on it (imbsam.device.preflight), and a command
    # that needs no NPU (device.target=CPU, the host check's report) still runs.
    if ! compgen -G "/dev/davinci[0-9]*" >/dev/null; then
        echo "entrypoint: no Ascend NPU is visible (no /dev/davinci*): start the container with" \
             "--device=/dev/davinci0 --device=/dev/davinci_manager --device=/dev/devmm_svm" \
             "--device=/dev/hisi_hdc and the driver mounts (docs/docker.md); npu-smi info lists the NPUs" >&2
    fi
    # CANN's environment, as the CANN image's own entrypoint (which this one replaces) sets it:
    # the toolkit (library paths, ASCEND_OPP_PATH, CANN's Python modules), then the compiler's
    # and NNAL's where the image has them. The scripts are written for bash and read unset variables.
    toolkit=/usr/local/Ascend/ascend-toolkit/set_env.sh
    if [ -f "$toolkit" ]; then
        set +u
        # shellcheck disable=SC1090,SC1091
        source "$toolkit"
        for extra in /usr/local/Ascend/cann-*/share/info/ascendnpu-ir/bin/set_env.sh; do
            # shellcheck disable=SC1090
            [ -f "$extra" ] && source "$extra"
        done
        # shellcheck disable=SC1091
        [ -f /usr/local/Ascend/nnal/atb/set_env.sh ] && source /usr/local/Ascend/nnal/atb/set_env.sh --cxx_abi="${ATB_CXX_ABI:-1}"
        set -u
    else
        echo "entrypoint: $toolkit not found; is ASCEND_BASE_IMAGE a CANN image?" >&2
    fi
fi

# A volume mounted at $IMBSAM_DVC_CACHE_DIR (default /cache) becomes DVC's cache,
# through DVC's global config in $HOME: the clone's own .dvc/config is not touched.
cache_dir=${IMBSAM_DVC_CACHE_DIR:-}
is_mount_point() {
    grep -q " $1 " /proc/self/mountinfo 2>/dev/null \
        || [ "$(stat -c %d "$1")" != "$(stat -c %d "$1/..")" ]
}
if [ -n "$cache_dir" ] && [ -d "$cache_dir" ] && [ -w "$cache_dir" ] \
    && is_mount_point "$cache_dir"; then
    dvc config --global cache.dir "$cache_dir"
elif [ -n "$cache_dir" ] && [ -e "$cache_dir" ] && [ ! -w "$cache_dir" ]; then
    echo "entrypoint: $cache_dir is not writable by uid $(id -u); DVC keeps its" \
         "cache in .dvc/cache" >&2
fi

exec "$@"
