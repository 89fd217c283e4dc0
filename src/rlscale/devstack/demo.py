"""``rlscale demo``: the whole product on this machine, in a few minutes, without Docker.

What runs with ``--node-kind real`` (the default where the host allows it): the control
plane with a real node (:class:`~rlscale.devstack.realcluster.RealNodeCluster`: a kubelet
with containerd), the demo app (:mod:`rlscale.devstack.demo_app`) in real pods with
kernel-enforced CPU limits, the load generator on the host sending real HTTP requests to
the Ready pods (:mod:`rlscale.devstack.realload`), and Prometheus scraping the pods and the
kubelet's cAdvisor. With ``--node-kind kwok`` (all real except pods and the workload's
metrics, which a kubelet-less cluster cannot have):

1. the local control plane (:class:`~rlscale.devstack.cluster.LocalCluster`: etcd,
   kube-apiserver, controller-manager, scheduler, kwok fake nodes);
2. ``charts/rlscale`` installed with the real ``helm`` (CRD, ServiceAccount, RBAC);
3. a Deployment ``rlscale-demo/demo`` whose pods kwok runs, and the twin exporter
   (:mod:`rlscale.devstack.twin`) simulating its service under the load pattern;
4. a real Prometheus scraping the twin;
5. the operator, ``rlscale run``, as a local process holding only the chart
   ServiceAccount's token, and an ``AutoscalePolicy`` for the Deployment.

It prints each decision as it happens, then a summary table, and writes a PNG plot (and
the decisions as CSV) to ``--out``. Everything is stopped on exit, error or Ctrl-C. With
Docker, ``scripts/kind-demo.sh`` is the documented alternative: the same chart and policy
on a kind cluster, with the real demo workload and load generator.
"""

from __future__ import annotations

import contextlib
import csv
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from rlscale.devstack.cli import make_cluster, resolve_node_kind, start_cluster, step_timer
from rlscale.devstack.demo_report import DecisionRecord, decision_line, format_summary, plot, summarize
from rlscale.devstack.images import DEMO_IMAGE_REPO, ImageBuildError
from rlscale.devstack.manifests import guaranteed_deployment, real_deployment
from rlscale.devstack.operator_stack import OperatorProcess, helm_install, service_account_kubeconfig
from rlscale.devstack.procs import ComponentError, Interrupted, sigterm_raises
from rlscale.devstack.prometheus import LocalPrometheus, PrometheusNotFoundError
from rlscale.devstack.realcluster import RealNodeCluster
from rlscale.devstack.realload import PodEndpoints, RealWorkload, wait_ready_pods
from rlscale.devstack.tools import DEFAULT_COMPONENTS, ToolsNotFoundError, locate_tools_bin
from rlscale.devstack.twin import TwinExporter, TwinTarget
from rlscale.policy.model import DEFAULT_MODEL_PATH, ModelMismatchError, PolicyModel
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace, TraceFormatError, generate, load_trace

DEMO_NS = "rlscale-demo"
OPERATOR_NS = "rlscale-system"
RELEASE = "rlscale"
NAME = "demo"
CONTAINER = "demo"
SLO_MS = 250.0
MAX_ERROR_RATE = 0.01
INTERVAL_S = 5
GATE_NOTES = {
    "gradual": "each decision goes to the learned policy with probability ratio (starts at 0.5, moves with results)",
    "full": "the learned policy makes every decision (the mask still applies)",
    "shadow": "the HPA baseline makes every decision; the learned choice is only recorded",
}
#: A generated flash-crowd day is used when its peak is at least this many times its median.
CROWD_PEAK_FACTOR = 5.0
#: The real pods: each request costs REAL_WORK_MS of CPU, so a pod at REAL_CPU serves about
#: 20 requests/s (the app's own per-request overhead counts against the limit too); the
#: busiest minute of the replayed pattern is REAL_PEAK_RPS (2 pods). Small on purpose:
#: a 2-core machine also runs the control plane, Prometheus, the operator and the load.
REAL_PORT = 8080
REAL_WORK_MS = 5.0
REAL_CPU = "150m"
REAL_MEMORY = "128Mi"
REAL_PEAK_RPS = 30.0
REAL_LIMITS = {
    "maxReplicas": 6,
    "cpuLimitMinMillicores": 100,
    "cpuLimitMaxMillicores": 300,
    "cpuLimitStepMillicores": 50,
    "memoryLimitMinMiB": 128,
    "memoryLimitMaxMiB": 256,
    "memoryLimitStepMiB": 64,
}


