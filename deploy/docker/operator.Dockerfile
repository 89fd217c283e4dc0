# syntax=docker/dockerfile:1.7
# The rlscale operator image: the `rlscale` package with its runtime dependencies only
# (numpy, pydantic, onnxruntime, kopf, kubernetes, prometheus clients, click, pyyaml).
# No extras are installed, so torch and the rest of the training stack never enter it.
#
# Build from the repository root (the context must hold pyproject.toml and the sources):
#   docker build -f deploy/docker/operator.Dockerfile -t rlscale/operator:0.1.0 .
# deploy/docker/operator.Dockerfile.dockerignore keeps the context to the package sources.

# Python 3.11 on Debian bookworm, pinned by tag and by the digest of its multi-architecture
# index (re-check with: docker buildx imagetools inspect python:3.11.14-slim-bookworm).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# ---- build: wheels for rlscale and every runtime dependency ----------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/ src/
COPY policy/ policy/
COPY operator/ operator/
COPY training/ training/
RUN pip wheel --wheel-dir /wheels .

# ---- runtime ----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="rlscale operator" \
      org.opencontainers.image.description="Kubernetes autoscaling operator driven by an ONNX policy behind a safety mask" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Install offline from the build stage's wheels only, then prove the training stack is absent.
# DL3013 (pin pip versions): the install is offline from the wheels the build stage resolved
# within pyproject.toml's version bounds; there is nothing left to resolve here.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels rlscale \
    && python -c "import importlib.util as u, sys; bad = [m for m in ('torch', 'gymnasium') if u.find_spec(m)]; sys.exit(f'training packages in the operator image: {bad}' if bad else 0)" \
    && rlscale --help >/dev/null
# A fixed non-root UID/GID (numeric, so Kubernetes can verify runAsNonRoot); the chart runs as it.
RUN groupadd --system --gid 65532 rlscale \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin rlscale
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["rlscale"]
CMD ["run", "--help"]
