"""The demo's metrics, the demo Prometheus's relabelling and the operator's default queries fit together.

A real Prometheus (Debian's ``prometheus``) runs the ``kubernetes-pods`` job of
deploy/prometheus/prometheus.yaml — its relabel rules unchanged, only the Kubernetes
service discovery replaced by a static target carrying the ``__meta_kubernetes_*`` labels
discovery would attach — and scrapes the real demo workload, driven by the real load
generator. The operator's own default queries, rendered and scope-checked by
``rlscale.operator.queries`` for the demo Deployment, must then each return one series.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from install_helpers import DEPLOY

from rlscale.devstack.procs import free_port
from rlscale.devstack.prometheus import LocalPrometheus
from rlscale.operator.queries import SIGNALS, Target, build_queries, pod_regex

NAMESPACE = "rlscale-demo"
POD = "demo-7d9c8b6f5-x2x9q"  # <deployment>-<pod-template-hash>-<suffix>, as Kubernetes names them


def _prometheus_config() -> dict[str, Any]:
    docs = yaml.safe_load_all((DEPLOY / "prometheus" / "prometheus.yaml").read_text())
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    config: dict[str, Any] = yaml.safe_load(cm["data"]["prometheus.yml"])
    return config


def _job(name: str) -> dict[str, Any]:
    (job,) = [j for j in _prometheus_config()["scrape_configs"] if j["job_name"] == name]
    return job


def _pod_labels(port: int, pod: str, scrape: str) -> dict[str, str]:
    return {
        "__meta_kubernetes_namespace": NAMESPACE,
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape": scrape,
        "__meta_kubernetes_pod_annotation_prometheus_io_port": str(port),
        "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": "demo",
    }


def test_cadvisor_job_keeps_the_container_metrics_the_operator_reads() -> None:
    job = _job("kubernetes-cadvisor")
    (keep,) = [r for r in job["metric_relabel_configs"] if r.get("action") == "keep"]
    names = {
        m.group(1) for s in SIGNALS for m in re.finditer(r"\b(container_[a-z_]+)\{", s.default)
    }  # the cAdvisor series of the default queries
    assert names, "the default queries read cAdvisor metrics"
    for name in names:
        assert re.fullmatch(keep["regex"], name), name  # Prometheus anchors relabel regexes
    assert job["kubernetes_sd_configs"] == [{"role": "node"}]
    assert any(r.get("replacement", "").endswith("/proxy/metrics/cadvisor") for r in job["relabel_configs"])


def test_pods_job_labels_namespace_and_pod() -> None:
    rules = _job("kubernetes-pods")["relabel_configs"]
    targets = {r.get("target_label"): r.get("source_labels") for r in rules}
    assert targets["namespace"] == ["__meta_kubernetes_namespace"]
    assert targets["pod"] == ["__meta_kubernetes_pod_name"]


def _promtool() -> str | None:
    """A promtool that knows kubernetes_sd_configs (Debian's is built without it)."""
    return os.environ.get("RLSCALE_PROMTOOL") or shutil.which("promtool")


def test_config_passes_promtool(tmp_path: Path) -> None:
    promtool = _promtool()
    if promtool is None:
        pytest.skip("no promtool: set RLSCALE_PROMTOOL to a promtool built with Kubernetes discovery")
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(_prometheus_config()))
    proc = subprocess.run([promtool, "check", "config", "--syntax-only", str(path)], capture_output=True, text=True)
    if "kubernetes_sd_configs not found" in proc.stdout + proc.stderr:
        pytest.skip(f"{promtool} is built without Kubernetes discovery (Debian's is); set RLSCALE_PROMTOOL")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(url)
        time.sleep(0.2)


@pytest.fixture
def demo_under_load(tmp_path: Path) -> Iterator[int]:
    """The demo app (1 ms of work per request) on loopback, with the load generator replaying the default day."""
    port = free_port()
    procs = []
    try:
        demo = subprocess.Popen(
            [sys.executable, "-m", "rlscale.devstack.demo_app", "--host=127.0.0.1", f"--port={port}", "--work-ms=1"],
            stdout=(tmp_path / "demo.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        procs.append(demo)
        _wait_http(f"http://127.0.0.1:{port}/healthz")
        load = subprocess.Popen(
            [
                sys.executable, "-m", "rlscale.devstack.loadgen", f"--url=http://127.0.0.1:{port}/",
                "--peak-rps=40", "--speedup=600", "--loop", "--duration=120", "--report-every=60",
            ],
            stdout=(tmp_path / "loadgen.log").open("w"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(load)
        yield port
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


@pytest.mark.slow
def test_default_queries_answer_against_the_demo(demo_under_load: int, tmp_path: Path) -> None:
    port = demo_under_load
    job = _job("kubernetes-pods")
    del job["kubernetes_sd_configs"]
    job["static_configs"] = [
        {"targets": [f"127.0.0.1:{port}"], "labels": _pod_labels(port, POD, "true")},
        # A pod that did not ask to be scraped: the relabelling must drop it.
        {"targets": [f"127.0.0.1:{port}"], "labels": _pod_labels(port, "demo-7d9c8b6f5-nope1", "false")},
    ]
    job["scrape_interval"] = "1s"
    job["scrape_timeout"] = "1s"
    target = Target(namespace=NAMESPACE, deployment="demo", containers=("demo",), window="5s")
    assert re.fullmatch(pod_regex("demo"), POD)
    queries = {q.key: q.query for q in build_queries({}, target, trusted=False)}
    with LocalPrometheus(tmp_path / "prometheus", scrape_configs=[job]) as prom:
        prom.wait_for_value(f'sum(rate(http_requests_total{{namespace="{NAMESPACE}"}}[5s])) > 0', timeout=60)
        series = prom.query('up{job="kubernetes-pods"}')
        assert [s["metric"]["pod"] for s in series] == [POD]
        assert series[0]["metric"]["namespace"] == NAMESPACE and series[0]["metric"]["app"] == "demo"
        values: dict[str, float] = {}
        for key, query in queries.items():
            if key in ("cpu_usage", "memory_working_set"):
                continue  # cAdvisor's, not the app's (checked above against the cadvisor job)
            result = prom.query(query)
            assert len(result) == 1, (key, query, result)
            values[key] = float(result[0]["value"][1])
    assert values["request_rate"] > 0
    assert values["error_rate"] == 0.0
    assert 0 < values["latency_p50"] <= values["latency_p99"] < 10
    assert values["in_flight"] >= 0 and not math.isnan(values["in_flight"])
