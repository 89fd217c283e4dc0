"""What the real node changes on the host, written down *before* each change, and undone.

A kubelet with containerd is not a set of processes in a scratch directory: it leaves
pods' processes behind its back (the containerd shims and the containers are not its
children), mounts overlays, shm and network namespaces, creates cgroups, a bridge, and
rewrites sysctls. Other engineers run their own local stacks on the same host, so every
change here is named for one node (``rls<id>`` bridge, ``/rlscale-<id>`` cgroup root,
its own run directory) and undone only from this record, never by matching a generic
name.

The journal lives in :data:`REGISTRY` (``/run/rlscale/nodes``, on tmpfs: it survives a
crashed test run but not a reboot, which clears the same state). Its owner holds an
``flock`` on ``<id>.lock`` for its whole life; a journal whose lock is free belongs to a
process that died, and :func:`clean_stale` undoes it. :func:`residue` lists whatever of a
journal's changes is still on the host: the tests assert it is empty after teardown.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, Field

__all__ = [
    "FIXED_PATHS",
    "REGISTRY",
    "SYSCTLS",
    "HostJournal",
    "cgroup_mounts",
    "clean_stale",
    "journals",
    "mounts_under",
    "nft_tables",
    "processes_with",
    "residue",
    "undo",
]

log = logging.getLogger(__name__)

REGISTRY = Path(os.environ.get("RLSCALE_NODE_REGISTRY", "/run/rlscale/nodes"))

#: The kubelet (protectKernelDefaults off) sets the first three; the CNI bridge plugin
#: turns on IPv4 forwarding for its gateway.
SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops", "net.ipv4.ip_forward")

#: Paths kubelet 1.33, containerd 1.6 and libcni hard-code (no flag moves them). Those
#: absent before start are recorded and removed on undo; those already there are left.
FIXED_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/containerd",
    "/usr/libexec/kubernetes",
)

#: Chains the kubelet or CNI plugins name; a table that appeared during the run is
#: deleted only if every chain in it is one of these (or a base chain).
_OWN_CHAIN_PREFIXES = ("KUBE-", "CNI-")
_BASE_CHAINS = {"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"}


class HostJournal(BaseModel):
    """Every host change one real node makes, recorded before it is made."""

    id: str = Field(description="Short hex id; names the bridge, cgroup root and journal files.")
    run_dir: str = Field(description="The node's directory: containerd and kubelet state, mounts, logs.")
    owner_pid: int
    created_at: float
    bridge: str
    cgroup_name: str = Field(description="Top-level cgroup (without slash) in every hierarchy.")
    containerd_socket: str
    sysctls: dict[str, str] = Field(default_factory=dict, description="Values before start.")
    nft_tables: list[str] | None = Field(default=None, description="'family name' of tables before start.")
    created_paths: list[str] = Field(default_factory=list, description="Fixed paths absent before start.")
    pids: dict[str, int] = Field(default_factory=dict, description="Processes this node started itself.")

    @property
    def path(self) -> Path:
        """Where this journal is kept."""
        return REGISTRY / f"{self.id}.json"

    @property
    def lock_path(self) -> Path:
        """The owner's flock."""
        return REGISTRY / f"{self.id}.lock"

    def save(self) -> None:
        """Write atomically (a crash mid-write must not lose the previous record)."""
        REGISTRY.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(self.path)


# ---- reading the host ---------------------------------------------------------------


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    """Current values of :data:`SYSCTLS` (those this kernel has)."""
    out: dict[str, str] = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            out[name] = _sysctl_path(name).read_text().strip()
    return out


