#!/bin/bash
# Build-time step (every target): delete MindSpore plugins the image cannot load.
# Usage: prune-plugins.sh NAME...
#   gpu | ascend  every plugin of that device (it cannot load without the device's libraries);
#   gpu11.1       the GPU plugin built for CUDA 11.1 (the gpu image carries CUDA 11.8 libraries,
#                 which the CUDA 11.6 build serves).
# The unified wheel is 2.5 GB, 1.8 GB of it GPU and Ascend plugins.
set -euo pipefail

plugins=$(/opt/venv/bin/python -c 'import importlib.util as u, pathlib as p; print(p.Path(u.find_spec("mindspore").origin).parent / "lib" / "plugin")')
for name in "$@"; do
    case $name in
    gpu | ascend)
        rm -rf "${plugins:?}/$name" "$plugins/$name"[0-9]* \
            "$plugins/libmindspore_$name.so"* "$plugins/libmindspore_ops_$name.so" ;;
    gpu11.1) rm -rf "${plugins:?}/gpu11.1" "$plugins/libmindspore_gpu.so.11.1" ;;
    *) echo "prune-plugins.sh: unknown plugin $name (gpu, ascend or gpu11.1)" >&2; exit 1 ;;
    esac
done
