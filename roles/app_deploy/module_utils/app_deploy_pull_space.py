# Copyright: deploykit
# MIT License (see the role's meta/main.yml)
"""Whether a host's disk has room to pull an image, read before the pull (app_deploy_prepare).

The image's manifest comes from the registry (`docker manifest inspect`, with the host's login and
registry certificates); the layers the engine already holds are read from its data directory,
because the engine API has no call that says which of an image's compressed layers are on the
host. The engine keeps that in `image/<driver>/distribution/diffid-by-digest` (a download's digest
to the layer it unpacks to) and `image/<driver>/layerdb` (the layers, keyed by chain ID). Where
those are absent (another image store) every layer counts as missing, which can only overstate the
need. A pull that fills the disk fails halfway with the engine's terse "no space left on device";
this refuses it with the figures before anything is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform

# docker version's and manifests' names for the machine's architecture.
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


def layers_of(manifest: object) -> list[dict]:
    """The layers of this machine's image in `docker manifest inspect --verbose` output."""
    entries = manifest if isinstance(manifest, list) else [manifest]
    arch = _ARCHITECTURES.get(platform.machine(), platform.machine())
    chosen = next(
        (e for e in entries if (e.get("Descriptor", {}).get("platform") or {}).get("architecture") == arch),
        entries[0],
    )
    body = chosen.get("SchemaV2Manifest") or chosen.get("OCIManifest") or {}
    return body.get("layers") or []


def held_layers(root: str, driver: str, digests: list[str]) -> int:
    """How many of the image's layers, from the bottom, the engine already holds."""
    image_dir = os.path.join(root, "image", driver)
    by_digest = os.path.join(image_dir, "distribution", "diffid-by-digest")
    chain = ""
    for count, digest in enumerate(digests):
        algorithm, _, value = digest.partition(":")
        try:
            with open(os.path.join(by_digest, algorithm, value)) as handle:
                diff_id = handle.read().strip()
        except OSError:
            return count
        # A layer's chain ID names it with every layer below it (the OCI image spec's ChainID).
        link = f"{chain} {diff_id}".encode()
        chain = "sha256:" + hashlib.sha256(link).hexdigest() if chain else diff_id
        if not os.path.isdir(os.path.join(image_dir, "layerdb", *chain.split(":", 1))):
            return count
    return len(digests)


def pull_space(run, docker: str, image: str, factor: float) -> dict:
    """Free space, and the space a pull of `image` needs (0 with `manifest_error` when unread).

    `run` is AnsibleModule.run_command. Raises RuntimeError when the engine does not answer.
    """
    rc, out, err = run([docker, "info", "--format", "{{.DockerRootDir}}\t{{.Driver}}"])
    if rc != 0:
        raise RuntimeError(f"the Docker engine did not answer: {err.strip() or out.strip()}")
    root, _, driver = out.strip().partition("\t")
    stats = os.statvfs(root)
    space = {
        "root": root,
        "free_bytes": stats.f_bavail * stats.f_frsize,
        "layers": 0,
        "missing_layers": 0,
        "download_bytes": 0,
        "needed_bytes": 0,
        "manifest_error": "",
    }
    rc, out, err = run([docker, "manifest", "inspect", "--verbose", image])
    try:
        layers = layers_of(json.loads(out)) if rc == 0 else None
    except ValueError:
        layers = None
    if layers is None:
        space["manifest_error"] = (err or out).strip() or f"docker manifest inspect exited with {rc}"
        return space
    missing = layers[held_layers(root, driver, [layer["digest"] for layer in layers]) :]
    download = sum(int(layer.get("size", 0)) for layer in missing)
    space.update(
        layers=len(layers),
        missing_layers=len(missing),
        download_bytes=download,
        needed_bytes=math.ceil(download * factor),
    )
    return space
