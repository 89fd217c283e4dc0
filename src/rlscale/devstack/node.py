"""A real Kubernetes node next to the local control plane: containerd, runc, CNI and a kubelet.

kwok's nodes run nothing. This node runs the pods' containers under runc with their
CPU and memory limits enforced by the kernel's cgroups, on a bridge the host reaches
directly (pod IPs route from the host; pods have no default route, so nothing in them
leaves the machine). Everything is a plain process, like the control plane: containerd
(Debian's package) with its own config, sockets and state, and the kubelet built from
the project's Kubernetes pin by ``tools/build-tools.sh``, authenticated by a static
token as ``system:node:<name>``.

The machines this runs on share the host with other engineers' local stacks, so every
host change is named for this node and recorded in a :class:`~.hostjournal.HostJournal`
before it is made; :meth:`RealNode.stop` (and, after a crash, ``clean_stale``) undoes
exactly that. Two details of the verified recipe matter:

* runc cannot lower a container's ``oom_score_adj`` without CAP_SYS_RESOURCE, which these
  VMs lack, so containerd runs with ``restrict_oom_score_adj`` and the kubelet with
  ``oomScoreAdj: 0``;
* the kubelet's iptables chains are off (``makeIPTablesUtilChains: false``): with no
  kube-proxy nothing needs them, and the host's nftables stay untouched.

Images never come from a registry: containerd imports OCI archives built by
:mod:`rlscale.devstack.images`, and image garbage collection is off (an image removed
could never be pulled again).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from .hostjournal import FIXED_PATHS, REGISTRY, HostJournal, cgroup_mounts, clean_stale, nft_tables, read_sysctls, undo
from .procs import ComponentError, free_port

__all__ = [
    "DEFAULT_POD_SUBNET",
    "PAUSE_IMAGE",
    "RealNode",
    "RealNodeError",
    "real_node_unsupported",
]

#: Pods' addresses on the node's bridge (host-local IPAM); the host is the gateway.
DEFAULT_POD_SUBNET = "10.245.0.0/24"
#: The sandbox image containerd starts first in every pod (built by images.py).
PAUSE_IMAGE = "localhost/rlscale/pause:1"
CNI_PLUGINS = ("bridge", "host-local", "loopback")
HOST_LOCK = REGISTRY / "host.lock"
#: Where nodes keep containerd's and the kubelet's state (``node-<id>`` below it). Short on
#: purpose: the kubelet puts unix sockets under its root dir, and sun_path holds 108 bytes,
#: which a pytest tmp_path can exceed. Removed with the node (the root too, if it made it).
NODE_STATE_ROOT = Path(os.environ.get("RLSCALE_NODE_STATE", "/var/lib/rlscale"))


class RealNodeError(ComponentError):
    """The real node could not start; names the part and carries its log tail."""


def _runc() -> str | None:
    return shutil.which("runc") or ("/usr/sbin/runc" if Path("/usr/sbin/runc").is_file() else None)


def _cgroup_writable(controller: str) -> bool:
    """The controller is mounted (v1 hierarchy or v2's unified tree) and we may create cgroups."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if v2.is_file():
        return controller in v2.read_text().split() and os.access("/sys/fs/cgroup", os.W_OK)
    return any(
        controller in m.name.split(",") and os.access(m, os.W_OK) for m in cgroup_mounts() if m.name != "systemd"
    )


def real_node_unsupported(bin_dir: Path) -> str | None:
    """Why this host cannot run a real node, or None if it can.

    Root (cgroups, mounts, network namespaces), writable cpu and memory cgroups,
    containerd/ctr/runc (Debian's packages: ``scripts/setup.sh``), the kubelet, the CNI
    plugins and pause (``tools/build-tools.sh node``), and no other real node on the host
    (the kubelet's device-plugin socket and containerd's shim directory are fixed paths).
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "a real node needs root (cgroups, mounts, network namespaces)"
    for controller in ("cpu", "memory"):
        if not _cgroup_writable(controller):
            return f"the {controller} cgroup controller is not mounted writable"
    missing = [c for c in ("containerd", "ctr") if shutil.which(c) is None]
    if _runc() is None:
        missing.append("runc")
    if missing:
        return f"{', '.join(missing)} not installed (scripts/setup.sh installs Debian's containerd and runc)"
    want = [bin_dir / "kubelet", bin_dir / "pause", *(bin_dir / "cni" / p for p in CNI_PLUGINS)]
    lacking = [str(p.relative_to(bin_dir)) for p in want if not p.is_file()]
    if lacking:
        return f"{bin_dir} lacks {', '.join(lacking)} (run tools/build-tools.sh node)"
    if _host_lock_held():
        return f"another real node runs on this host (lock {HOST_LOCK})"
    return None


def _host_lock_held() -> bool:
    if not HOST_LOCK.exists():
        return False
    fd = os.open(HOST_LOCK, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _host_routes() -> list[ipaddress.IPv4Network]:
    """IPv4 networks in the main routing table (to keep the pod subnet off them)."""
    nets: list[ipaddress.IPv4Network] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            f = line.split()
            dest, mask = (int(f[1], 16).to_bytes(4, "little"), int(f[7], 16).to_bytes(4, "little"))
            if f[1] == "00000000":
                continue
            nets.append(ipaddress.IPv4Network((ipaddress.IPv4Address(dest), str(ipaddress.IPv4Address(mask)))))
    return nets


class RealNode:
    """containerd + kubelet for one node; ``spawn`` starts a process the caller supervises.

    The cluster (:class:`~.realcluster.RealNodeCluster`) owns the processes so its
    liveness checks and die-with-parent cover them; this class owns the configuration,
    the image imports and the host journal.
    """

    def __init__(
        self,
        bin_dir: Path,
        *,
        name: str,
        node_ip: str,
        ca_file: Path,
        kubeconfig: Path,
        images: Sequence[Path] = (),
        pod_subnet: str = DEFAULT_POD_SUBNET,
    ) -> None:
        """Configure (not start) a node; ``images`` are OCI archives to import before the kubelet starts.

        Its state lives in ``NODE_STATE_ROOT/node-<id>`` (``run_dir``, known once :meth:`prepare` ran).
        """
        self.bin_dir = bin_dir
        self.run_dir = NODE_STATE_ROOT / "node-unprepared"
        self.name = name
        self.node_ip = node_ip
        self.ca_file = ca_file
        self.kubeconfig = kubeconfig
        self.images = list(images)
        self.pod_subnet = ipaddress.IPv4Network(pod_subnet)
        self.journal: HostJournal | None = None
        self.ports: dict[str, int] = {}
        self._host_lock: int | None = None
        self._journal_lock: int | None = None

    # ---- paths --------------------------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        """containerd's sockets: short (sun_path is 108 bytes) and under the registry."""
        assert self.journal is not None
        return REGISTRY.parent / f"sock-{self.journal.id}"

    @property
    def containerd_socket(self) -> Path:
        """containerd's gRPC socket (CRI and ctr)."""
        return self.socket_dir / "containerd.sock"

    # ---- life cycle -----------------------------------------------------------------------

    def prepare(self) -> None:
        """Take the host lock, undo crashed nodes' leftovers, record and make the host changes.

        Writes the journal *before* any change, then the cgroup root, configs and
        directories. Raises :class:`RealNodeError` if the host cannot run a node.
        """
        reason = real_node_unsupported(self.bin_dir)
        if reason:
            raise RealNodeError("real-node", reason)
        REGISTRY.mkdir(parents=True, exist_ok=True)
        self._host_lock = os.open(HOST_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._host_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._host_lock)
            self._host_lock = None
            raise RealNodeError("real-node", f"another real node runs on this host (lock {HOST_LOCK})") from exc
        clean_stale()
        for net in _host_routes():
            if net.overlaps(self.pod_subnet):
                raise RealNodeError("real-node", f"pod subnet {self.pod_subnet} overlaps the host route {net}")

        node_id = secrets.token_hex(3)
        socket_dir = REGISTRY.parent / f"sock-{node_id}"
        self.run_dir = NODE_STATE_ROOT / f"node-{node_id}"
        ours = [str(NODE_STATE_ROOT)] if not NODE_STATE_ROOT.exists() else []
        journal = HostJournal(
            id=node_id,
            run_dir=str(self.run_dir),
            owner_pid=os.getpid(),
            created_at=time.time(),
            bridge=f"rls{node_id}",
            cgroup_name=f"rlscale-{node_id}",
            containerd_socket=str(socket_dir / "containerd.sock"),
            sysctls=read_sysctls(),
            nft_tables=nft_tables(),
            created_paths=[*(p for p in FIXED_PATHS if not os.path.lexists(p)), str(socket_dir), *ours],
        )
        self._journal_lock = os.open(journal.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._journal_lock, fcntl.LOCK_EX)
        journal.save()
        self.journal = journal

        shutil.rmtree(self.run_dir, ignore_errors=True)
        for sub in ("containerd/root", "containerd/state", "containerd/opt", "containerd/runc",
                    "cni/net.d", "cni/ipam", "kubelet/root", "kubelet/pki", "kubelet/pod-logs",
                    "kubelet/volume-plugins"):  # fmt: skip
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        socket_dir.mkdir(parents=True, exist_ok=True)
        self._make_cgroup_root()
        self._write_configs()

    def record_pid(self, name: str, pid: int | None) -> None:
        """Add a started process to the journal (so a crashed run's cleanup finds it)."""
        if self.journal is not None and pid is not None:
            self.journal.pids[name] = pid
            self.journal.save()

    def containerd_argv(self) -> list[str]:
        """containerd with this node's config."""
        return ["containerd", "--config", str(self.run_dir / "containerd" / "config.toml")]

    def kubelet_argv(self) -> list[str]:
        """The kubelet, registered as this node."""
        k = self.run_dir / "kubelet"
        return [
            str(self.bin_dir / "kubelet"),
            f"--config={k / 'config.yaml'}",
            f"--kubeconfig={self.kubeconfig}",
            f"--root-dir={k / 'root'}",
            f"--cert-dir={k / 'pki'}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.node_ip}",
            # cAdvisor (/metrics/cadvisor) finds containers' names and labels through
            # containerd on its own flag, default /run/containerd/containerd.sock.
            f"--containerd={self.containerd_socket}",
            # cAdvisor refreshes container stats every 10 s by default: too coarse for the
            # operator's 10 s rate() windows (one sample per window, so no rate at all).
            "--housekeeping-interval=2s",
            "--v=2",
        ]

    def containerd_ready(self) -> bool:
        """containerd answers on its socket (``ctr version`` reaches the server)."""
        proc = subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "version"], capture_output=True, timeout=10, check=False
        )
        return proc.returncode == 0

    def import_images(self) -> list[str]:
        """Import every OCI archive into containerd's ``k8s.io`` namespace; returns the image names."""
        for archive in self.images:
            proc = subprocess.run(
                ["ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", "images", "import", str(archive)],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if proc.returncode != 0:
                raise RealNodeError("containerd", f"importing {archive} failed: {proc.stderr.strip()}")
        listing = subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", "images", "ls", "-q"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return [n for n in listing.stdout.split() if not n.startswith("sha256:")]

    def teardown(self) -> None:
        """Undo every host change of this node and release the locks; idempotent."""
        if self.journal is not None:
            undo(self.journal)
        for fd in (self._journal_lock, self._host_lock):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._journal_lock = self._host_lock = None

    # ---- configuration --------------------------------------------------------------------

    def _make_cgroup_root(self) -> None:
        """``/rlscale-<id>`` in every hierarchy: the kubelet's ``cgroupRoot`` must exist.

        A new v1 cpuset cgroup starts with no CPUs or memory nodes; copy the parent's, or
        nothing could run below it.
        """
        assert self.journal is not None
        cpus = os.cpu_count() or 1
        for mount in cgroup_mounts():
            top = mount / self.journal.cgroup_name
            top.mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (top / knob).exists() and not (top / knob).read_text().strip():
                    (top / knob).write_text((mount / knob).read_text())
            # Weigh the node like the CPUs it offers, not like one process: with the default
            # weight, every busy process in the host's root cgroup counts as much as all
            # pods together, and pods starve below their limits on a loaded machine.
            if (top / "cpu.shares").exists():
                (top / "cpu.shares").write_text(str(1024 * cpus))
            elif (top / "cpu.weight").exists():
                (top / "cpu.weight").write_text(str(min(10_000, 100 * cpus)))

    def _write_configs(self) -> None:
        assert self.journal is not None
        run, j = self.run_dir, self.journal
        gateway = next(self.pod_subnet.hosts())
        (run / "containerd" / "config.toml").write_text(
            _CONTAINERD_CONFIG.format(
                root=run / "containerd" / "root",
                state=run / "containerd" / "state",
                opt=run / "containerd" / "opt",
                runc_root=run / "containerd" / "runc",
                sock=j.containerd_socket,
                runc=_runc(),
                pause=PAUSE_IMAGE,
                cni_bin=self.bin_dir / "cni",
                cni_conf=run / "cni" / "net.d",
            )
        )
        conflist = {
            "cniVersion": "1.0.0",
            "name": f"rlscale-{j.id}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": j.bridge,
                    "isGateway": True,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(self.pod_subnet), "gateway": str(gateway)}]],
                        "dataDir": str(run / "cni" / "ipam"),
                    },
                }
            ],
        }
        (run / "cni" / "net.d" / "10-rlscale.conflist").write_text(json.dumps(conflist, indent=2))
        self.ports = {"kubelet": free_port(), "kubelet-healthz": free_port()}
        kubelet_config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "containerRuntimeEndpoint": f"unix://{j.containerd_socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{j.cgroup_name}",
            "cgroupsPerQOS": True,
            "enforceNodeAllocatable": ["pods"],
            "failCgroupV1": False,
            "failSwapOn": False,
            "address": self.node_ip,
            "port": self.ports["kubelet"],
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.ports["kubelet-healthz"],
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDomain": "cluster.local",
            "resolvConf": "/etc/resolv.conf",
            "podLogsDir": str(run / "kubelet" / "pod-logs"),
            "volumePluginDir": str(run / "kubelet" / "volume-plugins"),
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            # Off: the kubelet would refuse to start on this host's defaults. The values it
            # sets are in the journal and restored on stop.
            "protectKernelDefaults": False,
            # No kube-proxy here, so none of the kubelet's iptables chains are needed.
            "makeIPTablesUtilChains": False,
            # No CAP_SYS_RESOURCE on these VMs (see the module docstring).
            "oomScoreAdj": 0,
            # Images come from archives, never a registry: never collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "nodeStatusUpdateFrequency": "10s",
            "maxPods": 110,
        }
        (run / "kubelet" / "config.yaml").write_text(yaml.safe_dump(kubelet_config, sort_keys=False))


_CONTAINERD_CONFIG = """\
# containerd for one rlscale real node (rlscale.devstack.node): every path is this node's.
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{runc_root}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
"""
