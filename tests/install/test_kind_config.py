"""kind-config.yaml strict-decodes with kind's own Go types (tools/kindcheck); kind needs Docker, so no cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from install_helpers import ROOT

KIND_CONFIG = ROOT / "kind-config.yaml"


def _kindcheck(kindcheck: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(kindcheck), str(path)], capture_output=True, text=True, check=False)


def test_kind_config_decodes(kindcheck: Path) -> None:
    proc = _kindcheck(kindcheck, KIND_CONFIG)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{KIND_CONFIG}: ok"


def test_kind_config_shape() -> None:
    config = yaml.safe_load(KIND_CONFIG.read_text())
    roles = [n["role"] for n in config["nodes"]]
    assert roles.count("control-plane") == 1 and roles.count("worker") >= 1
    assert config["name"] == "rlscale-demo"
    # scripts/kind-demo.sh talks to the context kind derives from this name.
    assert "CLUSTER=${CLUSTER_NAME:-rlscale-demo}" in (ROOT / "scripts" / "kind-demo.sh").read_text()


def test_kindcheck_rejects_a_misspelt_field(kindcheck: Path, tmp_path: Path) -> None:
    """The check is strict: a typo that kind would refuse is refused here too."""
    bad = tmp_path / "kind-config.yaml"
    bad.write_text(KIND_CONFIG.read_text().replace("apiServerAddress:", "apiServerAdress:"))
    proc = _kindcheck(kindcheck, bad)
    assert proc.returncode == 1
    assert "apiServerAdress" in proc.stderr
