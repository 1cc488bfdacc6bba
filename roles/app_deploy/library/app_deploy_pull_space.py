#!/usr/bin/python
# Copyright: deploykit
# MIT License (see the role's meta/main.yml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_deploy_pull_space
short_description: Whether a host's disk has room to pull an image, before the pull
description:
  - Reads the image's manifest from the registry (C(docker manifest inspect), with the host's
    login and registry certificates), works out which of its layers the host's Docker engine does
    not hold yet, and returns their compressed size, the space a pull of them needs, and the free
    space of the filesystem that holds Docker's data.
  - The space needed is the compressed size of the missing layers times I(factor) - the download
    is kept until it is unpacked, and the unpacked layer is larger than the download.
  - The engine API has no call that says which of an image's compressed layers are already on the
    host; the engine keeps that answer in its data directory
    (C(image/<driver>/distribution/diffid-by-digest) maps a download's digest to the layer it
    unpacks to, C(image/<driver>/layerdb) holds the layers, keyed by chain ID). Those are read
    here. Where they are absent (another image store), every layer counts as missing, which can
    only overstate the need.
  - A manifest that cannot be read (registry down, tag missing, no login) is not an error here;
    it is returned as I(manifest_error) with no space needed, and the pull then fails and says why.
  - Changes nothing; supports check mode.
options:
  image:
    description: The image to pull, C(repository:tag).
    type: str
    required: true
  factor:
    description: Bytes of free space needed per byte of missing layers to download.
    type: float
    required: true
author:
  - deploykit
"""

EXAMPLES = r"""
- name: Read whether the disk has room for the image
  app_deploy_pull_space:
    image: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:3f2c1e9d8b7a
    factor: 3.5
  register: pull_space
"""

RETURN = r"""
root:
  description: Docker's data directory on the host.
  returned: always
  type: str
free_bytes:
  description: Free space, for an unprivileged writer, of the filesystem that holds I(root).
  returned: always
  type: int
layers:
  description: Number of layers in the image.
  returned: always
  type: int
missing_layers:
  description: Number of those layers the engine does not hold.
  returned: always
  type: int
download_bytes:
  description: Compressed size of the missing layers.
  returned: always
  type: int
needed_bytes:
  description: I(download_bytes) times I(factor), rounded up; 0 when the manifest could not be read.
  returned: always
  type: int
manifest_error:
  description: Why the manifest could not be read, or an empty string.
  returned: always
  type: str
"""

import hashlib
import json
import math
import os
import platform

from ansible.module_utils.basic import AnsibleModule

# docker version's and manifests' names for the machine's architecture.
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


def _layers(manifest: object) -> list[dict]:
    """The layers of this machine's image in `docker manifest inspect --verbose` output."""
    entries = manifest if isinstance(manifest, list) else [manifest]
    arch = _ARCHITECTURES.get(platform.machine(), platform.machine())
    chosen = next(
        (e for e in entries if (e.get("Descriptor", {}).get("platform") or {}).get("architecture") == arch),
        entries[0],
    )
    body = chosen.get("SchemaV2Manifest") or chosen.get("OCIManifest") or {}
    return body.get("layers") or []


def _held(root: str, driver: str, digests: list[str]) -> int:
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


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "image": {"type": "str", "required": True},
            "factor": {"type": "float", "required": True},
        },
        supports_check_mode=True,
    )
    docker = module.get_bin_path("docker", required=True)
    rc, out, err = module.run_command([docker, "info", "--format", "{{.DockerRootDir}}\t{{.Driver}}"])
    if rc != 0:
        module.fail_json(msg=f"the Docker engine did not answer: {err.strip() or out.strip()}")
    root, _, driver = out.strip().partition("\t")
    stats = os.statvfs(root)
    result = {
        "changed": False,
        "root": root,
        "free_bytes": stats.f_bavail * stats.f_frsize,
        "layers": 0,
        "missing_layers": 0,
        "download_bytes": 0,
        "needed_bytes": 0,
        "manifest_error": "",
    }
    rc, out, err = module.run_command([docker, "manifest", "inspect", "--verbose", module.params["image"]])
    try:
        layers = _layers(json.loads(out)) if rc == 0 else None
    except ValueError:
        layers = None
    if layers is None:
        result["manifest_error"] = (err or out).strip() or f"docker manifest inspect exited with {rc}"
        module.exit_json(**result)
    held = _held(root, driver, [layer["digest"] for layer in layers])
    missing = layers[held:]
    download = sum(int(layer.get("size", 0)) for layer in missing)
    result.update(
        layers=len(layers),
        missing_layers=len(missing),
        download_bytes=download,
        needed_bytes=math.ceil(download * module.params["factor"]),
    )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
