"""The local control plane's PKI, made with the ``openssl`` command line.

What kubeadm would set up, minus what a loopback cluster does not need: a cluster CA and
the apiserver's serving certificate, the front-proxy (request-header) CA and its client,
and the ServiceAccount token signing key pair. Components authenticate with static
bearer tokens (see :mod:`rlscale.devstack.cluster`), so there are no client certificates
per component.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

__all__ = ["CertificateError", "write_control_plane_pki", "write_kubelet_client_cert"]

# ECDSA P-256 for CAs and TLS (fast to generate, like envtest's tinyca); the
# ServiceAccount signing key stays RSA (RS256 is what every token consumer expects).
_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


class CertificateError(RuntimeError):
    """An ``openssl`` call failed; the message holds the command and its stderr."""


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CertificateError(f"openssl {' '.join(args)} failed:\n{proc.stderr.strip()}")


def _make_ca(d: Path, name: str, cn: str) -> None:
    """Self-signed CA ``<name>.crt``/``<name>.key`` in ``d``."""
    _openssl(
        "req", "-x509", *_EC_KEY, "-nodes", "-days", "3650", "-subj", f"/CN={cn}",
        "-keyout", f"{name}.key", "-out", f"{name}.crt",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=d,
    )  # fmt: skip


def _make_cert(d: Path, name: str, cn: str, ca: str, extensions: str) -> None:
    """Leaf ``<name>.crt``/``<name>.key`` signed by CA ``<ca>`` with the given x509v3 extensions."""
    (d / f"{name}.ext").write_text(f"{extensions}\nkeyUsage=critical,digitalSignature,keyEncipherment\n")
    _openssl("req", *_EC_KEY, "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-days", "3650", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        cwd=d,
    )  # fmt: skip


def _is_ipv4(address: str) -> bool:
    try:
        socket.inet_aton(address)
    except OSError:
        return False
    return True


def write_control_plane_pki(d: Path, *, service_ip: str, advertise_address: str) -> None:
    """Write every key and certificate the control plane reads into the existing directory ``d``.

    ``ca.crt``/``ca.key`` (cluster CA), ``apiserver.crt``/``.key`` (serving certificate for
    loopback, the ``kubernetes`` Service's ``service_ip`` and names, and
    ``advertise_address`` if it is an IPv4 address), ``front-proxy-ca`` and
    ``front-proxy-client``, and ``sa.key``/``sa.pub`` (ServiceAccount token signing).
    Raises :class:`CertificateError` if ``openssl`` fails.
    """
    _make_ca(d, "ca", "rlscale-devstack-ca")
    sans = [
        "IP:127.0.0.1",
        f"IP:{service_ip}",
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        *([f"IP:{advertise_address}"] if _is_ipv4(advertise_address) else []),
    ]
    _make_cert(d, "apiserver", "kube-apiserver", "ca", f"subjectAltName={','.join(sans)}\nextendedKeyUsage=serverAuth")
    # Front-proxy (request-header) CA and client, as kubeadm sets up: without it the
    # controller-manager and scheduler log "missing content for CA bundle" forever,
    # and aggregated APIs could not authenticate the apiserver.
    _make_ca(d, "front-proxy-ca", "rlscale-devstack-front-proxy-ca")
    _make_cert(d, "front-proxy-client", "front-proxy-client", "front-proxy-ca", "extendedKeyUsage=clientAuth")
    # ServiceAccount token signing key (apiserver signs, verifies; KCM mints legacy).
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def write_kubelet_client_cert(d: Path) -> None:
    """``apiserver-kubelet-client.crt``/``.key`` in ``d``, signed by the cluster CA in ``d``.

    The apiserver presents it to a real kubelet for ``kubectl logs/exec`` and the stats
    proxy; the kubelet's webhook authorizer admits it as a member of ``system:masters``
    (kubeadm binds a narrower role; a throw-away local cluster does not need one).
    """
    name = "apiserver-kubelet-client"
    (d / f"{name}.ext").write_text("extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n")
    _openssl(
        "req", *_EC_KEY, "-nodes", "-subj", "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "-keyout", f"{name}.key", "-out", f"{name}.csr",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "3650", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        cwd=d,
    )  # fmt: skip
