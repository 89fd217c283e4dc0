"""Puts ``tests/`` on ``sys.path`` so every test can import the shared fixture modules here by name.

``--import-mode=importlib`` does not add test folders to ``sys.path``; like the ``conftest.py``
of ``tests/operator`` and ``tests/install``, this one does it for its own folder
(``from random_model import random_mlp_onnx``). It appends rather than prepends, so the
subfolders' own entries (``tests/operator``'s ``from conftest import ...``) still come first.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).parent))
