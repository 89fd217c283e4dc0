"""Installing rlscale on the local control plane the way a cluster admin would, and running its operator.

Shared by the end-to-end tier and ``rlscale demo``, so the demo runs exactly what the
tests prove:

* :func:`helm_install` installs ``charts/rlscale`` with the real ``helm`` (CRDs,
  ServiceAccount, RBAC). ``replicaCount`` is forced to 0: there is no kubelet, so the
  chart's operator Deployment would only produce a fake "Running" pod that does nothing.
  ``shard_replicas`` > 1 renders the chart as for that many replicas (their Lease Role)
  and then scales its Deployment to 0: the replicas run as processes with its ServiceAccount.
* :func:`service_account_kubeconfig` asks the TokenRequest API for a token of the chart's
  ServiceAccount and writes a kubeconfig holding only that token, so the operator runs
  with exactly the permissions the chart grants (and the audit log records its calls).
* :class:`OperatorProcess` runs ``rlscale run`` as a child process with that kubeconfig,
  loopback-only metrics and liveness ports, a log file, and SIGKILL for restart tests.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes import config as k8s_config

from .procs import ComponentError, ManagedProcess, free_port, wait_until

__all__ = [
    "ChartRelease",
    "OperatorProcess",
    "chart_dir",
    "helm_install",
    "service_account_kubeconfig",
]


def chart_dir() -> Path:
    """``charts/rlscale`` of the source checkout this package runs from."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "charts" / "rlscale"
        if (candidate / "Chart.yaml").is_file():
            return candidate
    raise FileNotFoundError("charts/rlscale not found: rlscale demo and the e2e tier run from a source checkout")


