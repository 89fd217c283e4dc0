"""OCI archives without a registry: what ``ctr images import`` checks, checked here in milliseconds.

containerd refuses an archive whose blobs do not match their digests or whose config's
``diff_ids`` are not the digests of the *uncompressed* layers; the real-node tests would
only say "import failed". These pin the layout itself, and that the same files give the
same image (the image cache keys on inputs; stable content keeps digests stable too).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

from rlscale.devstack.node import real_node_unsupported
from rlscale.devstack.oci import ImageConfig, pack_layer_tar, write_oci_archive


def _tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "app").write_text("#!/bin/sh\necho hi\n")
    (root / "bin" / "app").chmod(0o755)
    (root / "etc").mkdir()
    (root / "etc" / "motd").write_text("hello\n")
    return root


def _read(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def test_the_archive_is_a_valid_oci_layout_whose_digests_containerd_would_accept(tmp_path: Path) -> None:
    layer = tmp_path / "layer.tar"
    pack_layer_tar(_tree(tmp_path / "root"), layer, prefix="usr/")
    packed = write_oci_archive("localhost/x/app:1", layer, tmp_path / "app.oci.tar", ImageConfig(cmd=["/usr/bin/app"]))
    files = _read(packed.archive)
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1], name
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (entry,) = json.loads(files["index.json"])["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/x/app:1"
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "1"
    assert entry["digest"] == packed.manifest_digest
    manifest = json.loads(files[f"blobs/sha256/{entry['digest'].split(':')[1]}"])
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    (layer_desc,) = manifest["layers"]
    compressed = files[f"blobs/sha256/{layer_desc['digest'].split(':')[1]}"]
    assert layer_desc["size"] == len(compressed) == packed.layer_bytes
    raw = gzip.decompress(compressed)
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(raw).hexdigest()}"]
    assert config["config"]["Cmd"] == ["/usr/bin/app"]
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = {m.name: m for m in tar}
    assert members["usr/bin/app"].mode & 0o111 and members["usr/bin/app"].uid == 0
    assert tar is not None and "usr/etc/motd" in members


def test_the_same_files_make_the_same_image(tmp_path: Path) -> None:
    digests = []
    for i in range(2):
        root = _tree(tmp_path / f"root{i}")
        layer = tmp_path / f"layer{i}.tar"
        pack_layer_tar(root, layer)
        packed = write_oci_archive("localhost/x/app:1", layer, tmp_path / f"a{i}.oci.tar", ImageConfig())
        digests.append(packed.manifest_digest)
    assert digests[0] == digests[1]


def test_a_host_without_the_node_binaries_is_told_what_is_missing(tmp_path: Path) -> None:
    reason = real_node_unsupported(tmp_path)
    assert reason is not None
    # Without root the first missing thing is root; with it, the packages or the binaries.
    assert any(word in reason for word in ("root", "kubelet", "containerd", "runc", "cgroup"))
