"""The real node: pods that really run, limits the kernel enforces, and a host left as it was.

Each test asserts what a faked node could not produce: an HTTP answer from a pod IP, a
CFS quota in the pod's cgroup that matches its CPU limit, a new quota after a limit
change rolled the pod, cAdvisor series for the container, and after stop (or after the
owning process was SIGKILLed) no process, mount, cgroup, bridge, sysctl, nftables table
or fixed path of the node left on the host (:func:`rlscale.devstack.hostjournal.residue`).

Marker ``realnode`` (with ``e2e``): needs root and the Debian packages scripts/setup.sh
installs; without root the tests skip, with root a missing part is a failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from rlscale.devstack import hostjournal
from rlscale.devstack.hostjournal import HostJournal, cgroup_mounts, nft_tables, read_sysctls, residue
from rlscale.devstack.images import BuiltImage, demo_image, pause_image
from rlscale.devstack.manifests import real_deployment
from rlscale.devstack.node import real_node_unsupported
from rlscale.devstack.realcluster import RealNodeCluster
from rlscale.devstack.tools import locate_tools_bin

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

PORT = 8080


def eventually(pred: Callable[[], Any], *, timeout: float, what: str, state: Callable[[], object] | None = None) -> Any:
    """Poll until ``pred()`` is truthy and return it; on timeout fail with ``state()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with_value = pred()
        if with_value:
            return with_value
        time.sleep(0.25)
    seen = f"; state: {state()!r}" if state is not None else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{seen}")


@pytest.fixture(scope="module")
def node_bin() -> Path:
    """The tools with the kubelet, CNI plugins and pause; skips without root, fails if a part is missing."""
    if os.environ.get("RLSCALE_SKIP_E2E") == "1":
        pytest.skip("RLSCALE_SKIP_E2E=1")
    if os.geteuid() != 0:
        pytest.skip("a real node needs root")
    bin_dir = locate_tools_bin(("etcd", "k8s", "kwok", "node"))
    reason = real_node_unsupported(bin_dir)
    if reason:
        pytest.fail(f"this host should run a real node but: {reason}")
    return bin_dir


@pytest.fixture(scope="module")
def images(node_bin: Path) -> list[BuiltImage]:
    """pause and the demo app (built once, then from the image cache)."""
    return [pause_image(node_bin), demo_image()]


def host_state() -> dict[str, Any]:
    """What a real node may change on the host, as comparable values."""
    return {
        "sysctls": read_sysctls(),
        "nft": nft_tables(),
        "fixed_paths": {p: os.path.lexists(p) for p in hostjournal.FIXED_PATHS},
        "cgroups": sorted(p.name for m in cgroup_mounts() for p in m.iterdir() if p.name.startswith("rlscale-")),
        "bridges": sorted(n for n in os.listdir("/sys/class/net") if n.startswith("rls")),
    }


def cfs_quota(cluster: RealNodeCluster, pod: client.V1Pod) -> int:
    """The CFS quota (µs per 100 ms) of the pod's app container, read from its cgroup."""
    journal = cluster.real_node.journal
    assert journal is not None
    cid = pod.status.container_statuses[0].container_id.removeprefix("containerd://")
    v1 = Path("/sys/fs/cgroup/cpu") / journal.cgroup_name
    if v1.is_dir():
        (found,) = v1.rglob(f"pod{pod.metadata.uid}/{cid}/cpu.cfs_quota_us")
        return int(found.read_text())
    (found,) = (Path("/sys/fs/cgroup") / journal.cgroup_name).rglob(f"*{cid}*/cpu.max")
    return int(found.read_text().split()[0])


def ready_pods(core: client.CoreV1Api, ns: str) -> list[client.V1Pod]:
    """Running, Ready pods that are not being deleted."""
    pods = core.list_namespaced_pod(ns, label_selector="app.kubernetes.io/name=web").items
    return [
        p
        for p in pods
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
    ]


