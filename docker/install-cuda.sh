#!/bin/bash
# Build-time step 3 (gpu target): the CUDA 11 user-space libraries from pinned PyPI wheels
# (requirements-gpu.lock), laid out as the CUDA_HOME MindSpore 2.10 looks for.
#
# MindSpore finds CUDA in three ways, and each must see a CUDA 11 it has a build for (it has
# builds for 11.1 and 11.6; the image keeps the 11.6 one, which runs on these 11.8 libraries):
# - the dynamic loader resolves libmindspore_gpu.so.11.6's libraries through LD_LIBRARY_PATH
#   (the Dockerfile puts /opt/cuda/lib64 there, where every wheel library is linked);
# - its plugin loader runs `$CUDA_HOME/bin/nvcc --version` and loads the build for that version
#   or the nearest lower one of the same major: PyPI ships no CUDA 11 compiler, so bin/nvcc here
#   answers that one query, with the runtime's own version (11.8), and refuses everything else;
# - its environment check (mindspore/run_check/_check_version.py) reads the CUDA version off a
#   file named libcudart.so.X.Y.Z next to the runtime, and puts plugin/gpuX.Y (NCCL, AKG) on the
#   library path: libcudart.so.11.6.0 names the build that runs, since the check knows no 11.8.
set -euo pipefail

/opt/venv/bin/pip install --no-cache-dir -r /usr/local/lib/imbsam/requirements-gpu.lock
site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
runtime=$(/opt/venv/bin/python -c 'import importlib.metadata as m; print(m.version("nvidia-cuda-runtime-cu11"))')

install -d /opt/cuda/lib64 /opt/cuda/bin
ln -s "$site"/nvidia/*/lib/lib*.so* /opt/cuda/lib64/
ln -s libcudart.so.11.0 /opt/cuda/lib64/libcudart.so.11.6.0
# The check reads cuDNN's version the same way; this name is the wheel's own version.
cudnn=$(/opt/venv/bin/python -c 'import importlib.metadata as m; print(".".join(m.version("nvidia-cudnn-cu11").split(".")[:3]))')
ln -s libcudnn.so.8 "/opt/cuda/lib64/libcudnn.so.$cudnn"

cat >/opt/cuda/bin/nvcc <<NVCC
#!/bin/sh
# Not a compiler: the imbsam gpu image carries CUDA's runtime libraries only (docker/install-cuda.sh).
# This answers MindSpore's query for the CUDA version, with the runtime's, and refuses the rest.
if [ "\$#" = 1 ] && [ "\$1" = --version ]; then
    echo "nvcc: CUDA version query of the imbsam gpu image (CUDA runtime $runtime, no compiler)"
    echo "Cuda compilation tools, release ${runtime%.*}, V$runtime"
    exit 0
fi
echo "nvcc fatal : this image has no CUDA compiler (only nvcc --version answers)" >&2
exit 1
NVCC
chmod 0755 /opt/cuda/bin/nvcc
