# syntax=docker/dockerfile:1
#
# ImbSAM reproduction image: one Dockerfile, three targets; the project itself is NOT
# copied in. Mount a clone at /workspace; the default command runs `dvc repro` there.
#
#   docker build --target cpu    -t imbsam:cpu    .
#   docker build --target gpu    -t imbsam:gpu    .
#   docker build --target ascend -t imbsam:ascend .
#
# cpu and gpu share one Debian 12 + CPython 3.11 base and one venv build; the gpu target
# adds the CUDA 11 user-space libraries from pinned PyPI wheels (requirements-gpu.lock):
# only the driver comes from the host, through the NVIDIA Container Toolkit (--gpus).
# The ascend target starts from a CANN image, which brings the Ascend toolkit.
#
# Build arguments
#   BASE_IMAGE     replaces the base of cpu and gpu (default python:3.11-slim-bookworm).
#                  It must be apt-based (Debian/Ubuntu), glibc, x86-64 (the gpu target;
#                  cpu also aarch64), with a python3 on PATH that is >= 3.11.4 and < 3.13:
#                  requirements.lock needs 3.11, imbsam.data tarfile's extraction filters
#                  (3.11.4), MindSpore 2.10 stops at 3.12. Debian 12's own python3 is 3.11.2.
#   ASCEND_BASE_IMAGE  the ascend target's base: a CANN image with Python 3.11 (default
#                  ascendai/cann:9.1.0-910b-ubuntu22.04-py3.11, also on quay.io/ascend/cann:
#                  CANN 9.1.0, which the wheel's Ascend operators were built with, for Atlas A2
#                  (910B) chips; a3 or 310p in place of 910b for those, docs/docker.md).
#   PIP_CERT       path of a CA bundle visible during the build, for builds behind a
#                  TLS-intercepting proxy (empty = pip's own CA bundle). Provide it
#                  as a build secret, which leaves nothing in the image:
#                    docker build --secret id=pip-cert,src=/etc/ssl/certs/ca-certificates.crt \
#                      --build-arg PIP_CERT=/run/secrets/pip-cert ...
#                  or with buildah: --volume HOST_CA:/host-ca.crt:ro --build-arg PIP_CERT=/host-ca.crt
#   PIP_INDEX_URL  a PyPI mirror (empty = pypi.org).
#
# Runtime environment (all targets)
#   IMBSAM_IMAGE_TARGET   cpu | gpu | ascend: the device this image was built for
#   PATH                  the venv's bin first
# The rest of the environment all targets share is stated once, in docker/entrypoint.sh, which every target
# runs (cpu and gpu on one base, ascend on CANN's: no stage could carry an ENV to both).

ARG BASE_IMAGE=""
ARG ASCEND_BASE_IMAGE=ascendai/cann:9.1.0-910b-ubuntu22.04-py3.11

# ---------------------------------------------------------------- os: the shared base
FROM ${BASE_IMAGE:-python:3.11-slim-bookworm} AS os
COPY --chmod=0755 docker/install-os.sh docker/install-python.sh docker/prune-plugins.sh docker/install-cuda.sh \
     /usr/local/lib/imbsam/
# gcc builds imbsam's C kernels (imbsam/kernels/onednn_shim.c, imbsam/kernels/batchnorm.c) on first use:
# the CPU's fast convolutions and fused BatchNorm (the gpu image's CPU evaluation uses them too).
RUN /usr/local/lib/imbsam/install-os.sh gcc libc6-dev

# ---------------------------------------------------------------- venv: built once for cpu and gpu
FROM os AS venv
COPY requirements.lock /usr/local/lib/imbsam/
ARG PIP_CERT=""
ARG PIP_INDEX_URL=""
RUN --mount=type=secret,id=pip-cert /usr/local/lib/imbsam/install-python.sh python3

FROM venv AS venv-cpu
# The unified MindSpore wheel carries every device's plugins: the cpu image drops 1.8 GB of them.
RUN /usr/local/lib/imbsam/prune-plugins.sh gpu ascend

FROM venv AS venv-gpu
COPY requirements-gpu.lock /usr/local/lib/imbsam/
ARG PIP_CERT=""
ARG PIP_INDEX_URL=""
RUN --mount=type=secret,id=pip-cert \
    /usr/local/lib/imbsam/prune-plugins.sh ascend gpu11.1 && /usr/local/lib/imbsam/install-cuda.sh

# ---------------------------------------------------------------- runtime: what both images run with
FROM os AS runtime
ENV PATH=/opt/venv/bin:$PATH
COPY --chmod=0755 docker/entrypoint.sh /usr/local/lib/imbsam/
# Writable by any --user uid: DVC's site cache, and the mount points of the DVC cache volume and
# of the gpu image's CUDA JIT cache volume (Docker gives a new named volume the mode of the
# directory it is mounted on).
RUN install -d -m 1777 /var/tmp/dvc /var/tmp/dvc/repo /cache /var/cache/cuda
WORKDIR /workspace
ENTRYPOINT ["/usr/local/lib/imbsam/entrypoint.sh"]
CMD ["dvc", "repro"]

# ---------------------------------------------------------------- cpu
FROM runtime AS cpu
ENV IMBSAM_IMAGE_TARGET=cpu
COPY --from=venv-cpu /opt /opt

# ---------------------------------------------------------------- gpu
FROM runtime AS gpu
# CUDA_HOME and LD_LIBRARY_PATH are where MindSpore looks for CUDA (docker/install-cuda.sh);
# plugin/gpu11.6 holds the GPU plugin's own libraries (NCCL, AKG). The NVIDIA_* variables
# ask the NVIDIA Container Toolkit for the driver's compute libraries and nvidia-smi. With a
# volume at CUDA_CACHE_PATH, a GPU whose kernels the driver compiles from PTX on first use
# (docs/docker.md) pays for it once, not in every container.
ENV IMBSAM_IMAGE_TARGET=gpu \
    CUDA_HOME=/opt/cuda \
    LD_LIBRARY_PATH=/opt/cuda/lib64:/opt/venv/lib/python3.11/site-packages/mindspore/lib/plugin/gpu11.6 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    CUDA_CACHE_PATH=/var/cache/cuda \
    CUDA_CACHE_MAXSIZE=4294967296
# /opt holds the venv and CUDA_HOME: one layer.
COPY --from=venv-gpu /opt /opt

# ---------------------------------------------------------------- ascend
FROM ${ASCEND_BASE_IMAGE} AS ascend
COPY --chmod=0755 docker/install-os.sh docker/install-python.sh docker/prune-plugins.sh /usr/local/lib/imbsam/
RUN /usr/local/lib/imbsam/install-os.sh
COPY requirements.lock /usr/local/lib/imbsam/
ARG PIP_CERT=""
ARG PIP_INDEX_URL=""
# The venv sees the base image's site-packages: CANN's Python modules (te, tbe,
# hccl via set_env.sh's PYTHONPATH) import sympy, decorator, ... from there.
RUN --mount=type=secret,id=pip-cert \
    VENV_SYSTEM_SITE_PACKAGES=1 /usr/local/lib/imbsam/install-python.sh python3 \
    && /usr/local/lib/imbsam/prune-plugins.sh gpu \
    && install -d -m 1777 /var/tmp/dvc /var/tmp/dvc/repo /cache
ENV IMBSAM_IMAGE_TARGET=ascend \
    PATH=/opt/venv/bin:$PATH
COPY --chmod=0755 docker/entrypoint.sh /usr/local/lib/imbsam/
WORKDIR /workspace
ENTRYPOINT ["/usr/local/lib/imbsam/entrypoint.sh"]
CMD ["dvc", "repro"]
