"""The local cluster's PKI and advertised address, without starting anything.

A control plane that fails on a bad certificate or an unusable address says so only after
etcd started and the apiserver died; these pin both pieces on their own, in milliseconds.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rlscale.devstack import cluster, network
from rlscale.devstack.certs import CertificateError, write_control_plane_pki
from rlscale.devstack.cluster import ClusterStartError, LocalCluster


def _openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize(("advertise", "in_sans"), [("192.0.2.7", True), ("apiserver.example", False)])
def test_the_serving_certificate_chains_to_the_ca_and_names_the_service(
    tmp_path: Path, advertise: str, in_sans: bool
) -> None:
    write_control_plane_pki(tmp_path, service_ip="10.96.0.1", advertise_address=advertise)
    for leaf, ca in (("apiserver", "ca"), ("front-proxy-client", "front-proxy-ca")):
        assert (
            _openssl("verify", "-CAfile", str(tmp_path / f"{ca}.crt"), str(tmp_path / f"{leaf}.crt"))
            .strip()
            .endswith("OK")
        )
    sans = _openssl("x509", "-in", str(tmp_path / "apiserver.crt"), "-noout", "-ext", "subjectAltName")
    for name in ("IP Address:127.0.0.1", "IP Address:10.96.0.1", "DNS:kubernetes.default.svc.cluster.local"):
        assert name in sans
    assert (f"IP Address:{advertise}" in sans) is in_sans
    assert "PUBLIC KEY" in (tmp_path / "sa.pub").read_text()


def test_an_openssl_failure_is_a_pki_start_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise CertificateError("openssl req failed:\nbad subject")

    monkeypatch.setattr(cluster, "write_control_plane_pki", fail)
    local = LocalCluster(tmp_path / "bin", tmp_path / "work", advertise_address="192.0.2.7")
    local._prepare_dirs()
    with pytest.raises(ClusterStartError) as failed:
        local._write_pki()
    assert failed.value.component == "pki" and "bad subject" in str(failed.value)


def _routes(tmp_path: Path, *default_ifaces: str) -> Path:
    table = tmp_path / "route"
    rows = [f"{name}\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0" for name in default_ifaces]
    table.write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n" + "\n".join(rows)
    )
    return table


def test_the_default_route_interface_wins_and_loopback_or_link_local_never(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    addresses = {"lo": "127.0.0.1", "eth0": "10.0.0.5", "eth1": "169.254.3.3", "wlan0": "192.168.1.9"}
    monkeypatch.setattr(network, "_iface_ipv4", addresses.get)
    monkeypatch.setattr(network.socket, "if_nameindex", lambda: list(enumerate(addresses, 1)))
    assert network.detect_advertise_address(_routes(tmp_path, "wlan0")) == "192.168.1.9"
    assert network.detect_advertise_address(_routes(tmp_path, "eth1")) == "10.0.0.5"  # link-local: next interface
    assert network.detect_advertise_address(tmp_path / "no-route-table") == "10.0.0.5"


def test_without_a_usable_interface_the_address_is_a_test_net_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(network, "_iface_ipv4", {"lo": "127.0.0.1"}.get)
    monkeypatch.setattr(network.socket, "if_nameindex", lambda: [(1, "lo")])
    assert network.detect_advertise_address(_routes(tmp_path)) == network.FALLBACK_ADVERTISE_ADDRESS == "203.0.113.10"
