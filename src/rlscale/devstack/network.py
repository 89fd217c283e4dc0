"""Which address kube-apiserver advertises for the ``kubernetes`` Service.

kube-apiserver rejects loopback here and, if not told, picks the address of the
default-route interface; with no default route (a sandbox, a CI container) it refuses to
start ("unable to find suitable network address"). So the local cluster always passes one.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
from pathlib import Path

__all__ = ["FALLBACK_ADVERTISE_ADDRESS", "detect_advertise_address"]

# Written into the `kubernetes` Endpoints only; nothing dials it (no kube-proxy).
# TEST-NET-3 (RFC 5737), used only when the host has no usable IPv4 address.
FALLBACK_ADVERTISE_ADDRESS = "203.0.113.10"


def _iface_ipv4(name: str) -> str | None:
    """IPv4 address of a network interface (SIOCGIFADDR), or None."""
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), siocgifaddr, struct.pack("256s", name[:15].encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def detect_advertise_address(route_table: Path = Path("/proc/net/route")) -> str:
    """The address kube-apiserver should advertise for the ``kubernetes`` Service.

    The default-route interface's IPv4, else any non-loopback interface's IPv4, else a
    TEST-NET address. No client connects to it (we run no kube-proxy), so an address that
    does not exist is harmless.
    """
    candidates: list[str] = []
    with contextlib.suppress(OSError):
        for line in route_table.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[1] == "00000000":
                candidates.append(fields[0])
    with contextlib.suppress(OSError):
        candidates += [name for _, name in socket.if_nameindex() if name not in candidates]
    for name in candidates:
        if name == "lo":
            continue
        addr = _iface_ipv4(name)
        if addr and not addr.startswith(("127.", "169.254.")):
            return addr
    return FALLBACK_ADVERTISE_ADDRESS
