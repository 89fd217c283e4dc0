"""``rlscale cluster up|down|status|clean``: the local control plane from the command line.

``up`` runs in the foreground until Ctrl-C (the components die with it). ``up --detach``
starts the same foreground process as a background supervisor in its own session,
waits until the cluster is ready and returns; ``down`` signals that supervisor through
the pid in ``<work-dir>/state.json`` (and kills leftover components if it is gone).
``--node-kind real`` adds a kubelet with containerd (:mod:`.realcluster`); ``down`` and
``clean`` undo the host changes of any real node whose process died (:mod:`.hostjournal`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cluster import ClusterStartError, LocalCluster
from .hostjournal import clean_stale
from .images import ImageBuildError, node_images
from .node import real_node_unsupported
from .procs import kill_process_group, pid_alive, tail
from .realcluster import RealNodeCluster
from .tools import ToolsNotFoundError, locate_tools_bin

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

DEFAULT_WORK_DIR = Path(".devstack/cluster")
STATE_FILE = "state.json"


def _state_path(work_dir: Path) -> Path:
    return work_dir / STATE_FILE


def _read_state(work_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(_state_path(work_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_state(work_dir: Path, state: dict[str, Any]) -> None:
    tmp = _state_path(work_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(_state_path(work_dir))


def _running(state: dict[str, Any] | None) -> bool:
    return bool(state and state.get("supervisor_pid") and pid_alive(int(state["supervisor_pid"])))


def _print_access(state: dict[str, Any]) -> None:
    click.echo(f"kubeconfig: {state['kubeconfig']}")
    click.echo(f"server:     {state['server']}")
    click.echo(f"export KUBECONFIG={state['kubeconfig']}")


work_dir_option = click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_WORK_DIR,
    show_default=True,
    help="Scratch dir for etcd data, PKI, kubeconfigs, logs and the state file.",
)


@click.group()
def cluster() -> None:
    """A local Kubernetes control plane: etcd, kube-apiserver, controller-manager, scheduler, kwok."""


def resolve_node_kind(requested: str | None, bin_dir: Path) -> str:
    """``real`` or ``kwok``: the requested kind, or real where the host allows it (saying why not)."""
    reason = real_node_unsupported(bin_dir)
    if requested == "real" and reason:
        raise click.ClickException(f"--node-kind real: {reason}")
    if requested is None:
        if reason:
            click.echo(f"no real node on this host ({reason}); using kwok's fake nodes", err=True)
            return "kwok"
        return "real"
    return requested


node_kind_option = click.option(
    "--node-kind",
    type=click.Choice(["real", "kwok"]),
    default=None,
    help="real: a kubelet with containerd runs the pods; kwok: fake nodes. Default: real where the host allows it.",
)


def make_cluster(node_kind: str, bin_dir: Path, work_dir: Path, *, nodes: int, timeout: float) -> LocalCluster:
    """The cluster for a node kind (a real one builds or finds its images first)."""
    if node_kind == "kwok":
        return LocalCluster(bin_dir, work_dir, nodes=nodes, start_timeout=timeout)
    try:
        images = [i.archive for i in node_images(bin_dir)]
    except ImageBuildError as exc:
        raise click.ClickException(str(exc)) from exc
    return RealNodeCluster(bin_dir, work_dir, images=images, nodes=nodes, start_timeout=timeout)


def start_cluster(stack: contextlib.ExitStack, cluster: LocalCluster) -> ApiClient:
    """Start ``cluster`` and return an API client for it; ``stack`` closes the client, then stops the cluster."""
    from kubernetes import config

    stack.callback(cluster.stop)
    cluster.start()
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    stack.callback(api.close)
    return api


def step_timer(echo: Callable[[str], None], what: str) -> Callable[[], None]:
    """Announce one step of a long command (``==> what …``); the returned call reports its duration."""
    t = time.monotonic()
    echo(f"==> {what} …")
    return lambda: echo(f"    done in {time.monotonic() - t:.1f}s")


@cluster.command()
@work_dir_option
@node_kind_option
@click.option(
    "--nodes", type=click.IntRange(0), default=None, help="Fake (kwok) nodes [default: 3 with kwok, 0 with real]."
)
@click.option(
    "--tools-bin",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Dir with the binaries (default: $RLSCALE_TOOLS_BIN or build with tools/build-tools.sh).",
)
@click.option("--detach", is_flag=True, help="Run in the background; stop with `rlscale cluster down`.")
@click.option("--timeout", type=float, default=180.0, show_default=True, help="Start-up timeout, seconds.")
def up(
    work_dir: Path, node_kind: str | None, nodes: int | None, tools_bin: Path | None, detach: bool, timeout: float
) -> None:
    """Start the cluster, print the kubeconfig path, and wait (Ctrl-C stops it)."""
    work_dir = work_dir.resolve()
    if _running(_read_state(work_dir)):
        raise click.ClickException(f"a cluster is already running from {work_dir}; run `rlscale cluster down` first")
    try:
        bin_dir = tools_bin.resolve() if tools_bin else locate_tools_bin()
    except ToolsNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    work_dir.mkdir(parents=True, exist_ok=True)
    kind = resolve_node_kind(node_kind, bin_dir)
    if nodes is None:
        nodes = 0 if kind == "real" else 3
    if detach:
        _up_detached(work_dir, kind, nodes, bin_dir, timeout)
        return

    local = make_cluster(kind, bin_dir, work_dir, nodes=nodes, timeout=timeout)
    stop_requested: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop_requested.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _write_state(work_dir, {"supervisor_pid": os.getpid(), "ready": False})
    try:
        click.echo(f"starting local cluster in {work_dir} with binaries from {bin_dir} ...", err=True)
        try:
            local.start()
        except ClusterStartError as exc:
            _write_state(work_dir, {"supervisor_pid": os.getpid(), "ready": False, "error": str(exc)})
            raise click.ClickException(str(exc)) from exc
        state = {"supervisor_pid": os.getpid(), "ready": True, **local.state()}
        _write_state(work_dir, state)
        click.echo(f"ready in {local.timings['total']:.1f}s")
        _print_access(state)
        sys.stdout.flush()
        while not stop_requested:
            dead = [name for name, p in local.iter_processes() if not p.alive()]
            if dead:
                logs = local.component_logs()
                raise click.ClickException(f"{dead[0]} exited; log tail of {logs[dead[0]]}:\n{tail(logs[dead[0]])}")
            time.sleep(1)
        click.echo("stopping ...", err=True)
    finally:
        local.stop()
        _state_path(work_dir).unlink(missing_ok=True)


def _up_detached(work_dir: Path, node_kind: str, nodes: int, bin_dir: Path, timeout: float) -> None:
    """Start ``up`` (foreground mode) as a session leader and wait for its state file."""
    supervisor_log = work_dir / "supervisor.log"
    argv = [
        sys.executable, "-m", "rlscale.devstack.cli", "up",
        "--work-dir", str(work_dir), "--node-kind", node_kind, "--nodes", str(nodes),
        "--tools-bin", str(bin_dir), "--timeout", str(timeout),
    ]  # fmt: skip
    _state_path(work_dir).unlink(missing_ok=True)
    with supervisor_log.open("wb") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout + 30
    while time.monotonic() < deadline:
        state = _read_state(work_dir)
        if state and state.get("ready") and state.get("supervisor_pid") == proc.pid:
            click.echo(f"local cluster running in the background (supervisor pid {proc.pid}, log {supervisor_log})")
            _print_access(state)
            return
        if proc.poll() is not None:
            raise click.ClickException(f"the cluster failed to start; {supervisor_log}:\n{tail(supervisor_log)}")
        time.sleep(0.5)
    kill_process_group(proc.pid)
    raise click.ClickException(f"timed out; {supervisor_log}:\n{tail(supervisor_log)}")


@cluster.command()
@work_dir_option
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for a clean stop.")
def down(work_dir: Path, timeout: float) -> None:
    """Stop a cluster started with ``up --detach`` (or a foreground one, from another shell)."""
    work_dir = work_dir.resolve()
    state = _read_state(work_dir)
    if state is None:
        click.echo(f"no cluster state in {work_dir}; nothing to stop")
        return
    sup = int(state.get("supervisor_pid") or 0)
    if sup and pid_alive(sup):
        os.kill(sup, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(sup) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(sup):
            kill_process_group(sup, timeout=1)
    # The supervisor stops its components; these are left only if it was SIGKILLed.
    for name, pid in (state.get("pids") or {}).items():
        if pid and pid_alive(int(pid)):
            click.echo(f"killing leftover {name} (pid {pid})", err=True)
            kill_process_group(int(pid))
    # A real node whose supervisor was SIGKILLed leaves pods, mounts and cgroups behind.
    for node_id in clean_stale():
        click.echo(f"undid the host changes of real node {node_id}", err=True)
    _state_path(work_dir).unlink(missing_ok=True)
    click.echo("local cluster stopped")


@cluster.command()
def clean() -> None:
    """Undo the host changes of every real node whose process died (pods, mounts, cgroups, bridge, sysctls)."""
    undone = clean_stale()
    click.echo(f"undid {len(undone)} crashed real node(s){': ' + ', '.join(undone) if undone else ''}")


@cluster.command()
@work_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
def status(work_dir: Path, as_json: bool) -> None:
    """Show whether the cluster in WORK_DIR runs, its components and the kubeconfig."""
    work_dir = work_dir.resolve()
    state = _read_state(work_dir)
    running = _running(state)
    if as_json:
        click.echo(json.dumps({"running": running, **(state or {})}, indent=2))
    elif state is None:
        click.echo(f"not running (no state in {work_dir})")
    else:
        click.echo(f"{'running' if running else 'NOT running'} (supervisor pid {state.get('supervisor_pid')})")
        if state.get("error"):
            click.echo(f"start error: {state['error']}")
        for name, pid in (state.get("pids") or {}).items():
            click.echo(f"  {name:<24} pid {pid:<8} {'up' if pid and pid_alive(int(pid)) else 'DOWN'}")
        if state.get("server"):
            _print_access(state)
    if not running:
        sys.exit(1)


if __name__ == "__main__":
    cluster()
