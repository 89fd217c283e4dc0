"""Fixtures of the install tests: the pinned Go tools (helm, kindcheck).

They are the binaries built from ``tools/`` (``RLSCALE_TOOLS_BIN`` or
``tools/build-tools.sh helm kindcheck``); a missing tool is an error, never a skip, so the
suite cannot pass without having run them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rlscale.devstack.tools import locate_tools_bin

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tools_bin() -> Path:
    return locate_tools_bin(("helm", "kindcheck"))


@pytest.fixture(scope="session")
def helm(tools_bin: Path) -> Path:
    return tools_bin / "helm"


@pytest.fixture(scope="session")
def kindcheck(tools_bin: Path) -> Path:
    return tools_bin / "kindcheck"
