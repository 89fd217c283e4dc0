"""Child-process plumbing shared by the local cluster and the local Prometheus.

Every component runs in its own process group (so a shutdown also reaches anything it
forks), writes stdout and stderr to a log file (so a failed start can show *why*), and
by default dies with the Python process that started it (so a crashed test run does not
leave etcd or an apiserver holding ports).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

__all__ = [
    "ComponentError",
    "Interrupted",
    "ManagedProcess",
    "free_port",
    "kill_process_group",
    "pid_alive",
    "sigterm_raises",
    "tail",
    "wait_until",
]

_PR_SET_PDEATHSIG = 1
# Loaded in the parent: the pre-exec hook runs between fork and exec, where loading
# a library is not safe.
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class ComponentError(RuntimeError):
    """A component failed to start or become ready; names it and carries its log tail."""

    def __init__(self, component: str, message: str, log_path: Path | None = None) -> None:
        self.component = component
        self.log_path = log_path
        self.log_tail = tail(log_path) if log_path is not None else ""
        text = f"{component}: {message}"
        if log_path is not None:
            text += f"\n--- last lines of {log_path} ---\n{self.log_tail}"
        super().__init__(text)


def tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a (possibly missing or large) log file."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<cannot read log: {exc}>"
    return "\n".join(data.splitlines()[-lines:])


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a currently free TCP port on ``host``.

    There is a window between closing the probe socket and the component binding the
    port; it is small and a collision shows up as a clear start failure.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists and is not a zombie.

    Zombies count as gone: an orphan whose reaper is slow (some container inits never
    reap) must not look like a running component.
    """
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def kill_process_group(pgid: int, timeout: float = 10.0, alive: Callable[[], bool] | None = None) -> None:
    """SIGTERM a process group, wait up to ``timeout`` s for its leader, then SIGKILL it.

    ``alive`` tells whether the leader still runs (defaults to probing the pid); pass
    ``Popen.poll``-based one for own children so their exit status is not stolen.
    """
    is_alive = alive if alive is not None else (lambda: pid_alive(pgid))
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_alive():
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    component: str,
    log_path: Path | None = None,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.2,
) -> None:
    """Poll ``predicate`` until it is true; fail fast if ``alive`` says the process died.

    Exceptions from ``predicate`` count as "not yet" (connection refused while a server
    starts is normal); the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if predicate():
                return
        except Exception as exc:  # a server that is still starting refuses or errors
            last_error = exc
        if alive is not None and not alive():
            raise ComponentError(component, f"exited while waiting for {what}", log_path)
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise ComponentError(component, f"timed out after {timeout:.0f}s waiting for {what}{detail}", log_path)
        time.sleep(interval)


class ManagedProcess:
    """One long-running component: its own process group, a log file, clean shutdown."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        die_with_parent: bool = True,
    ) -> None:
        """Describe (not start) a process.

        ``die_with_parent`` sets PR_SET_PDEATHSIG so the kernel kills the component when
        the *thread* that started it exits: start components from the main thread, or
        pass False (as ``rlscale cluster up --detach`` does for its supervisor).
        """
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.die_with_parent = die_with_parent
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id (also the process-group id), or None if never started."""
        return self.popen.pid if self.popen is not None else None

    def start(self) -> None:
        """Spawn the process in a new session, appending its output to the log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self.popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=_set_pdeathsig if self.die_with_parent else None,
                )
            except OSError as exc:
                raise ComponentError(self.name, f"cannot execute {self.argv[0]}: {exc}", self.log_path) from exc

    def alive(self) -> bool:
        """True while the process has not exited."""
        return self.popen is not None and self.popen.poll() is None

    def returncode(self) -> int | None:
        """Exit status once exited, else None."""
        return self.popen.poll() if self.popen is not None else None

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the whole process group (then kill it); idempotent."""
        if self.popen is None:
            return
        kill_process_group(self.popen.pid, timeout, alive=self.alive)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)

    def __repr__(self) -> str:
        state = "not started" if self.popen is None else f"pid={self.popen.pid} rc={self.popen.poll()}"
        return f"<ManagedProcess {self.name} {state}>"


def _set_pdeathsig() -> None:
    """Runs in the child between fork and exec: get SIGKILLed when the parent dies.

    SIGKILL, not SIGTERM: an orphaned stack gets no ordered shutdown, and SIGTERMed all
    at once kube-apiserver spends 30-60 s in graceful termination against an etcd that
    is itself shutting down (measured), keeping its port and memory meanwhile.
    """
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Interrupted(Exception):
    """SIGTERM, turned into an exception so that a long-running command's teardown runs."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Interrupted` (as Ctrl-C raises KeyboardInterrupt).

    ``rlscale demo`` and ``rlscale calibrate`` start a cluster, a real node and Prometheus;
    a plain SIGTERM would end the process without the ``finally`` that stops them.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