def flash_crowd_day(seed: int | None = None) -> Trace:
    """The project's generated flash-crowd day (1440 minutes); by default the first seed with a real crowd.

    The generator draws how many crowds a day has, so some seeds have none; the default
    takes the first seed whose peak is ``CROWD_PEAK_FACTOR`` × the day's median.
    """
    if seed is not None:
        return generate("flash_crowd", 1440, seed)
    for candidate in range(1000):
        trace = generate("flash_crowd", 1440, candidate)
        if trace.values.max() >= CROWD_PEAK_FACTOR * float(np.median(trace.values)):
            return trace
    raise RuntimeError("no generated flash-crowd day with a crowd in seeds 0..999")  # pragma: no cover


def crowd_window_start(trace: Trace, lead_min: int = 60) -> int:
    """Row to start replaying at: ``lead_min`` minutes before the biggest surge starts rising."""
    v = trace.values
    peak = int(np.argmax(v))
    calm = 1.5 * float(np.median(v))
    onset = peak
    while onset > 0 and v[onset - 1] > calm:
        onset -= 1
    return max(0, onset - lead_min)


def parse_start(text: str) -> int | None:
    """``--start``: ``auto``, minutes (``90``) or ``HH:MM`` into the pattern → a row, or None for auto."""
    if text == "auto":
        return None
    try:
        if ":" in text:
            hours, minutes = text.split(":", 1)
            row = int(hours) * 60 + int(minutes)
        else:
            row = int(text)
    except ValueError:
        raise click.BadParameter(f"expected auto, minutes or HH:MM, got {text!r}", param_hint="--start") from None
    if row < 0:
        raise click.BadParameter(f"must not be negative, got {text!r}", param_hint="--start")
    return row


def demo_service() -> SimConfig:
    """The simulated service: 10 ms of CPU per request; the load's 95th percentile needs 6 pods of 1 CPU."""
    return SimConfig(target_replicas_p95=6.0, initial_cpu_limit_m=1000, initial_memory_limit_mib=1024)


def demo_deployment() -> dict[str, Any]:
    """The demo Deployment: Guaranteed pods (requests = limits) of 1 CPU / 1 GiB, 2 replicas to start."""
    return guaranteed_deployment(
        NAME,
        namespace=DEMO_NS,
        replicas=2,
        cpu="1",
        memory="1Gi",
        container=CONTAINER,
        image="rlscale/demo:0.1.0",
        labels={"app.kubernetes.io/name": NAME},
    )


def real_demo_deployment(image: str) -> dict[str, Any]:
    """The demo Deployment on a real node: the demo app in Guaranteed pods of REAL_CPU, 1 replica to start."""
    return real_deployment(
        NAME,
        namespace=DEMO_NS,
        replicas=1,
        cpu=REAL_CPU,
        memory=REAL_MEMORY,
        container=CONTAINER,
        image=image,
        labels={"app.kubernetes.io/name": NAME},
        args=["python3", "-m", "rlscale.devstack.demo_app", "--port", str(REAL_PORT), "--work-ms", str(REAL_WORK_MS)],
        port=REAL_PORT,
    )


def demo_policy(prometheus_url: str, mode: str, limits: dict[str, int] | None = None) -> dict[str, Any]:
    """deploy/examples/autoscalepolicy.yaml's policy, with wall-clock cooldowns short enough for minutes.

    ``limits`` overrides entries of ``spec.limits`` (the real node's pods are smaller).
    """
    policy = {
        "apiVersion": "rlscale.io/v1alpha1",
        "kind": "AutoscalePolicy",
        "metadata": {"name": NAME, "namespace": DEMO_NS},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
            "containers": [CONTAINER],
            "intervalSeconds": INTERVAL_S,
            "limits": {
                "minReplicas": 1,
                "maxReplicas": 12,
                "maxScaleUpPods": 4,
                "maxScaleDownPods": 1,
                "scaleDownCooldownSeconds": 10,
                "limitChangeCooldownSeconds": 20,
                "cpuLimitMinMillicores": 500,
                "cpuLimitMaxMillicores": 2000,
                "cpuLimitStepMillicores": 250,
                "memoryLimitMinMiB": 512,
                "memoryLimitMaxMiB": 2048,
                "memoryLimitStepMiB": 256,
            },
            "objective": {"latencySloMs": SLO_MS, "maxErrorRate": MAX_ERROR_RATE},
            "baseline": {"kind": "hpa", "hpa": {"targetUtilization": 0.7, "scaleDownStabilizationSeconds": 15}},
            "rollout": {"mode": mode, "initialRatio": 0.5, "windowDecisions": 10, "minSamples": 3},
            "model": {"source": "builtin"},
            "prometheus": {"url": prometheus_url, "window": "10s"},
        },
    }
    policy["spec"]["limits"].update(limits or {})  # type: ignore[index]
    return policy


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """The command line."""

    trace: Path | None
    minutes: float
    speed: float
    start: int | None
    out: Path
    mode: str
    seed: int | None
    nodes: int
    node_kind: str | None = None
    peak_rps: float = REAL_PEAK_RPS


