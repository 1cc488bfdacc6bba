"""What the default scenario set up: one host with the whole deploy, TLS on.

Molecule hands testinfra Ansible's inventory, whose JSON ansible-core 2.19 breaks, so the tests
name their host as a docker:// container, taken from the inventory file Molecule wrote. Requests
go from this machine to the host's address on the project's Docker network, nowhere else.
"""

from __future__ import annotations

import http.client
import os
import ssl
import subprocess
from pathlib import Path
from typing import Any

import yaml

SCENARIO_DIRECTORY = Path(__file__).resolve().parent.parent
NETWORK = "deploykit"
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
CERTIFICATE = "/etc/ssl/certs/deploykit-molecule.crt"
VERSION_A = "1.0.0+molecule.a"


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def instance() -> str:
    path = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not path:
        raise RuntimeError("MOLECULE_INVENTORY_FILE is not set: run these tests with `molecule verify`")
    return next(iter(_load(Path(path))["all"]["hosts"]))


def group_vars() -> dict[str, Any]:
    return _load(SCENARIO_DIRECTORY / "group_vars" / "all.yml")


def address(name: str) -> str:
    """The container's address on the project's network."""
    template = f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}'
    result = subprocess.run(
        [DOCKER, "inspect", "--format", template, name], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def request(
    host: str,
    path: str,
    *,
    tls_ca: str | None = None,
    port: int | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    """One request (GET unless told) on a fresh connection, over HTTPS when a CA (the site's own
    certificate) is given."""
    if tls_ca is None:
        connection = http.client.HTTPConnection(host, port or 80, timeout=5)
    else:
        context = ssl.create_default_context(cadata=tls_ca)
        connection = http.client.HTTPSConnection(host, port or 443, timeout=5, context=context)
    try:
        connection.request(method, path, headers={"Host": host, "Connection": "close", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()
