"""Fixtures for the end-to-end tier: a real control plane and a real Prometheus.

The binaries come from ``tools/build-tools.sh`` (or ``RLSCALE_TOOLS_BIN``). The tier is
skipped only when ``RLSCALE_SKIP_E2E=1``; otherwise a missing tool is an error, never a
silent skip, so CI cannot go green without having run it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from rlscale.devstack.cluster import LocalCluster
from rlscale.devstack.prometheus import LocalPrometheus
from rlscale.devstack.tools import locate_tools_bin

SKIP_ENV = "RLSCALE_SKIP_E2E"

PrometheusFactory = Callable[..., LocalPrometheus]


def _skip_if_disabled() -> None:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: end-to-end tier disabled")


@pytest.fixture(scope="session")
def tools_bin() -> Path:
    """Bin dir with etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok."""
    _skip_if_disabled()
    return locate_tools_bin()


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    """Path of the pinned helm binary (built on demand)."""
    _skip_if_disabled()
    return locate_tools_bin(("helm",)) / "helm"


@pytest.fixture(scope="session")
def local_cluster(tools_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One control plane with 3 fake nodes for the whole session (start-up costs ~15-40 s).

    Tests share it, so each one works in its own namespace (see ``namespace``). Its audit
    log records every ServiceAccount outside kube-system (``audit_events``).
    """
    work_dir = tmp_path_factory.mktemp("cluster")
    with LocalCluster(tools_bin, work_dir, nodes=3) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kubeconfig(local_cluster: LocalCluster) -> Path:
    """Admin kubeconfig (bearer token in system:masters) of the session cluster."""
    return local_cluster.kubeconfig


@pytest.fixture(scope="session")
def admin_api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    """A kubernetes ApiClient authenticated as the cluster admin."""
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def namespace(admin_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace, deleted (asynchronously) after the test."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(admin_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture
def local_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusFactory]:
    """Factory: ``local_prometheus(static_targets=[...], scrape_configs=[...])`` starts one.

    Every instance started through it is stopped at the end of the test.
    """
    _skip_if_disabled()
    started: list[LocalPrometheus] = []

    def start(
        static_targets: Sequence[str] = (),
        scrape_configs: Sequence[Mapping[str, Any]] = (),
        **kwargs: Any,
    ) -> LocalPrometheus:
        prom = LocalPrometheus(
            tmp_path_factory.mktemp("prometheus"),
            static_targets=static_targets,
            scrape_configs=scrape_configs,
            **kwargs,
        )
        started.append(prom)
        return prom.start()

    try:
        yield start
    finally:
        for prom in started:
            prom.stop()