def model_note() -> str:
    """Which learned policy the operator's ``builtin`` source will run (or why none)."""
    if not DEFAULT_MODEL_PATH.is_file():
        return f"no trained model at {DEFAULT_MODEL_PATH} (run `make model`): the HPA baseline makes every decision"
    try:
        model = PolicyModel.load(DEFAULT_MODEL_PATH)
    except ModelMismatchError as exc:
        return f"{DEFAULT_MODEL_PATH} is refused ({exc}): the HPA baseline makes every decision"
    kind = model.training.get("kind") or model.training.get("algorithm") or "trained"
    return f"{DEFAULT_MODEL_PATH} ({kind})"


class Demo:
    """One demo run; :meth:`run` returns when the pattern is replayed, the time is up, or on Ctrl-C."""

    def __init__(self, opts: DemoOptions, echo: Callable[[str], None] = click.echo) -> None:
        self.opts = opts
        self.echo = echo
        self.pattern = self._trace()
        start = opts.start
        if start is None:  # auto: just before the crowd of the generated day; a file from its beginning
            start = crowd_window_start(self.pattern) if opts.trace is None else 0
        if start >= len(self.pattern) - 1:
            raise click.BadParameter(
                f"the pattern has {len(self.pattern)} minutes; start {start} leaves nothing", param_hint="--start"
            )
        self.start_row = start
        self.offset_s = start * 60.0
        self.trace = self.pattern.window_of("all", start, len(self.pattern))
        self.speed = opts.speed
        self.decisions: list[DecisionRecord] = []
        self.t0 = time.monotonic()
        self.api: client.ApiClient | None = None
        self.twin: TwinExporter | RealWorkload | None = None
        self.operator: OperatorProcess | None = None
        self.node_kind = "kwok"

    def _trace(self) -> Trace:
        if self.opts.trace is None:
            return flash_crowd_day(self.opts.seed)
        try:
            return load_trace(self.opts.trace)
        except TraceFormatError as exc:
            raise click.BadParameter(str(exc), param_hint="--trace") from exc

    def _step(self, what: str) -> Callable[[], None]:
        return step_timer(self.echo, what)

    def run(self) -> int:
        """Run everything; 0 on success, 130 when interrupted."""
        o = self.opts
        o.out.mkdir(parents=True, exist_ok=True)
        stack_dir = (o.out / "stack").resolve()
        self.echo("rlscale demo — the local stack: etcd, kube-apiserver, controller-manager, scheduler and kwok fake")
        self.echo("nodes built from Go modules, a real Prometheus, the operator as a local process (no Docker).")
        self.echo("With Docker, scripts/kind-demo.sh runs the same chart and policy on kind with the real workload.")
        replay_min = min(len(self.trace) * 60 / self.speed / 60, o.minutes)
        end_row = self.start_row + int(replay_min * 60 * self.speed / 60)
        self.echo(
            f"load:  {self.pattern.name} ({len(self.pattern)} min), replaying {_hhmm(self.start_row)}–{_hhmm(end_row)} "
            f"at {self.speed:g}× ({self.speed / 60:g} pattern minutes per second) in {replay_min:.1f} min"
        )
        self.echo(f"model: {model_note()}")
        self.echo(f"gate:  {o.mode} — {GATE_NOTES[o.mode]}")
        interrupted = False
        with contextlib.ExitStack() as stack, sigterm_raises():
            try:
                self._start(stack, stack_dir)
                self.echo("")
                self._watch()
            except (KeyboardInterrupt, Interrupted):
                interrupted = True
                self.echo("\ninterrupted: summarising what ran, then tearing everything down")
            self._report()
            self.echo("==> tearing down (operator, load or twin, Prometheus, control plane and node)")
        self.echo(f"logs of every component: {stack_dir}")
        return 130 if interrupted else 0

    def _start(self, stack: contextlib.ExitStack, stack_dir: Path) -> None:
        done = self._step("tools (etcd, kube-*, kwok, helm, kubelet; a cold build takes 20–30 min)")
        bin_dir = locate_tools_bin((*DEFAULT_COMPONENTS, "helm"))
        self.node_kind = resolve_node_kind(self.opts.node_kind, bin_dir)
        if self.node_kind == "real":
            bin_dir = locate_tools_bin((*DEFAULT_COMPONENTS, "helm", "node"))
        done()
        if self.node_kind == "real":
            done = self._step("images: pause and the demo app (Debian packages + the wheel; first build ~2 min)")
            nodes = 0
        else:
            done = self._step("control plane")
            nodes = self.opts.nodes
        cluster = make_cluster(self.node_kind, bin_dir, stack_dir / "cluster", nodes=nodes, timeout=180.0)
        if self.node_kind == "real":
            done()
            done = self._step("control plane and a real node (kubelet + containerd)")
        api = self.api = start_cluster(stack, cluster)
        done()

        done = self._step(f"helm install {RELEASE} charts/rlscale -n {OPERATOR_NS} (watching {DEMO_NS})")
        client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=DEMO_NS)))
        release = helm_install(
            bin_dir / "helm", cluster.kubeconfig, RELEASE, OPERATOR_NS, {"watchNamespaces": [DEMO_NS]}, stack_dir
        )
        kubeconfig = service_account_kubeconfig(
            api,
            cluster.server,
            cluster.ca_file,
            OPERATOR_NS,
            release.service_account,
            stack_dir / "operator.kubeconfig",
        )
        done()

        done = self._step("Prometheus, and the operator (rlscale run) with the chart's ServiceAccount token")
        if isinstance(cluster, RealNodeCluster):
            self._start_real(stack, cluster, stack_dir, kubeconfig, done)
            return
        client.AppsV1Api(api).create_namespaced_deployment(DEMO_NS, demo_deployment())  # type: ignore[arg-type]
        prom = LocalPrometheus(stack_dir / "prometheus")
        stack.callback(prom.stop)
        prom.start()
        operator = self.operator = OperatorProcess(
            kubeconfig, stack_dir, namespaces=(DEMO_NS,), prometheus_url=prom.url, env={"RLSCALE_START_SPREAD": "0"}
        )
        stack.callback(operator.stop)
        operator.start()
        done()

        # The twin starts last, so the replayed pattern is not spent while the rest starts.
        done = self._step("twin exporter (the simulated service of the demo Deployment) and the AutoscalePolicy")
        self._wait(lambda: self._running_pods(api) >= 2, 60, "2 demo pods Running")
        twin = self.twin = TwinExporter(
            api, TwinTarget(DEMO_NS, NAME, CONTAINER), self.trace, service=demo_service(), speed=self.speed
        )
        twin.start()
        stack.callback(twin.stop)
        self.t0 = time.monotonic()
        prom.reload(
            scrape_configs=[{"job_name": "twin", "honor_labels": True, "static_configs": [{"targets": [twin.address]}]}]
        )
        prom.wait_for_value(f'sum(rate(http_requests_total{{namespace="{DEMO_NS}"}}[10s]))', timeout=60)
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "rlscale.io", "v1alpha1", DEMO_NS, "autoscalepolicies", demo_policy(prom.url, self.opts.mode)
        )
        done()

    def _start_real(
        self,
        stack: contextlib.ExitStack,
        cluster: RealNodeCluster,
        stack_dir: Path,
        kubeconfig: Path,
        done: Callable[[], None],
    ) -> None:
        """The real node's half of :meth:`_start`: real pods, real load, Prometheus on both."""
        api = self.api
        assert api is not None
        # The image the node imported (a rebuild now could have another key: the sources may have changed).
        image = next(n for n in cluster.image_names if n.startswith(DEMO_IMAGE_REPO + ":"))
        client.AppsV1Api(api).create_namespaced_deployment(DEMO_NS, real_demo_deployment(image))  # type: ignore[arg-type]
        sd_file = stack_dir / "pods.sd.json"
        endpoints = PodEndpoints(api, DEMO_NS, f"app.kubernetes.io/name={NAME}", REAL_PORT, sd_file=sd_file)
        endpoints.start()
        stack.callback(endpoints.stop)
        prom = LocalPrometheus(stack_dir / "prometheus", scrape_configs=cluster.scrape_configs(sd_file))
        stack.callback(prom.stop)
        prom.start()
        operator = self.operator = OperatorProcess(
            kubeconfig, stack_dir, namespaces=(DEMO_NS,), prometheus_url=prom.url, env={"RLSCALE_START_SPREAD": "0"}
        )
        stack.callback(operator.stop)
        operator.start()
        done()

        peak = self.opts.peak_rps
        done = self._step(f"the load generator on the host → the Ready pods (peak {peak:g} req/s), the policy")
        workload = RealWorkload(
            api,
            TwinTarget(DEMO_NS, NAME, CONTAINER),
            self.trace,
            prom,
            speed=self.speed,
            peak_rps=peak,
            port=REAL_PORT,
            endpoints=endpoints,
            slo_ms=SLO_MS,
            max_error_rate=MAX_ERROR_RATE,
        )
        wait_ready_pods(workload.endpoints, 1, 120)
        self.twin = workload
        workload.start()
        stack.callback(workload.stop)
        self.t0 = time.monotonic()
        prom.wait_for_value(f'sum(rate(http_requests_total{{namespace="{DEMO_NS}"}}[10s]))', timeout=60)
        prom.wait_for_value(f'sum(container_memory_working_set_bytes{{namespace="{DEMO_NS}"}})', timeout=60)
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "rlscale.io", "v1alpha1", DEMO_NS, "autoscalepolicies", demo_policy(prom.url, self.opts.mode, REAL_LIMITS)
        )
        done()

    @staticmethod
    def _running_pods(api: client.ApiClient) -> int:
        pods = client.CoreV1Api(api).list_namespaced_pod(DEMO_NS).items
        return sum(1 for p in pods if p.status is not None and p.status.phase == "Running")

    @staticmethod
    def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.5)

    def _watch(self) -> None:
        """Print each new decision until the pattern is replayed or the time is up."""
        api, twin = self.api, self.twin
        assert api is not None and twin is not None
        deadline = self.t0 + self.opts.minutes * 60.0
        end_sim = len(self.trace) * 60.0
        last = 0
        while time.monotonic() < deadline and twin.simulated_seconds < end_sim:
            policy = _get_policy(api)
            status = policy.get("status") or {}
            decision = status.get("lastDecision")
            if decision and int(decision["number"]) > last and not status.get("pending"):
                last = int(decision["number"])
                rec = DecisionRecord.from_status(
                    decision,
                    wall_s=time.monotonic() - self.t0,
                    sample=twin.snapshot(),
                    offset_s=self.offset_s,
                    rollout=status.get("rollout"),
                )
                self.decisions.append(rec)
                self.echo(decision_line(rec))
            elif not decision:
                ready = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), None)
                if ready and ready.get("status") == "False":
                    raise click.ClickException(f"the policy was refused: {ready.get('reason')}: {ready.get('message')}")
            time.sleep(0.5)

    def _report(self) -> None:
        api, twin, operator = self.api, self.twin, self.operator
        if twin is None or not twin.samples():
            self.echo("nothing ran long enough to summarise")
            return
        by_source: dict[str, float] | None = None
        ratio: float | None = None
        if operator is not None and operator.alive():
            with contextlib.suppress(OSError):
                by_source = _decisions_by_source(operator.metrics_text())
        if api is not None:
            with contextlib.suppress(Exception):
                policy = _get_policy(api)
                ratio = (policy.get("status") or {}).get("rollout", {}).get("ratio")
        samples = twin.samples()
        summary = summarize(
            samples, self.decisions, step_s=twin.step_s, wall_s=time.monotonic() - self.t0, by_source=by_source
        )
        out = self.opts.out
        png = plot(
            samples,
            self.decisions,
            out / "demo.png",
            slo_ms=SLO_MS,
            title=f"rlscale demo: {self.pattern.name} at {self.speed:g}× (gate {self.opts.mode})",
            offset_s=self.offset_s,
        )
        with (out / "decisions.csv").open("w", newline="") as fh:
            rows = [d.csv_row() for d in self.decisions]
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["number"])
            writer.writeheader()
            writer.writerows(rows)
        record: dict[str, Any] = {"node_kind": self.node_kind, **asdict(summary)}
        applied = sum(1 for d in self.decisions if d.decision.applied)
        if isinstance(twin, RealWorkload):
            load = twin.load_summary or twin.generator.summary
            record.update(pods_created=twin.pods_seen, decisions_applied=applied, load=load.model_dump())
        (out / "summary.json").write_text(json.dumps(record, indent=2))
        self.echo("\nsummary")
        self.echo(
            format_summary(summary, slo_ms=SLO_MS, max_error_rate=MAX_ERROR_RATE, mode=self.opts.mode, ratio=ratio)
        )
        if isinstance(twin, RealWorkload):
            self.echo(
                f"real pods:   {twin.pods_seen} created (the first and every one the scaling made), "
                f"{applied} decisions applied through the API server"
            )
            self.echo(
                f"real load:   {load.sent} requests sent from the host, {load.ok} ok, {load.http_error} HTTP errors, "
                f"{load.timeout + load.connection_error} timeouts/connection errors, {load.dropped} dropped"
            )
        self.echo(f"\nplot:      {png}\ndecisions: {out / 'decisions.csv'}\nsummary:   {out / 'summary.json'}")


