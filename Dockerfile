# syntax=docker/dockerfile:1
#
# ImbSAM reproduction image: one Dockerfile, three targets that differ only in
# base image and environment; the project itself is NOT copied in. Mount a clone
# at /workspace; the default command runs `dvc repro` there.
#
#   docker build --target cpu    -t imbsam:cpu    .
#   docker build --target gpu    -t imbsam:gpu    .
#   docker build --target ascend -t imbsam:ascend .
#
# Build arguments
#   BASE_IMAGE     replaces the base of whichever target is built (empty = the
#                  target's default below). It must be apt-based (Debian/Ubuntu),
#                  glibc, x86-64 or aarch64, and (cpu, ascend) have a python3 on
#                  PATH, or get one from apt, that is >= 3.11.4 and < 3.13:
#                  requirements.lock needs 3.11, imbsam.data needs tarfile's
#                  extraction filters (3.11.4), MindSpore 2.10 stops at 3.12.
#                  Debian 12's own python3 is 3.11.2, hence the python image.
#                    cpu    python:3.11-slim-bookworm  (Debian 12, CPython 3.11 in /usr/local)
#                    gpu    nvidia/cuda:11.6.2-cudnn8-runtime-ubuntu20.04
#                           (CUDA 11.6 + cuDNN 8, what MindSpore's GPU plugin
#                           needs; Ubuntu 20.04 has no Python 3.11 package, so
#                           uv installs a standalone CPython 3.11 into /opt/python:
#                           3.11.18 with uv 0.13.9, fixed by the uv version)
#                    ascend ascendai/cann:8.3.rc1-910b-ubuntu22.04-py3.11
#                           (CANN 8.x + Python 3.11; also quay.io/ascend/cann:...
#                           and swr.cn-south-1.myhuaweicloud.com/ascendhub/cann:...)
#   PIP_CERT       path of a CA bundle visible during the build, for builds behind a
#                  TLS-intercepting proxy (empty = pip's own CA bundle). Provide it
#                  as a build secret, which leaves nothing in the image:
#                    docker build --secret id=pip-cert,src=/etc/ssl/certs/ca-certificates.crt \
#                      --build-arg PIP_CERT=/run/secrets/pip-cert ...
#                  or with buildah: --volume HOST_CA:/host-ca.crt:ro --build-arg PIP_CERT=/host-ca.crt
#   PIP_INDEX_URL  a PyPI mirror (empty = pypi.org).
#   MINDSPORE_PRUNE_PLUGINS  devices whose plugins are deleted from the unified
#                  MindSpore wheel (they cannot load without that device's
#                  libraries). Defaults: cpu "gpu ascend" (saves 1.8 GB),
#                  gpu "ascend", ascend "gpu". Empty keeps them all.
#   UV_IMAGE       gpu only: the image uv is taken from (default ghcr.io/astral-sh/uv:0.13.9).
#   UV_PYTHON_INSTALL_MIRROR  gpu only: a mirror of python-build-standalone releases
#                  (empty = uv's default, GitHub).
#
# Runtime environment (all targets)
#   IMBSAM_IMAGE_TARGET   cpu | gpu | ascend: the device this image was built for
#   IMBSAM_DVC_CACHE_DIR  default /cache: if a volume is mounted there, the
#                         entrypoint makes it DVC's cache (see docker/entrypoint.sh)
#   HOME=/tmp             writable for any --user uid (git, DVC, matplotlib config)

ARG BASE_IMAGE=""
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

