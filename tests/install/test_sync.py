"""deploy/ and the chart's generated files are current with their sources (operator/, the chart)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from install_helpers import CHART, DEPLOY, NAMESPACE, ROOT, by_kind, load_docs


def test_sync_check_passes() -> None:
    """scripts/sync-manifests.py --check: the CRD copy, the RBAC rules and deploy/operator are current."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sync-manifests.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["autoscalepolicy.yaml", "capacitybudget.yaml"])
def test_crd_copy_is_identical(name: str) -> None:
    source = (ROOT / "operator" / "crd" / name).read_bytes()
    assert (CHART / "crds" / name).read_bytes() == source


def test_plain_manifests_hold_the_whole_install() -> None:
    crds = load_docs(DEPLOY / "operator" / "crds.yaml")
    assert sorted(d["metadata"]["name"] for d in crds) == [
        "autoscalepolicies.rlscale.io",
        "capacitybudgets.rlscale.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    ]
    docs = load_docs(DEPLOY / "operator" / "rlscale.yaml")
    assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == NAMESPACE
    assert docs[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for d in docs[1:]:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"]["namespace"] == NAMESPACE, d["metadata"]
    assert len(by_kind(docs, "Deployment")) == 1


def _sync_module() -> Any:
    spec = importlib.util.spec_from_file_location("sync_manifests", ROOT / "scripts" / "sync-manifests.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_detects_drift(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The check fails with a diff when a generated file was edited by hand (on a copy of deploy/operator)."""
    sync = _sync_module()
    monkeypatch.setattr(sync, "helm_binary", lambda: helm)
    copy = tmp_path / "operator"
    shutil.copytree(DEPLOY / "operator", copy)
    monkeypatch.setattr(sync, "DEPLOY_DIR", copy)
    assert sync.sync(check=True) == 0
    edited = copy / "rlscale.yaml"
    edited.write_text(edited.read_text().replace("replicas: 1", "replicas: 3", 1))
    assert sync.sync(check=True) == 1
    out = capsys.readouterr().out
    assert "-  replicas: 3" in out and "+  replicas: 1" in out
    assert sync.sync(check=False) == 0
    assert edited.read_text() == (DEPLOY / "operator" / "rlscale.yaml").read_text()