def _get_policy(api: client.ApiClient) -> dict[str, Any]:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "rlscale.io", "v1alpha1", DEMO_NS, "autoscalepolicies", NAME
    )
    if not isinstance(obj, dict):
        raise TypeError(f"unexpected reply reading the policy: {type(obj).__name__}")
    return obj


def _hhmm(row: int) -> str:
    return f"{row // 60:02d}:{row % 60:02d}"


def _decisions_by_source(metrics_text: str) -> dict[str, float]:
    """The operator's ``rlscale_decisions_total`` summed over its other labels, by ``source``."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "rlscale_decisions_total":
                source = sample.labels["source"]
                out[source] = out.get(source, 0.0) + sample.value
    return out


@click.command("demo")
@click.option(
    "--trace",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Replay this t_seconds,value file instead of the generated flash-crowd day.",
)
@click.option("--minutes", type=click.FloatRange(0.5, 240), default=6.0, show_default=True, help="Wall-clock length.")
@click.option(
    "--speed",
    type=click.FloatRange(1, 100_000),
    default=60.0,
    show_default=True,
    help="Simulated seconds per wall second. At 60 a 5 s decision interval sees 5 minutes of the pattern, "
    "close to the 1-minute decisions the model was trained on; --speed 240 replays a whole day in 6 minutes.",
)
@click.option(
    "--start",
    default="auto",
    show_default=True,
    help="Where to start in the pattern: minutes or HH:MM (auto: an hour before the biggest surge of the "
    "generated day; the beginning of a --trace file).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out/demo"), show_default=True)
@click.option(
    "--mode",
    type=click.Choice(["gradual", "full", "shadow"]),
    default="gradual",
    show_default=True,
    help="Rollout gate mode of the demo policy.",
)
@click.option("--seed", type=int, default=None, help="Seed of the generated day (default: the first with a crowd).")
@click.option(
    "--nodes", type=click.IntRange(1, 50), default=3, show_default=True, help="Fake (kwok) nodes (--node-kind kwok)."
)
@click.option(
    "--node-kind",
    type=click.Choice(["real", "kwok"]),
    default=None,
    help="real: the demo app in real pods on a kubelet; kwok: fake pods and the simulated twin. "
    "Default: real where the host allows it.",
)
@click.option(
    "--peak-rps",
    type=click.FloatRange(1, 200),
    default=REAL_PEAK_RPS,
    show_default=True,
    help="--node-kind real: the request rate of the pattern's busiest minute (a 150m pod serves about 25/s).",
)
def demo(
    trace: Path | None,
    minutes: float,
    speed: float,
    start: str,
    out: Path,
    mode: str,
    seed: int | None,
    nodes: int,
    node_kind: str | None,
    peak_rps: float,
) -> None:
    """Run rlscale end to end on a local control plane and replay a load pattern against it."""
    opts = DemoOptions(
        trace=trace,
        minutes=minutes,
        speed=speed,
        start=parse_start(start),
        out=out,
        mode=mode,
        seed=seed,
        nodes=nodes,
        node_kind=node_kind,
        peak_rps=peak_rps,
    )
    try:
        code = Demo(opts).run()
    except (ComponentError, ToolsNotFoundError, PrometheusNotFoundError, TimeoutError, ImageBuildError) as exc:
        # Everything started was already stopped on the way out; say what failed and where its log is.
        raise click.ClickException(str(exc)) from exc
    if code:
        raise SystemExit(code)


__all__ = ["Demo", "DemoOptions", "demo", "demo_deployment", "demo_policy", "demo_service", "flash_crowd_day"]
