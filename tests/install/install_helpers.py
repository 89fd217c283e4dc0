"""Helpers shared by the install tests (imported by name; conftest puts this folder on sys.path)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "rlscale"
DEPLOY = ROOT / "deploy"
RELEASE = "rlscale"
NAMESPACE = "rlscale-system"

#: Representative value sets the chart must lint, render and validate with (besides the defaults).
REPRESENTATIVE_VALUES: dict[str, dict[str, Any]] = {
    "namespaced-peering": {
        "watchNamespaces": ["team-a", "team-b"],
        "peering": {"enabled": True, "name": "rlscale-shard-1", "priority": 10},
        "logLevel": "debug",
        "trustCustomQueries": True,
        "prometheus": {"url": "https://prometheus.example.com:9090/prom", "urlAllowlist": ["https://prometheus."]},
    },
    "configmap-model-servicemonitor": {
        "model": {"source": "configMap", "configMap": {"name": "rlscale-model", "key": "policy.onnx"}},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
        "image": {"repository": "registry.example.com/rlscale/operator", "digest": "sha256:" + "ab" * 32},
        "serviceAccount": {"annotations": {"example.com/role": "rlscale"}},
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
    },
    "clusterwide-peering": {"peering": {"enabled": True}},
    "kind-demo": yaml.safe_load((DEPLOY / "demo" / "rlscale-values.yaml").read_text()),
}


def run_helm(helm: Path, *args: str, values: Mapping[str, Any] | None = None, tmp: Path | None = None) -> Any:
    """Run helm; with ``values``, they are written to a file and passed with ``--values``."""
    argv = [str(helm), *args]
    if values is not None:
        assert tmp is not None
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(dict(values)))
        argv += ["--values", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def render_chart(helm: Path, tmp: Path, values: Mapping[str, Any] | None = None, *extra: str) -> list[dict[str, Any]]:
    """The chart's rendered objects for ``values`` (helm template must succeed)."""
    proc = run_helm(
        helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra, values=values or {}, tmp=tmp
    )
    assert proc.returncode == 0, proc.stderr
    return docs_of(proc.stdout)


def docs_of(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def load_docs(path: Path) -> list[dict[str, Any]]:
    return docs_of(path.read_text())


def by_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]
