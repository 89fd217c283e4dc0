"""Pack a root filesystem as a single-layer OCI image archive that ``ctr images import`` reads.

No registry and no image builder: an OCI image layout (``oci-layout``, ``index.json``,
``blobs/sha256/…`` holding the gzipped layer, the image config and the manifest) in one
tar. The index entry carries ``io.containerd.image.name`` so containerd names the image
on import. The layer is written with fixed owners, modes from the source and a fixed
mtime, so the same files give the same digest (the image cache keys on its inputs, this
keeps the content stable too).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["ImageConfig", "PackedImage", "pack_layer_tar", "write_oci_archive"]

_MTIME = 0


class ImageConfig(BaseModel):
    """The runtime part of an OCI image config (what ``docker inspect`` shows as Config)."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = Field(
        default_factory=lambda: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    )
    workdir: str = "/"
    user: str = ""


class PackedImage(BaseModel):
    """What :func:`write_oci_archive` wrote."""

    name: str
    archive: Path
    manifest_digest: str
    layer_bytes: int = Field(description="Compressed layer size.")
    uncompressed_bytes: int


def pack_layer_tar(root: Path, out: Path, *, prefix: str = "", extra_tars: Sequence[Path] = ()) -> None:
    """Write ``root``'s tree (and the members of ``extra_tars``, in order) as one layer tar.

    Members are owned by root with a fixed mtime; ``prefix`` is prepended to paths from ``root``.
    """
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as layer:
        for extra in extra_tars:
            with tarfile.open(extra) as src:
                for member in src:
                    fh = src.extractfile(member) if member.isfile() else None
                    layer.addfile(member, fh)
        if root.exists():
            for path in sorted(root.rglob("*")):
                info = layer.gettarinfo(str(path), arcname=prefix + str(path.relative_to(root)))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = _MTIME
                if info.isfile():
                    with path.open("rb") as fh2:
                        layer.addfile(info, fh2)
                else:
                    layer.addfile(info)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_oci_archive(name: str, layer_tar: Path, out: Path, config: ImageConfig) -> PackedImage:
    """Pack ``layer_tar`` (uncompressed) as image ``name`` (e.g. ``localhost/x:1``) into ``out``.

    ``out`` is written to a temporary name and renamed, so a cache never holds half an archive.
    """
    diff_id = _sha256(layer_tar)
    with tempfile.TemporaryDirectory(prefix="oci.", dir=out.parent) as tmp:
        blobs = Path(tmp) / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        gz = Path(tmp) / "layer.tar.gz"
        with (
            layer_tar.open("rb") as src,
            gz.open("wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as zipped,
        ):
            while chunk := src.read(1 << 20):
                zipped.write(chunk)
        layer_digest = _sha256(gz)
        layer_size = gz.stat().st_size
        gz.rename(blobs / layer_digest)

        def put(obj: dict[str, Any]) -> tuple[str, int]:
            data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
            digest = hashlib.sha256(data).hexdigest()
            (blobs / digest).write_bytes(data)
            return digest, len(data)

        runtime: dict[str, Any] = {"Env": config.env, "WorkingDir": config.workdir}
        if config.entrypoint is not None:
            runtime["Entrypoint"] = config.entrypoint
        if config.cmd is not None:
            runtime["Cmd"] = config.cmd
        if config.user:
            runtime["User"] = config.user
        cfg_digest, cfg_size = put(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": runtime,
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
                "history": [{"created_by": "rlscale.devstack.oci"}],
            }
        )
        man_digest, man_size = put(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": f"sha256:{cfg_digest}",
                    "size": cfg_size,
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": f"sha256:{layer_digest}",
                        "size": layer_size,
                    }
                ],
            }
        )
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": f"sha256:{man_digest}",
                    "size": man_size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
                }
            ],
        }
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w") as archive:
            for member, data in (
                ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
                ("index.json", json.dumps(index).encode()),
            ):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            archive.add(Path(tmp) / "blobs", arcname="blobs")
        os.replace(partial, out)
    return PackedImage(
        name=name,
        archive=out,
        manifest_digest=f"sha256:{man_digest}",
        layer_bytes=layer_size,
        uncompressed_bytes=layer_tar.stat().st_size,
    )
