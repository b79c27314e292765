# The proxyrank operator image: `proxyrank operator` (Kopf), no torch.
#   docker build -t proxyrank-operator:dev .          (or `make images`; the trainer image is trainer_image/Dockerfile)
# It installs the `operator` extra (Kopf, the Kubernetes client, prometheus-client, TorchX): no torch. The trainer
# package (proxyrank_trainer) is part of the same distribution and gets installed too; the operator only imports its
# model presets, never the training code.
# The workstation tooling (proxyrank_lab: `proxyrank data`, `proxyrank theory`) is not copied, so the wheel built here
# leaves it out and the image does not ship it; `proxyrank data` in the image says what to install instead.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the wheel needs, so that unrelated changes (tests, docs, charts) keep the layer cache.
COPY pyproject.toml README.md* LICENSE ./
COPY operator/proxyrank/ operator/proxyrank/
COPY trainer_image/proxyrank_trainer/ trainer_image/proxyrank_trainer/
RUN python -m venv /opt/proxyrank \
 && /opt/proxyrank/bin/pip install --no-cache-dir '.[operator]' \
 && /opt/proxyrank/bin/python -c "import importlib.util as u; assert u.find_spec('torch') is None, 'torch leaked in'" \
 && /opt/proxyrank/bin/python -c "import importlib.util as u; assert u.find_spec('proxyrank_lab') is None, 'tooling shipped'" \
 && /opt/proxyrank/bin/proxyrank --version

FROM ${PYTHON_IMAGE}
# A named user for uid 65532: getpass/pwd lookups (Kopf's identity, TorchX) fail for a uid without a passwd entry.
RUN groupadd --gid 65532 proxyrank \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin proxyrank
COPY --from=build /opt/proxyrank /opt/proxyrank
# The root filesystem is read-only in the chart: HOME and TMPDIR point at the writable /tmp emptyDir; no .pyc writes.
ENV PATH=/opt/proxyrank/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 9090 8080
ENTRYPOINT ["proxyrank", "operator"]
