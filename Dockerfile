# aerialdet image: Ray + the aerialdet console script, on Ray's official image.
#
# The base's Ray and Python versions are the project's (tests/deploy checks
# RAY_VERSION against the installed ray and PY_TAG against requires-python);
# torch/torchvision are the Makefile's TORCH_PINS (tests/deploy checks that too).
#   CPU:  docker build -t aerialdet:cpu .
#   CUDA: docker build -t aerialdet:gpu --build-arg RAY_PLATFORM=-gpu \
#           --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
# No credentials in any layer: nothing secret is an ARG or ENV here, and
# .dockerignore keeps .env, data and outputs out of the build context.
ARG RAY_VERSION=2.60.0
ARG PY_TAG=py311
ARG RAY_PLATFORM=
FROM rayproject/ray:${RAY_VERSION}-${PY_TAG}${RAY_PLATFORM}

ARG RAY_VERSION
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_PINS="torch==2.14.1 torchvision==0.29.1"

ENV PYTHONUNBUFFERED=1 \
    RAY_AUTH_MODE=token \
    RAY_USAGE_STATS_ENABLED=0

# The base image gives its `ray` user passwordless sudo (`ray ALL=NOPASSWD:
# ALL` in /etc/sudoers, and the sudo group): code in any container, job code
# included, could become root. Take that away, and the sudo package with it,
# and fail the build if anything of it is left.
# Outputs go to a named volume mounted here; created (owned by the non-root
# user) so that Docker copies this ownership into a new volume.
USER root
RUN { ! id -nG ray | grep -qw sudo || gpasswd -d ray sudo; } \
    && SUDO_FORCE_REMOVE=yes apt-get purge -y sudo \
    && rm -rf /etc/sudoers /etc/sudoers.d \
    && ! command -v sudo \
    && ! id -nG ray | grep -qw sudo \
    && mkdir -p /outputs /app && chown ray:users /outputs /app
# docker-compose.yml's check-env runs this (root-owned, read-only for ray)
# against the example's values before any service that holds a secret starts.
COPY deploy/check-env.sh /app/deploy/check-env.sh
COPY .env.example /app/deploy/env.example
USER ray

RUN pip install --no-cache-dir --index-url ${TORCH_INDEX} ${TORCH_PINS}

WORKDIR /app
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users pipeline ./pipeline
COPY --chown=ray:users retinanet ./retinanet
COPY --chown=ray:users jobs ./jobs
# torch is already there (pinned above, from TORCH_INDEX); the base's Ray stays at RAY_VERSION
RUN pip install --no-cache-dir . "ray[data,train,default]==${RAY_VERSION}"
