"""rlscale's Kopf operator (import name ``rlscale.operator``).

This folder is named ``operator`` by the product's fixed layout, which is also the name of
a standard-library module. Installed, it is only ever ``rlscale.operator``; but a Python
started with the repository root on ``sys.path`` (``python -m ...`` from the root) would
find this folder first for ``import operator``. Fail loudly then, instead of breaking in
some distant stdlib import.
"""

if __name__ == "operator":
    raise ImportError(
        "the rlscale repository root is on sys.path, so its operator/ folder shadows the standard "
        "library's operator module: run tools through their installed scripts (.venv/bin/pytest, "
        ".venv/bin/rlscale) or from another directory, not as `python -m ...` from the repository root"
    )
