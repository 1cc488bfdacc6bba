"""What this scenario set up: its hosts by inventory group, and what each group configured.

Molecule hands testinfra Ansible's inventory, whose JSON ansible-core 2.19 breaks, so the test
modules name their hosts as docker:// containers instead, taken from the inventory file that
Molecule wrote. The expected values are the role's defaults with the group's variables on top,
read from the same files Ansible reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

SCENARIO_DIRECTORY = Path(__file__).resolve().parent.parent
ROLE_DEFAULTS = SCENARIO_DIRECTORY.parent.parent / "roles" / "docker_engine" / "defaults" / "main.yml"
FULL = "docker_engine_full"
MINIMAL = "docker_engine_minimal"
# group_vars/all.yml, the one vars file with a template in it: the apt proxy from the environment.
ALL_GROUP_VARS = {"docker_engine_apt_proxy": os.environ.get("DEPLOYKIT_APT_PROXY", "")}
TEST_IMAGE = "deploykit/busybox:test"


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _inventory() -> dict[str, Any]:
    path = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not path:
        raise RuntimeError("MOLECULE_INVENTORY_FILE is not set: run these tests with `molecule verify`")
    return _load(Path(path))


def hosts(*groups: str) -> list[str]:
    """Return the testinfra host specs (docker://NAME) of the given groups' members."""
    inventory = _inventory()
    return [f"docker://{name}" for group in groups for name in inventory[group]["hosts"]]


def group_of(host_name: str) -> str:
    """Return the scenario group (full or minimal) that a host belongs to."""
    inventory = _inventory()
    return next(group for group in (FULL, MINIMAL) if host_name in inventory[group]["hosts"])


def configured(group: str) -> dict[str, Any]:
    """Return the role's variables as the group's hosts see them."""
    group_vars = _load(SCENARIO_DIRECTORY / "group_vars" / f"{group}.yml")
    return {**_load(ROLE_DEFAULTS), **ALL_GROUP_VARS, **group_vars}


def expected_daemon_json(config: dict[str, Any]) -> dict[str, Any]:
    """Return daemon.json as the role's variables describe it."""
    expected = {
        "log-driver": config["docker_engine_log_driver"],
        "live-restore": config["docker_engine_live_restore_enabled"],
        "icc": config["docker_engine_icc_enabled"],
        "no-new-privileges": config["docker_engine_no_new_privileges_enabled"],
        "userland-proxy": config["docker_engine_userland_proxy_enabled"],
    }
    optional = {
        "log-opts": config["docker_engine_log_options"],
        "default-address-pools": config["docker_engine_default_address_pools"],
        "storage-driver": config["docker_engine_storage_driver"],
        "registry-mirrors": config["docker_engine_registry_mirrors"],
        "insecure-registries": config["docker_engine_insecure_registries"],
    }
    expected.update({key: value for key, value in optional.items() if value})
    expected.update(config["docker_engine_daemon_options"])
    return expected
