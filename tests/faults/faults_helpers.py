"""The fault suite's stack and its flight recorder, built from the end-to-end tier's pieces.

:func:`fault_stack` is the e2e scaling scenario's world (``scenario.create_workload``: the
Deployment ``web`` with kwok pods, the threshold ONNX model in a ConfigMap, a Prometheus
token Secret; the twin exporter under a load pattern; a real Prometheus scraping it; the chart
installed as admin; the operator under the chart's ServiceAccount) in a namespace of its own.

:class:`Recorder` watches the policy and the Deployment from background threads, so a test can
break something and later judge the whole history: every decision by number (its
``lastDecision``, controller state, conditions, observed values, model), and the Deployment's
replicas and CPU limit over time. Reads that fail (the API server is down) are counted, not
raised.

**Broken builds.** ``FAULTS_BROKEN_BUILD=<name>`` (names in ``broken_build/sitecustomize.py``)
runs every operator the suite starts, and the test process itself, with one deliberate bug,
to show that the suite's assertions fail on it: ``broken_env()`` puts ``broken_build/`` on the
operator's ``PYTHONPATH``.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from e2e_helpers import (
    CONTAINER,
    GROUP,
    PLURAL,
    VERSION,
    Installed,
    cleanup_policies,
    create_policy,
    dump_on_failure,
    event_summary,
    events_of,
    installed_chart,
    metric_sum,
    parse_metrics,
    policy_manifest,
    threshold_policy_onnx,
)
from kubernetes import client, config, watch
from scenario import _wait_pods, create_workload, scaling_spec, service, twin_prometheus

from rlscale.devstack.cluster import LocalCluster
from rlscale.devstack.operator_stack import OperatorProcess
from rlscale.devstack.prometheus import LocalPrometheus
from rlscale.devstack.twin import DeploymentState, TwinExporter, TwinTarget, read_deployment_state
from rlscale.policy.model import META_SPEC_HASH

POLICY = "web"
DEPLOYMENT = "web"
INTERVAL_S = 5  # the smallest interval the CRD allows: faults are judged in intervals
BROKEN_ENV = "FAULTS_BROKEN_BUILD"
BROKEN_DIR = Path(__file__).resolve().parent / "broken_build"


def broken_env() -> dict[str, str]:
    """The environment that makes a started operator a deliberately broken build (empty normally)."""
    name = os.environ.get(BROKEN_ENV, "")
    if not name:
        return {}
    path = os.pathsep.join(p for p in (str(BROKEN_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {BROKEN_ENV: name, "PYTHONPATH": path}


def operator_env(**extra: str) -> dict[str, str]:
    """Settings of every operator in the suite: first ticks at once, a ConfigMap model re-read every second."""
    return {"RLSCALE_START_SPREAD": "0", "RLSCALE_MODEL_REFRESH_S": "1", **broken_env(), **extra}


# --- models -------------------------------------------------------------------------------------------------------


def model_with_spec_hash(data: bytes, spec_hash: str) -> bytes:
    """The same ONNX policy claiming to be built for another observation spec."""
    model = onnx.load_from_string(data)
    for prop in model.metadata_props:
        if prop.key == META_SPEC_HASH:
            prop.value = spec_hash
    return bytes(model.SerializeToString())


# --- the recorder -------------------------------------------------------------------------------------------------


@dataclass
class Seen:
    """One decision as the status showed it (the latest write of that number wins: intent, then applied)."""

    number: int
    first_seen: float  # monotonic
    decision: dict[str, Any]
    state: dict[str, Any]
    conditions: dict[str, dict[str, Any]]
    observed: dict[str, Any]
    model: dict[str, Any]

    @property
    def source(self) -> str:
        return str(self.decision["source"])

    def condition(self, ctype: str) -> dict[str, Any]:
        return self.conditions.get(ctype, {})


@dataclass
class Recorder:
    """Watches the policy and the Deployment from background threads and keeps every version of both.

    A watch, not polling: on a loaded machine a polling thread can stall for seconds and miss a
    decision, while a watch delivers every write. A broken watch (the API server restarted) is
    resumed from the last resourceVersion seen, or re-listed when that is too old (410), so only
    writes that the API server never made can be missed.
    """

    api: client.ApiClient
    namespace: str
    decisions: dict[int, Seen] = field(default_factory=dict)
    replicas: list[tuple[float, int, str]] = field(default_factory=list)  # (monotonic, replicas, cpu limit)
    read_errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Recorder:
        custom, apps = client.CustomObjectsApi(self.api), client.AppsV1Api(self.api)
        selector = {"field_selector": f"metadata.name={POLICY}"}
        watches: list[tuple[str, Callable[..., Any], tuple[Any, ...], Callable[[Any], None]]] = [
            (
                "policy",
                custom.list_namespaced_custom_object,
                (GROUP, VERSION, self.namespace, PLURAL),
                self._on_policy,
            ),
            ("deployment", apps.list_namespaced_deployment, (self.namespace,), self._on_deployment),
        ]
        for name, fn, args, handle in watches:
            t = threading.Thread(
                target=self._watch, args=(fn, args, selector if name == "policy" else {}, handle), daemon=True
            )
            t.name = f"faults-recorder-{name}"
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def _watch(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], handle: Callable[[Any], None]
    ) -> None:
        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    listed = fn(*args, **kwargs, _request_timeout=5)
                    items = listed["items"] if isinstance(listed, dict) else listed.items
                    for item in items:
                        handle(item)
                    meta = listed["metadata"] if isinstance(listed, dict) else listed.metadata
                    rv = meta["resourceVersion"] if isinstance(meta, dict) else meta.resource_version
                w = watch.Watch()
                for ev in w.stream(fn, *args, **kwargs, resource_version=rv, timeout_seconds=5, _request_timeout=10):
                    if ev["type"] == "ERROR":
                        rv = ""  # 410 Gone: re-list
                        break
                    obj = ev["object"]
                    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata
                    rv = meta["resourceVersion"] if isinstance(meta, dict) else meta.resource_version
                    handle(obj)
                    if self._stop.is_set():
                        break
            except Exception as exc:
                with self._lock:
                    self.read_errors += 1
                if getattr(exc, "status", None) == 410:
                    rv = ""
                self._stop.wait(0.3)

    def _on_deployment(self, dep: Any) -> None:
        if dep.metadata.name != DEPLOYMENT:
            return
        limits = dep.spec.template.spec.containers[0].resources.limits or {}
        with self._lock:
            entry = (time.monotonic(), int(dep.spec.replicas), str(limits.get("cpu")))
            if not self.replicas or self.replicas[-1][1:] != entry[1:]:
                self.replicas.append(entry)

    def _on_policy(self, policy: dict[str, Any]) -> None:
        now = time.monotonic()
        status = policy.get("status") or {}
        last = status.get("lastDecision")
        state = status.get("controllerState") or {}
        if not last or state.get("decisions") != last["number"]:
            return
        n = int(last["number"])
        with self._lock:
            prev = self.decisions.get(n)
            self.decisions[n] = Seen(
                n,
                prev.first_seen if prev else now,
                dict(last),
                dict(state),
                {c["type"]: dict(c) for c in status.get("conditions") or []},
                dict(status.get("observed") or {}),
                dict(status.get("model") or {}),
            )

    # --- reading what was recorded ---------------------------------------------------------------------------------

    def snapshot(self) -> list[Seen]:
        with self._lock:
            return [self.decisions[n] for n in sorted(self.decisions)]

    def last(self) -> Seen | None:
        seen = self.snapshot()
        return seen[-1] if seen else None

    def count(self) -> int:
        last = self.last()
        return last.number if last else 0

    def after(self, number: int) -> list[Seen]:
        return [s for s in self.snapshot() if s.number > number]

    def replica_history(self, since: float = 0.0, until: float = float("inf")) -> list[tuple[float, int, str]]:
        with self._lock:
            return [r for r in self.replicas if since <= r[0] <= until]

    def wait(self, pred: Callable[[Recorder], Any], *, timeout: float, what: str) -> Any:
        """Poll ``pred(self)`` until truthy (returned); on timeout fail with the decisions seen."""
        deadline = time.monotonic() + timeout
        while True:
            result = pred(self)
            if result:
                return result
            if time.monotonic() >= deadline:
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{self.describe()}")
            time.sleep(0.2)

    def wait_decisions(self, n: int, *, timeout: float) -> Seen:
        """Wait until decision ``n`` (counted from 1) has been seen; returns it."""
        self.wait(lambda r: r.count() >= n, timeout=timeout, what=f"decision #{n}")
        return self.snapshot()[-1]

    def describe(self, last: int = 25) -> str:
        """The recent decisions, one line each (for failure messages)."""
        lines = []
        for s in self.snapshot()[-last:]:
            d = s.decision
            lines.append(
                f"  #{s.number} {d.get('time')} {d['source']:8} {d['action']:22} replicas {d['previousReplicas']}→"
                f"{d['replicas']} cpu {d['previousCpuLimitMillicores']}→{d['cpuLimitMillicores']} "
                f"applied={d.get('applied')} "
                f"reward={d.get('reward')} metrics={s.condition('MetricsAvailable').get('status')} "
                f"model={s.condition('ModelLoaded').get('status')} unknown={s.observed.get('unknown')}"
            )
        return "decisions seen:\n" + "\n".join(lines) + f"\nread errors: {self.read_errors}"


def counters(op: OperatorProcess) -> dict[str, float]:
    """The operator's own counts (``/metrics``): decisions by source, refusals, applied changes.

    The status is written only when something a user sees changes (or on a 60 s heartbeat), so
    holding decisions may never show in it; ``/metrics`` counts every decision in memory.
    """
    m = parse_metrics(op.metrics_text())
    return {
        "learned": metric_sum(m, "rlscale_decisions_total", source="learned"),
        "baseline": metric_sum(m, "rlscale_decisions_total", source="baseline"),
        "decisions": metric_sum(m, "rlscale_decisions_total"),
        "refusals": metric_sum(m, "rlscale_refusals_total"),
        "applied": metric_sum(m, "rlscale_actions_applied_total"),
    }


def contiguous(numbers: Sequence[int]) -> bool:
    """1, 2, …, n with none missing or repeated."""
    return list(numbers) == list(range(1, len(numbers) + 1))


def collapse(values: Sequence[Any]) -> list[Any]:
    """Runs of equal values collapsed to one: the path a value took, without its timing."""
    out: list[Any] = []
    for v in values:
        if not out or out[-1] != v:
            out.append(v)
    return out


def decreases(history: Sequence[tuple[float, int, str]]) -> list[str]:
    """Every replica or CPU-limit decrease in a Deployment history (``(t, replicas, cpu)``)."""
    out = []
    for (_, r0, c0), (t1, r1, c1) in itertools.pairwise(history):
        if r1 < r0:
            out.append(f"replicas {r0}→{r1} at +{t1 - history[0][0]:.1f}s")
        if _millis(c1) < _millis(c0):
            out.append(f"cpu limit {c0}→{c1} at +{t1 - history[0][0]:.1f}s")
    return out


def _millis(cpu: str) -> float:
    if cpu.endswith("m"):
        return float(cpu[:-1])
    return float(cpu) * 1000.0


# --- the stack ----------------------------------------------------------------------------------------------------


@dataclass
class FaultStack:
    """One workload, its twin and Prometheus, the chart, and the operators started for it."""

    cluster: LocalCluster
    api: client.ApiClient
    namespace: str
    installed: Installed
    twin: TwinExporter
    prometheus: LocalPrometheus

    def operator(self, **env: str) -> OperatorProcess:
        """A (not yet started) operator watching this namespace with the chart's ServiceAccount token."""
        return self.installed.operator(
            namespaces=(self.namespace,), prometheus_url=self.prometheus.url, env=operator_env(**env)
        )

    def spec(self, mode: str = "full", **overrides: Any) -> dict[str, Any]:
        """The e2e scenario's policy spec (interval 5 s, ConfigMap model, the Prometheus token) with overrides."""
        spec = scaling_spec(self.prometheus.url, mode=mode)
        spec.update(overrides)
        return spec

    def create_policy(self, spec: Mapping[str, Any]) -> None:
        create_policy(self.api, self.namespace, policy_manifest(POLICY, DEPLOYMENT, spec))

    def set_model(self, data: bytes) -> None:
        """Replace the model in the policy's ConfigMap (what ``kubectl apply`` of a new model does)."""
        client.CoreV1Api(self.api).patch_namespaced_config_map(
            "e2e-model", self.namespace, {"binaryData": {"model.onnx": base64.b64encode(data).decode()}}
        )

    def events(self) -> list[tuple[str, str, str]]:
        return event_summary(events_of(self.api, self.namespace, POLICY))

    def diagnostics(self, recorder: Recorder | None = None) -> str:
        head = recorder.describe() + "\n" if recorder is not None else ""
        return head + f"events: {self.events()}\n" + dump_on_failure(self.installed)


