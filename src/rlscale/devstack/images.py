"""The real node's images, built without a registry or an image builder, cached by content.

* **pause** (the pod sandbox): the ``pause`` program ``tools/build-tools.sh`` builds,
  alone in one layer.
* **demo** (the demo workload, what ``deploy/docker/demo.Dockerfile`` builds with
  Docker): a Debian root filesystem with ``python3`` made by ``mmdebstrap`` from Debian's
  packages, plus the project's wheel (without dependencies) and the four packages the
  demo app and load generator import (aiohttp, prometheus-client, pydantic, click) from
  PyPI, installed for the image's CPython 3.11.

Each is packed by :mod:`rlscale.devstack.oci` into an archive that containerd imports.
Like the Go tools, results live in ``${RLSCALE_IMAGES_CACHE:-~/.cache/rlscale/images}``
under a key that hashes everything they are made from: the Debian base under
(suite, packages, mirror, scheme), the demo image under (base key, the project's
sources, the dependency list), the pause image under the pause binary. A build writes
to temporary names and renames, so an interrupted one never looks complete; concurrent
builds of one key serialise on a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

from .node import PAUSE_IMAGE
from .oci import ImageConfig, pack_layer_tar, write_oci_archive

__all__ = [
    "DEMO_DEPENDENCIES",
    "DEMO_IMAGE_REPO",
    "BuiltImage",
    "ImageBuildError",
    "cache_root",
    "debian_base",
    "demo_image",
    "node_images",
    "pause_image",
]

#: The demo image's repository; its tag is the image's cache key.
DEMO_IMAGE_REPO = "localhost/rlscale/demo"
#: Bump when the way images are made changes (it is part of every key).
SCHEME = 1
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3", "ca-certificates")
#: What the demo app and the load generator import (deploy/docker/demo.Dockerfile's list).
DEMO_DEPENDENCIES = ("aiohttp>=3.9,<4", "prometheus-client>=0.20,<1", "pydantic>=2.7,<3", "click>=8.1")
#: The image's interpreter: Debian bookworm's python3.
IMAGE_PYTHON = "3.11"
_SITE = f"usr/local/lib/python{IMAGE_PYTHON}/dist-packages/"
#: The project folders the wheel is built from (pyproject.toml maps them under rlscale).
_SOURCES = ("pyproject.toml", "README.md", "src", "policy", "operator", "training")


class ImageBuildError(RuntimeError):
    """A step of an image build failed; the message has the command's output."""


class BuiltImage(BaseModel):
    """An image archive in the cache and how it was made."""

    name: str
    archive: Path
    key: str
    layer_bytes: int
    uncompressed_bytes: int
    build_seconds: float


def cache_root() -> Path:
    """Where built images are kept (outside the repository)."""
    return Path(os.environ.get("RLSCALE_IMAGES_CACHE", Path.home() / ".cache" / "rlscale" / "images"))


def debian_mirror() -> str:
    """The Debian mirror mmdebstrap downloads from (``RLSCALE_DEBIAN_MIRROR`` overrides)."""
    return os.environ.get("RLSCALE_DEBIAN_MIRROR", "http://deb.debian.org/debian")


def repo_root() -> Path:
    """The source checkout this package runs from (the wheel is built from it)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file() and (parent / "policy").is_dir():
            return parent
    raise ImageBuildError("the demo image is built from a source checkout; none found above this package")


def _hash(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _tree_hash(root: Path, entries: tuple[str, ...]) -> str:
    """Hash of every file's path and content under ``entries`` (caches and bytecode skipped)."""
    h = hashlib.sha256()
    for entry in entries:
        base = root / entry
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc" or ".egg-info" in str(f):
                continue
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _run(argv: list[str], what: str, **kwargs: object) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise ImageBuildError(f"{what} failed ({' '.join(argv[:3])} …, status {proc.returncode}):\n{tail}")


def _cached(directory: Path) -> BuiltImage | None:
    meta = directory / "image.json"
    if meta.is_file():
        image = BuiltImage.model_validate_json(meta.read_text())
        if image.archive.is_file():
            return image
    return None


