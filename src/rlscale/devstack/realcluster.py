"""The local control plane with a real node: :class:`LocalCluster` plus containerd and a kubelet.

What the control plane needs on top of the kwok-only cluster, as kubeadm would set it
up: a static token for the kubelet (user ``system:node:<name>`` in ``system:nodes``, so
the Node authorizer and the NodeRestriction admission plugin scope it to its own node),
and a client certificate the apiserver presents to the kubelet for logs, exec and the
stats proxy. kwok still runs, so ``nodes`` fake nodes can sit next to the real one.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .certs import CertificateError, write_kubelet_client_cert
from .cluster import ClusterStartError, LocalCluster
from .node import DEFAULT_POD_SUBNET, RealNode, RealNodeError

__all__ = ["REAL_NODE_NAME", "RealNodeCluster"]

log = logging.getLogger(__name__)

REAL_NODE_NAME = "rlscale-node"


class RealNodeCluster(LocalCluster):
    """A :class:`LocalCluster` whose pods run for real on one kubelet (plus ``nodes`` kwok nodes).

    ``images`` are OCI archives imported into containerd before the kubelet starts (the
    pause image must be among them: :func:`rlscale.devstack.images.node_images`).
    ``stop()`` undoes every host change the node made (see :mod:`.hostjournal`).
    """

    def __init__(
        self,
        bin_dir: Path | str,
        work_dir: Path | str,
        *,
        images: Sequence[Path],
        nodes: int = 0,
        pod_subnet: str = DEFAULT_POD_SUBNET,
        extra_apiserver_args: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        """Configure (not start); keyword arguments as :class:`LocalCluster`."""
        super().__init__(bin_dir, work_dir, nodes=nodes, extra_apiserver_args=extra_apiserver_args, **kwargs)
        pki = self.pki_dir
        self.extra_apiserver_args = [
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            *self.extra_apiserver_args,
        ]
        self.real_node = RealNode(
            self.bin_dir,
            name=REAL_NODE_NAME,
            node_ip=self.advertise_address,
            ca_file=self.ca_file,
            kubeconfig=self.pki_dir / "kubelet.kubeconfig",
            images=images,
            pod_subnet=pod_subnet,
        )
        self.image_names: list[str] = []

    @property
    def real_node_name(self) -> str:
        """The kubelet's node name."""
        return REAL_NODE_NAME

    def scrape_configs(self, sd_file: Path) -> list[dict[str, Any]]:
        """Prometheus jobs for this node: the pods listed in ``sd_file`` and the kubelet's cAdvisor.

        ``pods`` reads its targets from a ``file_sd`` file (Debian's Prometheus has no
        Kubernetes discovery; :class:`~.realload.PodEndpoints` writes the file from the
        API, with ``namespace`` and ``pod`` labels as the operator's queries expect).
        ``cadvisor`` scrapes the kubelet's ``/metrics/cadvisor``
        (``container_cpu_usage_seconds_total``, ``container_memory_working_set_bytes``,
        labelled by namespace, pod and container) with the admin token, written to a
        0600 file for Prometheus.
        """
        token = self.work_dir / "prometheus.token"
        token.write_text(self.admin_token)
        token.chmod(0o600)
        if not sd_file.exists():
            sd_file.write_text("[]")
        return [
            {"job_name": "pods", "file_sd_configs": [{"files": [str(sd_file)], "refresh_interval": "1s"}]},
            {
                "job_name": "cadvisor",
                "scheme": "https",
                "metrics_path": "/metrics/cadvisor",
                "authorization": {"credentials_file": str(token)},
                # The kubelet serves a self-signed certificate from its cert dir.
                "tls_config": {"insecure_skip_verify": True},
                "static_configs": [{"targets": [f"{self.advertise_address}:{self.real_node.ports['kubelet']}"]}],
            },
        ]

    def stop(self, timeout: float = 15.0) -> None:
        """Undo the node (kubelet, pods, containerd, host changes), then stop the control plane."""
        self.real_node.teardown()
        super().stop(timeout)

    def state(self) -> dict[str, Any]:
        """As :meth:`LocalCluster.state`, plus the node's journal id and images."""
        journal = self.real_node.journal
        return {
            **super().state(),
            "node_kind": "real",
            "real_node": {
                "name": REAL_NODE_NAME,
                "journal": journal.id if journal else None,
                "images": self.image_names,
                "ports": self.real_node.ports,
            },
        }

    # ---- start-up ---------------------------------------------------------------------------

    def _phases(self) -> list[tuple[str, Callable[[], None]]]:
        phases = super()._phases()
        at = [name for name, _ in phases].index("controllers") + 1
        return [*phases[:at], ("real-node", self._start_real_node), *phases[at:]]

    def _write_pki(self) -> None:
        super()._write_pki()
        d = self.pki_dir
        try:
            write_kubelet_client_cert(d)
        except CertificateError as exc:
            raise ClusterStartError("pki", str(exc)) from exc
        token = secrets.token_hex(24)
        user = f"system:node:{REAL_NODE_NAME}"
        with (d / "tokens.csv").open("a") as fh:
            fh.write(f'{token},{user},{user},"system:nodes"\n')
        self._write_kubeconfig(d / "kubelet.kubeconfig", user, token)

    def _start_real_node(self) -> None:
        node = self.real_node
        try:
            node.prepare()
        except RealNodeError as exc:
            raise ClusterStartError(exc.component, str(exc)) from exc
        except OSError as exc:
            raise ClusterStartError("real-node", f"preparing the host failed: {exc}") from exc
        containerd = self._spawn("containerd", node.containerd_argv())
        node.record_pid("containerd", containerd.pid)
        self._wait(containerd, "its socket", node.containerd_ready)
        try:
            self.image_names = node.import_images()
        except RealNodeError as exc:
            raise ClusterStartError("containerd", str(exc), containerd.log_path) from exc
        kubelet = self._spawn("kubelet", node.kubelet_argv())
        node.record_pid("kubelet", kubelet.pid)

        def ready() -> bool:
            n = self.request("GET", f"/api/v1/nodes/{REAL_NODE_NAME}")
            conds = {c["type"]: c["status"] for c in n.get("status", {}).get("conditions", [])}
            taints = [t for t in n["spec"].get("taints", []) if t.get("key", "").startswith("node.kubernetes.io/")]
            return conds.get("Ready") == "True" and not taints

        self._wait(kubelet, f"node {REAL_NODE_NAME} Ready and untainted", ready, interval=0.5)
        log.info("real node %s ready; images %s", REAL_NODE_NAME, self.image_names)
