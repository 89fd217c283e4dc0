"""Find the control-plane binaries (etcd, kube-*, kwok, helm, kindcheck).

They are built from the Go tool modules under ``tools/`` by ``tools/build-tools.sh``
into a cache outside the repo (never committed). Two ways to point at them:

* ``RLSCALE_TOOLS_BIN=/path/to/bin``: use prebuilt binaries as they are (CI caches);
* in a source checkout: run ``tools/build-tools.sh`` (a no-op when the cache is
  current) and use the bin dir it prints on its last stdout line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ENV_TOOLS_BIN",
    "ToolsNotFoundError",
    "build_tools_script",
    "kwok_stages_file",
    "locate_tools_bin",
]

ENV_TOOLS_BIN = "RLSCALE_TOOLS_BIN"
DEFAULT_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class ToolsNotFoundError(RuntimeError):
    """The binaries are neither given by RLSCALE_TOOLS_BIN nor buildable from a checkout."""


def build_tools_script() -> Path | None:
    """``tools/build-tools.sh`` of the source checkout this package runs from, if any."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "tools" / "build-tools.sh"
        if candidate.is_file() and (parent / "pyproject.toml").is_file():
            return candidate
    return None


def _binaries_for(components: Sequence[str]) -> list[str]:
    names: list[str] = []
    for c in components:
        if c == "k8s":
            names += ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"]
        elif c == "node":  # the real node's kubelet, pause and CNI plugins (bin/cni/<type>)
            names += ["kubelet", "pause", "cni/bridge", "cni/host-local", "cni/loopback"]
        elif c != "all":
            names.append(c)
    return names


def locate_tools_bin(components: Sequence[str] = DEFAULT_COMPONENTS, *, build: bool = True) -> Path:
    """Return a bin dir holding ``components``, building them if needed and allowed.

    Build progress goes to this process's stderr (a cold build takes 20-30 minutes on
    2 cores; a warm one a few seconds).
    """
    wanted = _binaries_for(components)
    env_bin = os.environ.get(ENV_TOOLS_BIN)
    if env_bin:
        bin_dir = Path(env_bin).expanduser().resolve()
        missing = [n for n in wanted if not (bin_dir / n).is_file()]
        if missing:
            raise ToolsNotFoundError(f"{ENV_TOOLS_BIN}={bin_dir} lacks: {', '.join(missing)}")
        return bin_dir
    script = build_tools_script()
    if script is None:
        raise ToolsNotFoundError(
            f"set {ENV_TOOLS_BIN} to a directory with {', '.join(wanted)} "
            "(build them with tools/build-tools.sh from a source checkout)"
        )
    argv = ["bash", str(script), *components] if build else ["bash", str(script), "--print-dir"]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ToolsNotFoundError(f"{script} failed with status {proc.returncode}; see its output above")
    bin_dir = Path(lines[-1])
    missing = [n for n in wanted if not (bin_dir / n).is_file()]
    if missing:
        raise ToolsNotFoundError(f"{bin_dir} lacks {', '.join(missing)}; run {script} {' '.join(components)}")
    return bin_dir


def kwok_stages_file(bin_dir: Path) -> Path | None:
    """The kwok Stage configs build-tools.sh keeps next to a bin dir, if present."""
    path = bin_dir.parent / "share" / "kwok-stages.yaml"
    return path if path.is_file() else None