def _prune(kind: str, keep: int) -> None:
    """Delete all but the ``keep`` newest ``<kind>-*`` images (a source change makes a new demo image).

    One being built or read holds its lock and is skipped.
    """
    dirs = sorted(cache_root().glob(f"{kind}-*"), key=lambda d: d.stat().st_mtime, reverse=True)
    for old in dirs[keep:]:
        fd = os.open(old / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(old, ignore_errors=True)
        finally:
            os.close(fd)


def _finish(directory: Path, name: str, key: str, layer: Path, config: ImageConfig, t0: float) -> BuiltImage:
    packed = write_oci_archive(name, layer, directory / "image.oci.tar", config)
    image = BuiltImage(
        name=name,
        archive=packed.archive,
        key=key,
        layer_bytes=packed.layer_bytes,
        uncompressed_bytes=packed.uncompressed_bytes,
        build_seconds=round(time.monotonic() - t0, 1),
    )
    tmp = directory / "image.json.tmp"
    tmp.write_text(image.model_dump_json(indent=2))
    tmp.replace(directory / "image.json")
    return image


def pause_image(bin_dir: Path) -> BuiltImage:
    """The sandbox image from ``bin_dir/pause`` (built or taken from the cache)."""
    binary = bin_dir / "pause"
    if not binary.is_file():
        raise ImageBuildError(f"{binary} missing (run tools/build-tools.sh pause)")
    key = _hash(f"pause scheme={SCHEME}", PAUSE_IMAGE, binary.read_bytes())
    directory = cache_root() / f"pause-{key}"
    with _locked(directory):
        if (image := _cached(directory)) is not None:
            return image
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            root = Path(tmp) / "root"
            root.mkdir()
            shutil.copy2(binary, root / "pause")
            layer = Path(tmp) / "layer.tar"
            pack_layer_tar(root, layer)
            return _finish(directory, PAUSE_IMAGE, key, layer, ImageConfig(entrypoint=["/pause"]), t0)


def debian_base() -> Path:
    """A Debian root filesystem tar with ``python3`` (mmdebstrap; cached by suite, packages and mirror).

    ``--variant=essential`` plus the packages, merged-/usr by mmdebstrap's hook (without
    it apt pulls in usrmerge and perl), documentation, man pages and locales excluded.
    """
    mirror = debian_mirror()
    key = _hash(f"debian scheme={SCHEME}", DEBIAN_SUITE, ",".join(DEBIAN_PACKAGES), mirror)
    directory = cache_root() / f"debian-{key}"
    out = directory / "rootfs.tar"
    with _locked(directory):
        if out.is_file():
            return out
        if shutil.which("mmdebstrap") is None:
            raise ImageBuildError("mmdebstrap not installed (scripts/setup.sh installs it)")
        partial = directory / "rootfs.tar.partial.tar"
        argv = [
            "mmdebstrap",
            "--variant=essential",
            f"--include={','.join(DEBIAN_PACKAGES)}",
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
            *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale", "info")),
            "--quiet",
            DEBIAN_SUITE,
            str(partial),
            mirror,
        ]
        _run(argv, "mmdebstrap", timeout=1200)
        partial.replace(out)
    return out


def _pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]


def demo_image(root: Path | None = None) -> BuiltImage:
    """The demo workload's image (built or taken from the cache).

    ``python3 -m rlscale.devstack.demo_app`` is its command; the load generator is in it too.
    """
    root = root or repo_root()
    base = debian_base()
    base_key = base.parent.name.removeprefix("debian-")
    key = _hash(f"demo scheme={SCHEME}", base_key, _tree_hash(root, _SOURCES), ",".join(DEMO_DEPENDENCIES))
    name = f"{DEMO_IMAGE_REPO}:{key[:12]}"
    directory = cache_root() / f"demo-{key}"
    with _locked(directory):
        if (image := _cached(directory)) is not None:
            return image
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            work = Path(tmp)
            wheels, site = work / "wheels", work / "site"
            _run(_pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(root)),
                 "building the rlscale wheel")  # fmt: skip
            target = [
                "--target", str(site), "--only-binary=:all:", "--python-version", IMAGE_PYTHON,
                "--implementation", "cp", "--abi", f"cp{IMAGE_PYTHON.replace('.', '')}",
                # bookworm's glibc is 2.36; pip does not widen --platform, so name the tags wheels use.
                "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
                "--platform", "manylinux_2_34_x86_64", "--no-compile", "--quiet",
            ]  # fmt: skip
            _run(_pip("install", *target, *DEMO_DEPENDENCIES), "installing the demo's dependencies")
            wheel = next(wheels.glob("rlscale-*.whl"))
            _run(_pip("install", *target, "--no-deps", str(wheel)), "installing the rlscale wheel")
            shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts point at the host's Python
            layer = work / "layer.tar"
            pack_layer_tar(site, layer, prefix=_SITE, extra_tars=[base])
            config = ImageConfig(
                cmd=["python3", "-m", "rlscale.devstack.demo_app"],
                env=[
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "PYTHONUNBUFFERED=1",
                    "PYTHONDONTWRITEBYTECODE=1",
                ],
            )
            image = _finish(directory, name, key, layer, config, t0)
    _prune("demo", keep=3)
    return image


def node_images(bin_dir: Path, *, demo: bool = True) -> list[BuiltImage]:
    """The images a real node imports at start: pause, and the demo workload unless ``demo=False``."""
    images = [pause_image(bin_dir)]
    if demo:
        images.append(demo_image())
    return images
