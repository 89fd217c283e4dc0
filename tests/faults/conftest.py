"""Fixtures of the fault suite: the end-to-end tier's control plane and Prometheus, reused, not copied.

The fault tests run on the same local stack as ``tests/e2e`` (real kube-apiserver + etcd,
kwok pods, a real Prometheus scraping the twin exporter, the chart's RBAC), so the fixtures
of ``tests/e2e/conftest.py`` are loaded from there and re-bound here, and ``tests/e2e`` is put
on ``sys.path`` for its helper modules (``e2e_helpers``, ``scenario``). Like the e2e tier, the
suite is skipped only with ``RLSCALE_SKIP_E2E=1``; a missing tool is an error.

Every test here is marked ``faults`` (``make faults`` runs them alone; ``make unit`` skips them).
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlscale.devstack.cluster import LocalCluster

E2E_DIR = Path(__file__).resolve().parent.parent / "e2e"
sys.path.insert(0, str(E2E_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# A deliberately broken build (see broken_build/sitecustomize.py): the operators started by the
# suite get it through PYTHONPATH; the in-process checks (the simulator's) get it here.
if os.environ.get("FAULTS_BROKEN_BUILD"):
    runpy.run_path(str(Path(__file__).resolve().parent / "broken_build" / "sitecustomize.py"))


def _load_e2e_conftest() -> object:
    spec = importlib.util.spec_from_file_location("rlscale_e2e_conftest", E2E_DIR / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_e2e = _load_e2e_conftest()
tools_bin = _e2e.tools_bin  # type: ignore[attr-defined]
helm_binary = _e2e.helm_binary  # type: ignore[attr-defined]
local_cluster = _e2e.local_cluster  # type: ignore[attr-defined]
kubeconfig = _e2e.kubeconfig  # type: ignore[attr-defined]
admin_api = _e2e.admin_api  # type: ignore[attr-defined]


@pytest.fixture
def own_cluster(tools_bin: Path, tmp_path: Path) -> Iterator[LocalCluster]:
    """A control plane of this test alone: for faults that restart the API server or etcd.

    The session's ``local_cluster`` is shared by other tests, which must not see it go down.
    """
    with LocalCluster(tools_bin, tmp_path / "cluster", nodes=1) as cluster:
        yield cluster
