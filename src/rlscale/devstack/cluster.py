"""A real Kubernetes control plane on 127.0.0.1, without Docker.

kind needs a Docker engine, which the development and CI machines lack, so the e2e tier
and the local demo run the upstream binaries (built from Go modules by
``tools/build-tools.sh``) as plain processes:

* etcd, on free loopback ports, fsync off (a throw-away store);
* kube-apiserver with RBAC, ServiceAccount token signing, a static-token admin in
  ``system:masters`` and an audit log (so e2e can prove which calls a ServiceAccount
  makes and which are denied);
* kube-controller-manager (Deployments -> ReplicaSets -> Pods, the ``default``
  ServiceAccount, GC, node lifecycle), each controller under its own ServiceAccount like
  kubeadm does;
* kube-scheduler;
* kwok, which plays the kubelet for N fake nodes so scheduled pods become Running.

There is no kubelet, kube-proxy or CNI: Service IPs do not route and containers never
run. Everything the operator under test talks to (the API and its RBAC) is real.

The certificates are made by :mod:`rlscale.devstack.certs` and the address the apiserver
advertises is found by :mod:`rlscale.devstack.network`; this module starts and stops the
processes and waits for each to be ready.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from .certs import CertificateError, write_control_plane_pki
from .network import detect_advertise_address
from .procs import ComponentError, ManagedProcess, free_port

__all__ = [
    "FAKE_NODE_ANNOTATION",
    "ClusterStartError",
    "LocalCluster",
    "NodeShape",
    "audit_policy_for",
    "default_audit_policy",
]

log = logging.getLogger(__name__)

# kwok manages only nodes carrying this annotation (so it can never touch real ones).
FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
REQUIRED_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class ClusterStartError(ComponentError):
    """The cluster failed to come up; ``component`` names the culprit, the log tail says why."""


@dataclass(frozen=True)
class NodeShape:
    """Allocatable resources of one fake node (capacity == allocatable)."""

    cpu: str = "32"
    memory: str = "256Gi"
    pods: str = "110"


def default_audit_policy() -> dict[str, Any]:
    """Audit every ServiceAccount outside kube-system at Metadata level, nothing else.

    The controller-manager runs each controller as a kube-system ServiceAccount; those
    calls are noise. An operator's ServiceAccount lives in its own namespace, so its
    calls (and any 403) land in the log without knowing its name before start-up.
    """
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
            {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
            {"level": "None"},
        ],
    }


def audit_policy_for(
    users: Sequence[str] = (), user_groups: Sequence[str] = (), level: str = "Metadata"
) -> dict[str, Any]:
    """An audit policy recording only the given users/groups, e.g. ``system:serviceaccount:ns:sa``."""
    rules: list[dict[str, Any]] = []
    if users:
        rules.append({"level": level, "users": list(users)})
    if user_groups:
        rules.append({"level": level, "userGroups": list(user_groups)})
    rules.append({"level": "None"})
    return {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"], "rules": rules}


class LocalCluster:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok on loopback.

    Usage::

        with LocalCluster(bin_dir, work_dir, nodes=3) as cluster:
            cluster.kubeconfig  # admin kubeconfig (token in system:masters)

    ``start()`` wipes the work dir's previous state (every start is a fresh cluster),
    writes PKI and kubeconfigs there, and returns once the API is ready, the nodes are
    Ready and schedulable, and the ``default`` ServiceAccount exists. Each component
    logs to ``<work_dir>/logs/<name>.log``; a failed start raises ClusterStartError naming
    the component with its log tail, after stopping whatever had started. ``stop()``
    terminates then kills each process group and is safe to call any number of times.
    Components die with the starting thread (PR_SET_PDEATHSIG) unless
    ``die_with_parent=False``.
    """

    def __init__(
        self,
        bin_dir: Path | str,
        work_dir: Path | str,
        *,
        nodes: int = 3,
        node_shape: NodeShape = NodeShape(),
        audit: bool = True,
        audit_policy: Mapping[str, Any] | Path | None = None,
        audit_log_path: Path | str | None = None,
        kwok_stages: Path | str | None = None,
        advertise_address: str | None = None,
        extra_apiserver_args: Sequence[str] = (),
        start_timeout: float = 180.0,
        die_with_parent: bool = True,
    ) -> None:
        """Configure (not start) a cluster.

        ``audit_policy`` defaults to :func:`default_audit_policy`; ``audit_log_path`` to
        ``<work_dir>/audit.log``. ``kwok_stages`` defaults to the stage file that
        build-tools.sh keeps next to the bin dir (``../share/kwok-stages.yaml``); without
        one kwok uses its built-in default stages.
        """
        self.bin_dir = Path(bin_dir).resolve()
        self.work_dir = Path(work_dir).resolve()
        self.node_count = nodes
        self.node_shape = node_shape
        self.audit = audit
        self.audit_policy = audit_policy
        self.audit_log_path = Path(audit_log_path).resolve() if audit_log_path else self.work_dir / "audit.log"
        default_stages = self.bin_dir.parent / "share" / "kwok-stages.yaml"
        if kwok_stages is not None:
            self.kwok_stages: Path | None = Path(kwok_stages)
        else:
            self.kwok_stages = default_stages if default_stages.is_file() else None
        self.advertise_address = advertise_address or detect_advertise_address()
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.start_timeout = start_timeout
        self.die_with_parent = die_with_parent

        self.pki_dir = self.work_dir / "pki"
        self.log_dir = self.work_dir / "logs"
        self.kubeconfig = self.work_dir / "admin.kubeconfig"
        self.admin_token = ""
        self.ports: dict[str, int] = {}
        self.timings: dict[str, float] = {}
        self._procs: dict[str, ManagedProcess] = {}
        self._ready: dict[str, tuple[str, Callable[[], bool]]] = {}  # component → (what, readiness probe)
        self._ssl: ssl.SSLContext | None = None
        self._started = False

    # ---- public API -------------------------------------------------------------------

    @property
    def server(self) -> str:
        """The apiserver URL (https on 127.0.0.1)."""
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def ca_file(self) -> Path:
        """CA that signed the apiserver's serving certificate."""
        return self.pki_dir / "ca.crt"

    @property
    def etcd_endpoint(self) -> str:
        """etcd client URL (plain http on loopback)."""
        return f"http://127.0.0.1:{self.ports['etcd']}"

    @property
    def processes(self) -> dict[str, ManagedProcess]:
        """Started components by name, in start order."""
        return dict(self._procs)

    def start(self) -> LocalCluster:
        """Bring the whole stack up and wait until pods can be scheduled and run."""
        if self._started:
            return self
        missing = [b for b in REQUIRED_BINARIES if not (self.bin_dir / b).is_file()]
        if missing:
            raise ClusterStartError(
                "tools", f"missing binaries in {self.bin_dir}: {', '.join(missing)} (run tools/build-tools.sh)"
            )
        if shutil.which("openssl") is None:
            raise ClusterStartError("pki", "openssl not found on PATH (apt-get install openssl)")
        self._started = True
        t0 = time.monotonic()
        try:
            self._prepare_dirs()
            for name, fn in self._phases():
                self._phase(name, fn)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        log.info("local cluster ready at %s in %.1fs (%s)", self.server, self.timings["total"], self.timings)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every component (leaves first, etcd last); idempotent."""
        procs = self._procs
        leaves = [p for n, p in procs.items() if n not in ("kube-apiserver", "etcd")]
        for p in leaves:  # signal together, then wait: shutdowns overlap
            if p.pid is not None and p.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in leaves:
            p.stop(timeout)
        for name in ("kube-apiserver", "etcd"):
            if name in procs:
                procs[name].stop(timeout)
        self._started = False

    def stop_component(self, name: str, *, kill: bool = False, timeout: float = 15.0) -> None:
        """Stop one component (SIGTERM then SIGKILL, or SIGKILL at once with ``kill``); the rest keep running.

        For fault tests: the component's ports, data directory (etcd keeps its store) and
        certificates stay, so :meth:`start_component` brings the same component back.
        """
        proc = self._component(name)
        if kill:
            if proc.pid is not None and proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            if proc.popen is not None:
                with contextlib.suppress(Exception):
                    proc.popen.wait(timeout=timeout)
        else:
            proc.stop(timeout)

    def start_component(self, name: str) -> float:
        """Start a stopped component again with its original command line; wait until it is ready.

        Returns the seconds it took to become ready. Raises ClusterStartError, naming the
        component with its log tail, if it does not.
        """
        proc = self._component(name)
        if proc.alive():
            raise ClusterStartError(name, "is still running; stop_component() it first", proc.log_path)
        t0 = time.monotonic()
        try:
            proc.start()
        except ComponentError as exc:
            raise ClusterStartError(name, str(exc), proc.log_path) from exc
        what, probe = self._ready[name]
        self._wait(proc, what, probe, deadline_s=self.start_timeout)
        return time.monotonic() - t0

    def restart_component(self, name: str, *, down_s: float = 0.0, kill: bool = False) -> float:
        """Stop one component, leave it down ``down_s`` seconds, start it again; the seconds until ready."""
        self.stop_component(name, kill=kill)
        time.sleep(down_s)
        return self.start_component(name)

    def _component(self, name: str) -> ManagedProcess:
        if name not in self._procs:
            raise KeyError(f"no component {name!r}; this cluster runs {', '.join(self._procs)}")
        return self._procs[name]

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> Any:
        """Call the API as the admin; returns decoded JSON (or text for non-JSON replies)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.admin_token}",
                "Accept": "application/json",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(req, context=self._ssl_context(), timeout=timeout) as resp:
            raw = resp.read().decode()
            if resp.headers.get_content_type() == "application/json":
                return json.loads(raw)
            return raw

    def create_node(self, name: str, shape: NodeShape | None = None, labels: Mapping[str, str] | None = None) -> None:
        """Register one fake node that kwok will mark Ready and run pods on."""
        shape = shape or self.node_shape
        resources = {"cpu": shape.cpu, "memory": shape.memory, "pods": shape.pods}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {FAKE_NODE_ANNOTATION[0]: FAKE_NODE_ANNOTATION[1], "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/hostname": name,
                    "type": "kwok",
                    **(labels or {}),
                },
            },
            # No kwok NoSchedule taint: ordinary Deployments must land here.
            "spec": {},
            "status": {"allocatable": resources, "capacity": resources, "phase": "Running"},
        }
        try:
            self.request("POST", "/api/v1/nodes", node)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise

    def node_names(self) -> list[str]:
        """Names of the fake nodes created at start."""
        return [f"kwok-node-{i}" for i in range(self.node_count)]

    def audit_events(self, user: str | None = None) -> list[dict[str, Any]]:
        """Parsed audit events so far (optionally of one user), oldest first."""
        events: list[dict[str, Any]] = []
        if not self.audit_log_path.exists():
            return events
        for line in self.audit_log_path.read_text().splitlines():
            if not line.strip():
                continue
            event = json.loads(line)
            if user is None or event.get("user", {}).get("username") == user:
                events.append(event)
        return events

    def component_logs(self) -> dict[str, Path]:
        """Log file of each component."""
        return {name: p.log_path for name, p in self._procs.items()}

    def state(self) -> dict[str, Any]:
        """JSON-able description (for `rlscale cluster status` and down)."""
        return {
            "server": self.server if "apiserver" in self.ports else None,
            "kubeconfig": str(self.kubeconfig),
            "work_dir": str(self.work_dir),
            "ports": dict(self.ports),
            "pids": {name: p.pid for name, p in self._procs.items()},
            "timings": dict(self.timings),
        }

    # ---- start-up phases ----------------------------------------------------------------

    def _phases(self) -> list[tuple[str, Callable[[], None]]]:
        """The start-up phases, in order; a subclass that needs less of the stack returns a prefix."""
        return [
            ("pki", self._write_pki),
            ("etcd", self._start_etcd),
            ("kube-apiserver", self._start_apiserver),
            ("controllers", self._start_controllers),
            ("nodes", self._create_and_wait_nodes),
            ("default-serviceaccount", self._wait_default_service_account),
        ]

    def _phase(self, name: str, fn: Any) -> None:
        t = time.monotonic()
        fn()
        self.timings[name] = round(time.monotonic() - t, 2)

    def _remaining(self) -> float:
        return max(5.0, self.start_timeout - sum(self.timings.values()))

    def _prepare_dirs(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("etcd", "pki", "logs"):
            shutil.rmtree(self.work_dir / stale, ignore_errors=True)
        for d in (self.pki_dir, self.log_dir):
            d.mkdir(parents=True)
        self.audit_log_path.parent.mkdir(parents=True, exist_ok=True)
        self.audit_log_path.unlink(missing_ok=True)
        self._ssl = None
        self._procs = {}
        self._ready = {}
        self.timings = {}
        for port in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok"):
            self.ports[port] = free_port()

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.log_dir / f"{name}.log", die_with_parent=self.die_with_parent)
        self._procs[name] = proc
        try:
            proc.start()
        except ComponentError as exc:
            raise ClusterStartError(name, str(exc), proc.log_path) from exc
        return proc

    def _wait(
        self,
        proc: ManagedProcess,
        what: str,
        predicate: Callable[[], bool],
        interval: float = 0.2,
        *,
        deadline_s: float | None = None,
    ) -> None:
        """Poll ``predicate`` until true; fail fast, naming it, if any component died.

        Exceptions from ``predicate`` mean "not yet" (a starting server refuses
        connections); the last one is reported on timeout. The probe is remembered as the
        component's readiness check (:meth:`start_component` uses it again).
        """
        self._ready.setdefault(proc.name, (what, predicate))
        deadline = time.monotonic() + (deadline_s if deadline_s is not None else self._remaining())
        last_error: BaseException | None = None
        while True:
            try:
                if predicate():
                    return
            except Exception as exc:
                last_error = exc
            for other in self._procs.values():
                if not other.alive():
                    raise ClusterStartError(
                        other.name,
                        f"exited with status {other.returncode()} while waiting for {proc.name}: {what}",
                        other.log_path,
                    )
            if time.monotonic() >= deadline:
                detail = f" (last error: {last_error!r})" if last_error is not None else ""
                raise ClusterStartError(proc.name, f"timed out waiting for {what}{detail}", proc.log_path)
            time.sleep(interval)

    def _write_pki(self) -> None:
        d = self.pki_dir
        try:
            write_control_plane_pki(d, service_ip=SERVICE_IP, advertise_address=self.advertise_address)
        except CertificateError as exc:
            raise ClusterStartError("pki", str(exc)) from exc

        # Static bearer tokens: "token,user,uid,groups". The controller-manager and the
        # scheduler use their well-known users, which RBAC's bootstrap policy binds.
        self.admin_token = secrets.token_hex(24)
        identities = {
            "admin": (self.admin_token, "admin", "system:masters"),
            "controller-manager": (secrets.token_hex(24), "system:kube-controller-manager", ""),
            "scheduler": (secrets.token_hex(24), "system:kube-scheduler", ""),
            "kwok": (secrets.token_hex(24), "kwok", "system:masters"),
        }
        rows = [
            f"{tok},{user},{user}" + (f',"{groups}"' if groups else "") for tok, user, groups in identities.values()
        ]
        (d / "tokens.csv").write_text("\n".join(rows) + "\n")
        (d / "tokens.csv").chmod(0o600)
        for name, (tok, user, _) in identities.items():
            path = self.kubeconfig if name == "admin" else d / f"{name}.kubeconfig"
            self._write_kubeconfig(path, user, tok)

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        ca_data = base64.b64encode(self.ca_file.read_bytes()).decode()
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "rlscale-devstack", "cluster": {"server": self.server, "certificate-authority-data": ca_data}}
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "rlscale-devstack", "context": {"cluster": "rlscale-devstack", "user": user}}],
            "current-context": "rlscale-devstack",
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        path.chmod(0o600)

    def _start_etcd(self) -> None:
        client = self.etcd_endpoint
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        proc = self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=devstack",
                f"--data-dir={self.work_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=devstack={peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",  # throw-away store; fsync dominates latency on CI disks
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"{client}/health", timeout=2) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")

        self._wait(proc, "/health", healthy)

    def _audit_args(self) -> list[str]:
        if not self.audit:
            return []
        policy = self.audit_policy if self.audit_policy is not None else default_audit_policy()
        if isinstance(policy, Path):
            policy_file = policy.resolve()
        else:
            policy_file = self.work_dir / "audit-policy.yaml"
            policy_file.write_text(yaml.safe_dump(dict(policy), sort_keys=False))
        return [
            f"--audit-policy-file={policy_file}",
            f"--audit-log-path={self.audit_log_path}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",  # events are on disk when the call returns
            "--audit-log-maxsize=100",
            "--audit-log-maxbackup=1",
        ]

    def _start_apiserver(self) -> None:
        d = self.pki_dir
        proc = self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_endpoint}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--advertise-address={self.advertise_address}",
                f"--cert-dir={d}",
                f"--tls-cert-file={d / 'apiserver.crt'}",
                f"--tls-private-key-file={d / 'apiserver.key'}",
                f"--client-ca-file={d / 'ca.crt'}",
                f"--requestheader-client-ca-file={d / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={d / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={d / 'front-proxy-client.key'}",
                f"--token-auth-file={d / 'tokens.csv'}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={d / 'sa.pub'}",
                f"--service-account-signing-key-file={d / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--profiling=false",
                *self._audit_args(),
                *self.extra_apiserver_args,
            ],
        )

        def ready() -> bool:
            return bool(self.request("GET", "/readyz", timeout=3) == "ok")

        self._wait(proc, "/readyz", ready)

    def _https_healthz(self, port: int) -> bool:
        # These components serve a self-signed cert from memory; only liveness matters.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=3) as resp:
            return bool(resp.read().decode().strip() == "ok")

    def _start_controllers(self) -> None:
        d = self.pki_dir
        kcm_cfg, sched_cfg = d / "controller-manager.kubeconfig", d / "scheduler.kubeconfig"
        kcm = self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kcm_cfg}",
                f"--authentication-kubeconfig={kcm_cfg}",
                f"--authorization-kubeconfig={kcm_cfg}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['controller-manager']}",
                "--leader-elect=false",
                f"--root-ca-file={d / 'ca.crt'}",
                f"--service-account-private-key-file={d / 'sa.key'}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--cluster-name=rlscale-devstack",
            ],
        )
        sched = self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={sched_cfg}",
                f"--authentication-kubeconfig={sched_cfg}",
                f"--authorization-kubeconfig={sched_cfg}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['scheduler']}",
                "--leader-elect=false",
            ],
        )
        kwok_argv = [
            str(self.bin_dir / "kwok"),
            f"--kubeconfig={d / 'kwok.kubeconfig'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION[0]}={FAKE_NODE_ANNOTATION[1]}",
            "--node-lease-duration-seconds=40",
            "--cidr=10.244.0.0/16",
            "--node-ip=10.240.0.1",
            f"--server-address=127.0.0.1:{self.ports['kwok']}",
        ]
        if self.kwok_stages is not None:
            kwok_argv.append(f"--config={self.kwok_stages}")
        kwok = self._spawn("kwok", kwok_argv)

        self._wait(kcm, "/healthz", lambda: self._https_healthz(self.ports["controller-manager"]))
        self._wait(sched, "/healthz", lambda: self._https_healthz(self.ports["scheduler"]))

        def kwok_healthy() -> bool:
            url = f"http://127.0.0.1:{self.ports['kwok']}/healthz"
            with urllib.request.urlopen(url, timeout=3) as resp:
                return resp.status == 200

        self._wait(kwok, "/healthz", kwok_healthy)

    def _create_and_wait_nodes(self) -> None:
        for name in self.node_names():
            self.create_node(name)
        kwok = self._procs["kwok"]

        def nodes_schedulable() -> bool:
            items = self.request("GET", "/api/v1/nodes")["items"]
            by_name = {n["metadata"]["name"]: n for n in items}
            for name in self.node_names():
                node = by_name.get(name)
                if node is None:
                    return False
                conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
                if conds.get("Ready") != "True":
                    return False
                # The node-lifecycle controller lifts TaintNodesByCondition's not-ready
                # taint only after it sees Ready; until then nothing schedules.
                if any(t.get("key", "").startswith("node.kubernetes.io/") for t in node["spec"].get("taints", [])):
                    return False
            return True

        self._wait(kwok, f"{self.node_count} nodes Ready and untainted", nodes_schedulable)

    def _wait_default_service_account(self) -> None:
        def exists() -> bool:
            self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return True

        self._wait(self._procs["kube-controller-manager"], "the default ServiceAccount", exists)

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
        return self._ssl

    def iter_processes(self) -> Iterator[tuple[str, ManagedProcess]]:
        """(name, process) pairs in start order."""
        yield from self._procs.items()
