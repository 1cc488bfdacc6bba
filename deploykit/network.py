"""The project's Docker network: where test hosts live and where they reach the platform."""

from __future__ import annotations

from deploykit.system import DOCKER, run, say

NAME = "deploykit"
SUBNET = "172.30.0.0/24"
# The host's address on the network: test hosts reach the registry and PostgreSQL here.
GATEWAY = "172.30.0.1"
# The load balancer stand-in's fixed address: below the stand-in's hosts (.100 and up) and far
# above where Docker's own allocation starts (.2), so neither takes it first.
LB_ADDRESS = "172.30.0.90"


def ensure_network() -> None:
    if run([DOCKER, "network", "inspect", NAME], check=False).returncode == 0:
        return
    say(f"creating Docker network {NAME} ({SUBNET})")
    run(
        [
            DOCKER,
            "network",
            "create",
            "--subnet",
            SUBNET,
            "--gateway",
            GATEWAY,
            "--label",
            "org.deploykit.owner=platform",
            NAME,
        ]
    )