@dataclass(frozen=True, slots=True)
class ChartRelease:
    """An installed release: where it lives and the ServiceAccount its RBAC is bound to."""

    name: str
    namespace: str
    service_account: str
    values: Mapping[str, Any]

    @property
    def username(self) -> str:
        """The ServiceAccount as the API server (and its audit log) names it."""
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def helm_install(
    helm: Path,
    kubeconfig: Path,
    release: str,
    namespace: str,
    values: Mapping[str, Any],
    work_dir: Path,
    *,
    chart: Path | None = None,
    timeout_s: float = 120.0,
    shard_replicas: int = 0,
) -> ChartRelease:
    """``helm install`` the chart (creating the namespace) with ``values`` plus ``replicaCount: 0``.

    With ``shard_replicas`` > 1, ``replicaCount: shard_replicas`` instead (so the RBAC the chart
    grants sharded replicas is installed), and the operator Deployment is then scaled to 0.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    merged = {**dict(values), "replicaCount": shard_replicas if shard_replicas > 1 else 0}
    values_file = work_dir / f"{release}-values.yaml"
    values_file.write_text(yaml.safe_dump(merged, sort_keys=False))
    argv = [
        str(helm),
        "install",
        release,
        str(chart or chart_dir()),
        "--kubeconfig",
        str(kubeconfig),
        "--namespace",
        namespace,
        "--create-namespace",
        "--values",
        str(values_file),
        "--timeout",
        f"{int(timeout_s)}s",
    ]
    env = {**os.environ, "HELM_CACHE_HOME": str(work_dir / "helm-cache"), "HELM_CONFIG_HOME": str(work_dir / "helm")}
    env["HELM_DATA_HOME"] = str(work_dir / "helm-data")
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout_s + 30, check=False)
    if proc.returncode != 0:
        raise ComponentError("helm", f"helm install {release} failed:\n{proc.stderr.strip()}\n{proc.stdout.strip()}")
    sa = str(((merged.get("serviceAccount") or {}).get("name")) or "")
    if not sa:
        sa = release if "rlscale" in release else f"{release}-rlscale"
    if shard_replicas > 1:
        _scale_to_zero(kubeconfig, namespace, release)
    return ChartRelease(release, namespace, sa, merged)


def _scale_to_zero(kubeconfig: Path, namespace: str, release: str) -> None:
    """Scale the release's Deployments to 0 (its operator pods would only be kwok's pretend ones)."""
    api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
    try:
        apps = client.AppsV1Api(api)
        selector = f"app.kubernetes.io/instance={release}"
        for dep in apps.list_namespaced_deployment(namespace, label_selector=selector).items:
            name = dep.metadata.name if dep.metadata is not None else None
            if name:
                apps.patch_namespaced_deployment_scale(name, namespace, {"spec": {"replicas": 0}})
    finally:
        api.close()


def service_account_kubeconfig(
    admin_api: client.ApiClient,
    server: str,
    ca_file: Path,
    namespace: str,
    service_account: str,
    path: Path,
    *,
    expiration_s: int = 3600,
) -> Path:
    """Write a kubeconfig holding only a TokenRequest token of ``namespace/service_account``."""
    core = client.CoreV1Api(admin_api)
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_s)
    )
    status = core.create_namespaced_service_account_token(service_account, namespace, request).status
    if status is None or not status.token:
        raise RuntimeError(f"TokenRequest for {namespace}/{service_account} returned no token")
    user = f"{namespace}-{service_account}"
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "rlscale-devstack",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(Path(ca_file).read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": status.token}}],
        "contexts": [{"name": user, "context": {"cluster": "rlscale-devstack", "user": user, "namespace": namespace}}],
        "current-context": user,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    path.chmod(0o600)
    return path


class OperatorProcess:
    """``rlscale run`` as a child process (its own process group, a log file, loopback ports).

    ``namespaces`` empty means ``--all-namespaces``. The process runs from ``work_dir``
    (never the repository root, where the ``operator/`` folder would shadow the standard
    library) with ``KUBECONFIG`` set to ``kubeconfig`` and nothing else of the caller's
    credentials.
    """

    def __init__(
        self,
        kubeconfig: Path,
        work_dir: Path,
        *,
        namespaces: Sequence[str] = (),
        prometheus_url: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        name: str = "operator",
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.work_dir = Path(work_dir)
        self.namespaces = tuple(namespaces)
        self.prometheus_url = prometheus_url
        self.extra_args = tuple(extra_args)
        self.extra_env = dict(env or {})
        self.name = name
        self.metrics_port = 0
        self.health_port = 0
        self.log_path = self.work_dir / f"{name}.log"
        self.starts = 0
        self._proc: ManagedProcess | None = None

    def argv(self) -> list[str]:
        """The command line (fresh ports are picked on each start)."""
        args = [sys.executable, "-c", "from rlscale.cli import main; main()", "run", "--standalone"]
        if self.namespaces:
            for ns in self.namespaces:
                args += ["--namespace", ns]
        else:
            args.append("--all-namespaces")
        if self.prometheus_url:
            args += ["--prometheus-url", self.prometheus_url]
        args += [
            "--metrics-addr",
            "127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            "--liveness",
            f"http://127.0.0.1:{self.health_port}/healthz",
            *self.extra_args,
        ]
        return args

    def start(self, timeout_s: float = 90.0) -> OperatorProcess:
        """Start and wait until Kopf's liveness endpoint answers (the operator has finished starting)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_port, self.health_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "RLSCALE_"))}
        env.update({"KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1", **self.extra_env})
        self._proc = ManagedProcess(self.name, self.argv(), self.log_path, env=env, cwd=self.work_dir)
        self._proc.start()
        self.starts += 1
        proc = self._proc
        try:
            wait_until(
                self.healthy,
                timeout=timeout_s,
                what="Kopf liveness /healthz",
                component=self.name,
                log_path=self.log_path,
                alive=proc.alive,
                interval=0.5,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def healthy(self) -> bool:
        """True when the liveness endpoint answers 200."""
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.alive()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def metrics_text(self) -> str:
        """The operator's own ``/metrics`` exposition."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def kill(self) -> None:
        """SIGKILL the operator's whole process group: no shutdown handler runs (a crash, an OOM kill)."""
        if self._proc is None or self._proc.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        if self._proc.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.popen.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Kopf's graceful stop), then SIGKILL; idempotent."""
        if self._proc is not None:
            self._proc.stop(timeout)

    def log_text(self) -> str:
        """Everything the operator logged so far (all starts)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_exit(self, timeout: float) -> int | None:
        """Wait for the process to exit by itself; its status, or None if it still runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return self._proc.returncode() if self._proc is not None else None
            time.sleep(0.1)
        return None

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def operator_error(proc: OperatorProcess, message: str) -> ComponentError:
    """A failure report carrying the operator's log tail."""
    return ComponentError(proc.name, message, proc.log_path)