@contextlib.contextmanager
def fault_stack(
    cluster: LocalCluster,
    api: client.ApiClient,
    helm: Path,
    work_dir: Path,
    *,
    load: Sequence[float],
    replicas: int,
    speed: float = 10.0,
) -> Iterator[FaultStack]:
    """The e2e world for one fault test, torn down afterwards (namespace, twin, Prometheus, operators)."""
    core = client.CoreV1Api(api)
    namespace = f"faults-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    twin: TwinExporter | None = None
    prom: LocalPrometheus | None = None
    reads = ThreadPoolExecutor(max_workers=32, thread_name_prefix="faults-twin-read")
    try:
        create_workload(api, namespace, replicas=replicas)
        _wait_pods(api, namespace, replicas)
        target = TwinTarget(namespace, DEPLOYMENT, CONTAINER)
        twin = TwinExporter(
            api,
            target,
            np.array(load, dtype=float),
            service=service(),
            speed=speed,
            read_state=_prompt_reader(cluster, target, reads),
        ).start()
        prom = twin_prometheus(work_dir / f"prometheus-{namespace}", twin)
        prom.wait_for_value(f'sum(rate(http_requests_total{{namespace="{namespace}"}}[10s]))', timeout=60)
        with installed_chart(cluster, api, helm, work_dir, {"watchNamespaces": [namespace]}) as inst:
            try:
                yield FaultStack(cluster, api, namespace, inst, twin, prom)
            finally:
                for proc in inst.operators:
                    proc.stop()
                cleanup_policies(api, namespace)
    finally:
        if prom is not None:
            prom.stop()
        if twin is not None:
            twin.stop()
        reads.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            core.delete_namespace(namespace)


def _prompt_reader(
    cluster: LocalCluster, target: TwinTarget, pool: ThreadPoolExecutor, timeout_s: float = 0.5
) -> Callable[[], DeploymentState | None]:
    """The twin's Deployment read, given up after ``timeout_s`` and never retried.

    The twin reads the Deployment on every scrape; with the client's default retries an API
    server outage makes each scrape outlast Prometheus' 1 s scrape timeout, so the workload's
    series would get a gap that real pods (whose metrics do not depend on the API server)
    would not have. Given up promptly, the twin keeps serving the last shape it read.
    """
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg)
    cfg.retries = 0
    api = client.ApiClient(cfg)

    def read() -> DeploymentState | None:
        return pool.submit(read_deployment_state, api, target).result(timeout=timeout_s)

    return read


__all__ = [
    "DEPLOYMENT",
    "INTERVAL_S",
    "POLICY",
    "FaultStack",
    "Recorder",
    "Seen",
    "broken_env",
    "collapse",
    "contiguous",
    "counters",
    "decreases",
    "fault_stack",
    "model_with_spec_hash",
    "operator_env",
    "threshold_policy_onnx",
]