# Only the gpu target uses this stage (BuildKit and buildah skip unused stages).
FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------- cpu
FROM ${BASE_IMAGE:-python:3.11-slim-bookworm} AS cpu
COPY --chmod=0755 docker/install-os.sh docker/install-python.sh /usr/local/lib/imbsam/
# gcc builds imbsam's C kernels (imbsam/kernels/onednn_shim.c, imbsam/kernels/batchnorm.c) on first use:
# the CPU's fast convolutions and fused BatchNorm.
RUN /usr/local/lib/imbsam/install-os.sh gcc libc6-dev
COPY requirements.lock /usr/local/lib/imbsam/
ARG PIP_CERT=""
ARG PIP_INDEX_URL=""
ARG MINDSPORE_PRUNE_PLUGINS="gpu ascend"
RUN --mount=type=secret,id=pip-cert /usr/local/lib/imbsam/install-python.sh python3
ENV IMBSAM_IMAGE_TARGET=cpu \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    IMBSAM_DVC_CACHE_DIR=/cache \
    DVC_NO_ANALYTICS=1 \
    MPLBACKEND=Agg \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8
COPY --chmod=0755 docker/entrypoint.sh /usr/local/lib/imbsam/
WORKDIR /workspace
ENTRYPOINT ["/usr/local/lib/imbsam/entrypoint.sh"]
CMD ["dvc", "repro"]

# ---------------------------------------------------------------- gpu
FROM ${BASE_IMAGE:-nvidia/cuda:11.6.2-cudnn8-runtime-ubuntu20.04} AS gpu
COPY --chmod=0755 docker/install-os.sh docker/install-python.sh /usr/local/lib/imbsam/
RUN /usr/local/lib/imbsam/install-os.sh --no-python
COPY requirements.lock /usr/local/lib/imbsam/
ARG PIP_CERT=""
ARG PIP_INDEX_URL=""
ARG UV_PYTHON_INSTALL_MIRROR=""
ARG MINDSPORE_PRUNE_PLUGINS="ascend"
# uv is bind-mounted for this step only: it fetches a standalone CPython 3.11.
RUN --mount=type=secret,id=pip-cert \
    --mount=type=bind,from=uv,source=/uv,target=/usr/local/bin/uv \
    UV_PYTHON_INSTALL_DIR=/opt/python /usr/local/lib/imbsam/install-python.sh uv:3.11
ENV IMBSAM_IMAGE_TARGET=gpu \
    CUDA_HOME=/usr/local/cuda \
    LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/nvidia/lib:/usr/local/nvidia/lib64 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    IMBSAM_DVC_CACHE_DIR=/cache \
    DVC_NO_ANALYTICS=1 \
    MPLBACKEND=Agg \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8
COPY --chmod=0755 docker/entrypoint.sh /usr/local/lib/imbsam/
WORKDIR /workspace
ENTRYPOINT ["/usr/local/lib/imbsam/entrypoint.sh"]
CMD ["dvc", "repro"]

# ---------------------------------------------------------------- ascend
FROM ${BASE_IMAGE:-ascendai/cann:8.3.rc1-910b-ubuntu22.04-py3.11} AS ascend
COPY --chmod=0755 docker/install-os.sh docker/install-python.sh /usr/local/lib/imbsam/
RUN /usr/local/lib/imbsam/install-os.sh
COPY requirements.lock /usr/local/lib/imbsam/
ARG PIP_CERT=""
ARG PIP_INDEX_URL=""
ARG MINDSPORE_PRUNE_PLUGINS="gpu"
# The venv sees the base image's site-packages: CANN's Python modules (te, tbe,
# hccl via set_env.sh's PYTHONPATH) import sympy, decorator, ... from there.
RUN --mount=type=secret,id=pip-cert \
    VENV_SYSTEM_SITE_PACKAGES=1 /usr/local/lib/imbsam/install-python.sh python3
ENV IMBSAM_IMAGE_TARGET=ascend \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    IMBSAM_DVC_CACHE_DIR=/cache \
    DVC_NO_ANALYTICS=1 \
    MPLBACKEND=Agg \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8
COPY --chmod=0755 docker/entrypoint.sh /usr/local/lib/imbsam/
WORKDIR /workspace
ENTRYPOINT ["/usr/local/lib/imbsam/entrypoint.sh"]
CMD ["dvc", "repro"]