@pytest.fixture
def real_cluster(node_bin: Path, images: list[BuiltImage], tmp_path: Path) -> Iterator[RealNodeCluster]:
    """A control plane with one real node; stopped (and the host checked clean) by the test itself."""
    cluster = RealNodeCluster(node_bin, tmp_path / "cluster", images=[i.archive for i in images], audit=False)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def test_a_real_pod_runs_under_its_limit_and_a_limit_change_rolls_it_then_the_host_is_clean(
    real_cluster: RealNodeCluster, images: list[BuiltImage]
) -> None:
    journal = real_cluster.real_node.journal
    assert journal is not None
    api = config.new_client_from_config(config_file=str(real_cluster.kubeconfig))
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="shop")))
    dep = real_deployment(
        "web", replicas=1, cpu="200m", memory="128Mi", container="app", image=images[1].name,
        labels={"app.kubernetes.io/name": "web"}, port=PORT,
        args=["python3", "-m", "rlscale.devstack.demo_app", "--port", str(PORT), "--work-ms", "5"],
    )  # fmt: skip
    apps.create_namespaced_deployment("shop", dep)
    (pod,) = eventually(lambda: ready_pods(core, "shop"), timeout=120, what="a Ready pod")
    ip = pod.status.pod_ip
    with urllib.request.urlopen(f"http://{ip}:{PORT}/", timeout=10) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(f"http://{ip}:{PORT}/metrics", timeout=10) as resp:
        assert "http_requests_total" in resp.read().decode()
    assert cfs_quota(real_cluster, pod) == 20_000  # 200m of each 100 ms period
    # The app read its own cgroup; its log comes through the apiserver → kubelet (client cert).
    log = eventually(lambda: core.read_namespaced_pod_log(pod.metadata.name, "shop"), timeout=30, what="the pod's log")
    assert "cpu allowance 0.2 cores" in log

    limits = {"cpu": "300m", "memory": "128Mi"}
    container = {"name": "app", "resources": {"limits": limits, "requests": limits}}
    apps.patch_namespaced_deployment("web", "shop", {"spec": {"template": {"spec": {"containers": [container]}}}})

    def rolled() -> list[client.V1Pod]:
        pods = ready_pods(core, "shop")
        return [p for p in pods if p.metadata.name != pod.metadata.name] if len(pods) == 1 else []

    (new,) = eventually(rolled, timeout=120, what="the rolled pod alone and Ready")
    assert cfs_quota(real_cluster, new) == 30_000

    node = real_cluster.real_node_name
    cadvisor = core.connect_get_node_proxy_with_path(node, "metrics/cadvisor").splitlines()
    for metric in ("container_cpu_usage_seconds_total", "container_memory_working_set_bytes"):
        series = [s for s in cadvisor if s.startswith(metric + "{") and 'container="app"' in s]
        assert any('namespace="shop"' in s and f'pod="{new.metadata.name}"' in s for s in series), (metric, series)
    api.close()

    # Changes the node made are on the host now, and gone after stop.
    during = host_state()
    assert residue(journal), "a running node shows no host changes: the residue check sees nothing"
    assert journal.bridge in during["bridges"] and journal.cgroup_name in during["cgroups"]
    real_cluster.stop()
    assert residue(journal) == []
    after = host_state()
    assert after["sysctls"] == journal.sysctls
    assert after["nft"] == journal.nft_tables
    assert [p for p, present in after["fixed_paths"].items() if present and p in journal.created_paths] == []
    assert journal.bridge not in after["bridges"] and journal.cgroup_name not in after["cgroups"]
    assert not journal.path.exists()


_CRASHER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from kubernetes import client, config
    from rlscale.devstack.manifests import real_deployment
    from rlscale.devstack.realcluster import RealNodeCluster

    bin_dir, work, image, *archives = sys.argv[1:]
    cluster = RealNodeCluster(Path(bin_dir), Path(work), images=[Path(a) for a in archives], audit=False).start()
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    dep = real_deployment(
        "web", namespace="default", replicas=2, cpu="100m", memory="64Mi", container="app", image=image,
        labels={"app.kubernetes.io/name": "web"}, port=8080,
        args=["python3", "-m", "rlscale.devstack.demo_app", "--port", "8080"],
    )
    client.AppsV1Api(api).create_namespaced_deployment("default", dep)
    core = client.CoreV1Api(api)
    while sum(p.status.phase == "Running" for p in core.list_namespaced_pod("default").items) < 2:
        time.sleep(0.5)
    print(json.dumps({"journal": cluster.real_node.journal.id}), flush=True)
    time.sleep(600)
    """
)


def test_a_run_killed_with_its_pods_running_is_undone_by_clean_stale(
    node_bin: Path, images: list[BuiltImage], tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHER, str(node_bin), str(tmp_path / "cluster"), images[1].name,
         *(str(i.archive) for i in images)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    journal: HostJournal | None = None
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"the run never got its pods running:\n{proc.stderr.read() if proc.stderr else ''}")
        node_id = json.loads(line)["journal"]
        journal = HostJournal.model_validate_json((hostjournal.REGISTRY / f"{node_id}.json").read_text())
        os.killpg(proc.pid, signal.SIGKILL)  # no teardown of any kind
        proc.wait(timeout=30)
        # The kubelet and containerd die with it (PDEATHSIG); the pods do not.
        left = eventually(
            lambda: [r for r in residue(journal) if "cgroup" in r or "shim" in r or "mount" in r],
            timeout=10,
            what="the crashed run's pods, shims and mounts still on the host",
        )
        assert any("process" in r for r in residue(journal)), left
        assert node_id in hostjournal.clean_stale()
        assert residue(journal) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        hostjournal.clean_stale()
