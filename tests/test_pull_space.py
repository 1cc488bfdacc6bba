"""app_deploy_pull_space (roles/app_deploy/module_utils, used by app_deploy_prepare): which of an
image's layers a host's engine already holds, read from the engine's data directory as the engine
itself reads it, and the manifest shapes `docker manifest inspect --verbose` prints.
tests/e2e/test_13_faults.py fills a real host's disk and meets the refusal; test_registry_faults.py
reads the pull's own ENOSPC.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from deploykit.system import ROOT

_SPEC = importlib.util.spec_from_file_location(
    "app_deploy_pull_space", ROOT / "roles" / "app_deploy" / "module_utils" / "app_deploy_pull_space.py"
)
pull_space = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(pull_space)

DIGESTS = [f"sha256:{n:064x}" for n in (1, 2, 3)]
DIFF_IDS = [f"sha256:{n:064x}" for n in (11, 12, 13)]


def _chain_ids(diff_ids: list[str]) -> list[str]:
    chains, chain = [], ""
    for diff_id in diff_ids:
        # The OCI image spec's ChainID, written out here as the spec gives it.
        chain = "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest() if chain else diff_id
        chains.append(chain)
    return chains


def _engine_root(tmp_path: Path, mapped: int, stored: int) -> Path:
    """A data directory whose engine pulled the first `mapped` layers and holds the first `stored`."""
    image_dir = tmp_path / "image" / "overlay2"
    by_digest = image_dir / "distribution" / "diffid-by-digest" / "sha256"
    by_digest.mkdir(parents=True)
    for digest, diff_id in list(zip(DIGESTS, DIFF_IDS, strict=True))[:mapped]:
        (by_digest / digest.split(":")[1]).write_text(diff_id)
    for chain in _chain_ids(DIFF_IDS)[:stored]:
        (image_dir / "layerdb" / "sha256" / chain.split(":")[1]).mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize(
    ("mapped", "stored", "held"),
    [
        (3, 3, 3),
        # A new release: the base layers are there, the app's top layer is not.
        (2, 2, 2),
        (0, 0, 0),
        # Pulled once, then removed (docker image prune): the mapping stays, the layers do not.
        (3, 0, 0),
        # A middle layer removed: the layers above it are other layers (other chain IDs).
        (3, 1, 1),
    ],
)
def test_held_layers_are_the_bottom_ones_the_engine_maps_and_stores(tmp_path, mapped, stored, held):
    root = _engine_root(tmp_path, mapped, stored)
    assert pull_space.held_layers(str(root), "overlay2", DIGESTS) == held


def test_another_image_store_counts_every_layer_as_missing(tmp_path):
    root = _engine_root(tmp_path, 3, 3)
    assert pull_space.held_layers(str(root), "containerd-snapshotter", DIGESTS) == 0


def _entry(architecture: str, sizes: list[int], key: str = "SchemaV2Manifest") -> dict:
    return {
        "Descriptor": {"platform": {"architecture": architecture, "os": "linux"}},
        key: {"layers": [{"digest": d, "size": s} for d, s in zip(DIGESTS, sizes, strict=False)]},
    }


def test_a_single_image_manifest_gives_its_layers():
    assert [layer["size"] for layer in pull_space.layers_of(_entry("amd64", [5, 6]))] == [5, 6]


def test_an_oci_manifest_gives_its_layers():
    assert [layer["size"] for layer in pull_space.layers_of(_entry("amd64", [7], "OCIManifest"))] == [7]


def test_a_manifest_list_gives_the_layers_of_this_machines_architecture(monkeypatch):
    monkeypatch.setattr(pull_space.platform, "machine", lambda: "aarch64")
    entries = [_entry("amd64", [1, 1]), _entry("arm64", [2, 2, 2])]
    assert [layer["size"] for layer in pull_space.layers_of(entries)] == [2, 2, 2]
