"""`pip install .` (runtime only) must give a working decision core with no torch anywhere.

The operator image installs exactly this, so torch, gymnasium and onnx must not be pulled
in, and importing the policy and the operator must not need them. Builds a fresh virtualenv
(from pip's cache after the first run), so it is marked slow.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_runtime_install_has_no_torch(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
        check=True,
        timeout=900,
        cwd=tmp_path,  # not the repo root: its operator/ folder would shadow the stdlib module
    )
    probe = (
        "import importlib.util, sys\n"
        "import rlscale.policy, rlscale.operator\n"
        "from rlscale.policy.decide import ControllerState, DecisionConfig, decide\n"
        "from rlscale.policy.model import PolicyModel, load_default_model\n"
        "cfg = DecisionConfig()\n"
        "load_default_model()  # the shipped model is package data, and loads\n"
        "import importlib.resources as res\n"
        "assert (res.files('rlscale.operator') / 'crd' / 'autoscalepolicy.yaml').is_file()\n"
        "assert 'torch' not in sys.modules\n"
        "for name in ('torch', 'gymnasium'):\n"
        "    assert importlib.util.find_spec(name) is None, name + ' is installed'\n"
        "print(rlscale.policy.SPEC_HASH)\n"
    )
    out = subprocess.run([py, "-c", probe], check=True, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    from rlscale.policy import SPEC_HASH

    assert out.stdout.strip() == SPEC_HASH
    assert sys.prefix != str(env_dir)