def nft_tables() -> list[str] | None:
    """'family name' of every nftables table, or None without the ``nft`` command."""
    if shutil.which("nft") is None:
        return None
    proc = subprocess.run(["nft", "-j", "list", "tables"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    items = json.loads(proc.stdout).get("nftables", [])
    return sorted(f"{t['table']['family']} {t['table']['name']}" for t in items if "table" in t)


def _nft_chains(family: str, table: str) -> list[str]:
    proc = subprocess.run(["nft", "-j", "list", "table", family, table], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return []
    return [c["chain"]["name"] for c in json.loads(proc.stdout).get("nftables", []) if "chain" in c]


def _mountinfo() -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount, mountinfo's octal escapes decoded."""
    out: list[tuple[str, str]] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        point = left.split()[4].encode().decode("unicode_escape")
        out.append((point, right.split()[0]))
    return out


def mounts_under(directory: str) -> list[str]:
    """Mount points at or below ``directory``, deepest first."""
    root = directory.rstrip("/")
    found = {p for p, _ in _mountinfo() if p == root or p.startswith(root + "/")}
    return sorted(found, key=lambda p: (p.count("/"), p), reverse=True)


def cgroup_mounts() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 controllers, or the v2 unified tree)."""
    seen: dict[str, Path] = {}
    for point, fstype in _mountinfo():
        if fstype in ("cgroup", "cgroup2"):
            seen.setdefault(point, Path(point))
    return list(seen.values())


def _cgroup_dirs(name: str) -> list[Path]:
    return [m / name for m in cgroup_mounts() if (m / name).is_dir()]


def _cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for top in _cgroup_dirs(name):
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in procs.read_text().split())
    return pids


def processes_with(needle: str) -> list[int]:
    """PIDs whose command line contains ``needle`` (our socket or run dir: never a bare name)."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _is_ours(pid: int, journal: HostJournal) -> bool:
    """A recorded PID still names our process (not a recycled one)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return journal.run_dir in cmdline


def _bridge_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


# ---- the record's life ----------------------------------------------------------------


def journals() -> list[HostJournal]:
    """Every journal in the registry (running and stale)."""
    out: list[HostJournal] = []
    if not REGISTRY.is_dir():
        return out
    for path in sorted(REGISTRY.glob("*.json")):
        try:
            out.append(HostJournal.model_validate_json(path.read_text()))
        except (OSError, ValueError) as exc:
            log.warning("unreadable node journal %s: %s", path, exc)
    return out


@contextlib.contextmanager
def _try_lock(path: Path) -> Iterator[bool]:
    """Hold ``path``'s flock for the block if it is free; yields whether we got it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def clean_stale() -> list[str]:
    """Undo every journal whose owner is gone (its lock is free); returns their ids."""
    cleaned: list[str] = []
    for journal in journals():
        with _try_lock(journal.lock_path) as free:
            if not free:
                continue
            log.warning("undoing the host changes of a crashed real node %s (%s)", journal.id, journal.run_dir)
            undo(journal)
            cleaned.append(journal.id)
    return cleaned


def _kill(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _wait_gone(pids: set[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)


def undo(journal: HostJournal, *, timeout: float = 10.0) -> None:
    """Undo every change in ``journal`` (each step tolerates a half-made change), then drop it.

    Order matters: the kubelet first (it would restart pods), then every process in the
    node's cgroups and containerd's shims (matched by our socket path), containerd, then
    the mounts (the network namespaces go with their last process and mount, taking the
    pods' veths), the bridge, the cgroups (only empty ones can be removed), new nftables
    tables, sysctls, fixed paths and the state directories.
    """
    if "kubelet" in journal.pids and _is_ours(journal.pids["kubelet"], journal):
        # No graceful stop: its pods are killed next anyway, and it takes seconds to exit on TERM.
        _kill(journal.pids["kubelet"], 0.0)
    for _ in range(3):  # a dying shim may still spawn; a second sweep catches it
        victims = _cgroup_pids(journal.cgroup_name) | set(processes_with(f"-address {journal.containerd_socket}"))
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_gone(victims, timeout)
        if not victims:
            break
    if "containerd" in journal.pids and _is_ours(journal.pids["containerd"], journal):
        _kill(journal.pids["containerd"], timeout)
    for point in mounts_under(journal.run_dir):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    if _bridge_exists(journal.bridge):
        subprocess.run(["ip", "link", "delete", journal.bridge], capture_output=True, check=False)
    for top in _cgroup_dirs(journal.cgroup_name):
        for attempt in range(20):
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for d in [*dirs, top]:
                with contextlib.suppress(OSError):
                    d.rmdir()
            if not top.exists() or attempt == 19:
                break
            time.sleep(0.1)
    if journal.nft_tables is not None:
        for table in sorted(set(nft_tables() or []) - set(journal.nft_tables)):
            family, name = table.split(" ", 1)
            chains = _nft_chains(family, name)
            if all(c.startswith(_OWN_CHAIN_PREFIXES) or c in _BASE_CHAINS for c in chains):
                subprocess.run(["nft", "delete", "table", family, name], capture_output=True, check=False)
            else:
                log.warning("leaving nftables table %s: it holds chains that are not the kubelet's", table)
    for name, value in journal.sysctls.items():
        with contextlib.suppress(OSError):
            _sysctl_path(name).write_text(value + "\n")
    shutil.rmtree(journal.run_dir, ignore_errors=True)
    for path in journal.created_paths:
        shutil.rmtree(path, ignore_errors=True)
    journal.path.unlink(missing_ok=True)
    journal.lock_path.unlink(missing_ok=True)


def residue(journal: HostJournal) -> list[str]:
    """What of ``journal``'s changes is still on the host (empty when undone)."""
    left: list[str] = []
    for name, pid in journal.pids.items():
        if _alive(pid) and _is_ours(pid, journal):
            left.append(f"process {name} (pid {pid})")
    for pid in sorted(_cgroup_pids(journal.cgroup_name)):
        left.append(f"process {pid} in cgroup /{journal.cgroup_name}")
    for pid in processes_with(f"-address {journal.containerd_socket}"):
        left.append(f"containerd shim pid {pid}")
    for pid in processes_with(journal.run_dir):
        if _alive(pid):
            left.append(f"process pid {pid} running from {journal.run_dir}")
    left += [f"mount {p}" for p in mounts_under(journal.run_dir)]
    if _bridge_exists(journal.bridge):
        left.append(f"bridge {journal.bridge}")
    left += [f"cgroup {d}" for d in _cgroup_dirs(journal.cgroup_name)]
    if journal.nft_tables is not None:
        left += [f"nftables table {t}" for t in sorted(set(nft_tables() or []) - set(journal.nft_tables))]
    now = read_sysctls()
    left += [f"sysctl {k}={now.get(k)} (was {v})" for k, v in journal.sysctls.items() if now.get(k) != v]
    left += [f"path {p}" for p in [*journal.created_paths, journal.run_dir] if os.path.lexists(p)]
    return left
