#!/bin/bash
# Entrypoint of every target: prepare the environment for the image's device, then
# run the command (default: dvc repro) in /workspace.
set -euo pipefail

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

case "${IMBSAM_IMAGE_TARGET:-}" in
ascend)
    # CANN's environment: library paths, ASCEND_OPP_PATH, CANN's Python modules.
    # set_env.sh is written for bash and reads unset variables.
    if [ -f /usr/local/Ascend/ascend-toolkit/set_env.sh ]; then
        set +u
        # shellcheck disable=SC1091
        source /usr/local/Ascend/ascend-toolkit/set_env.sh
        set -u
    else
        echo "entrypoint: /usr/local/Ascend/ascend-toolkit/set_env.sh not found;" \
             "is BASE_IMAGE a CANN image?" >&2
    fi
    ;;
gpu)
    # MindSpore's GPU plugin finds CUDA through these.
    export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
    case ":${LD_LIBRARY_PATH:-}:" in
    *":$CUDA_HOME/lib64:"*) ;;
    *) export LD_LIBRARY_PATH="$CUDA_HOME/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
    esac
    ;;
esac

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
