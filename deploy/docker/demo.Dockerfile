# syntax=docker/dockerfile:1.7
# The demo image: the demo workload (python -m rlscale.devstack.demo_app) and the load
# generator (python -m rlscale.devstack.loadgen). Both need only aiohttp, prometheus-client,
# pydantic and click, so rlscale is installed without its dependencies and those four are
# added: no onnxruntime, no kopf, no torch.
#
# Build from the repository root:
#   docker build -f deploy/docker/demo.Dockerfile -t rlscale/demo:0.1.0 .

# Same pinned base as the operator image (multi-architecture index digest).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# ---- build: the rlscale wheel and the demo's dependencies -------------------------------
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
RUN pip wheel --wheel-dir /wheels --no-deps . \
    && pip wheel --wheel-dir /wheels "aiohttp>=3.9,<4" "prometheus-client>=0.20,<1" "pydantic>=2.7,<3" "click>=8.1"

# ---- runtime ----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="rlscale demo workload and load generator" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Offline from the build stage's wheels (resolved there within pyproject.toml's bounds).
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels --no-deps /wheels/rlscale-*.whl \
    && pip install --no-index --find-links=/wheels aiohttp prometheus-client pydantic click \
    && python -c "import rlscale.devstack.demo_app, rlscale.devstack.loadgen"
RUN groupadd --system --gid 65532 demo \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin demo
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["python"]
CMD ["-m", "rlscale.devstack.demo_app", "--port=8080"]
