"""Fixtures shared by this scenario's tests.

The test files run in name order (Molecule passes them sorted): the state checks first, then
test_rollout.py, which switches releases and leaves the host on the converged release again.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from app_deploy_scenario import MEASUREMENTS, address, instance, state


@pytest.fixture(scope="module")
def host_address() -> str:
    """The host's address on the project's network."""
    return address(instance())


@pytest.fixture(scope="module")
def release_state(host) -> dict[str, Any]:
    """The host's release state file."""
    return state(host)


@pytest.fixture(scope="module")
def serving(host, release_state) -> dict[str, Any]:
    """`docker inspect` of the container the state file names as current."""
    name = release_state["current"]["container"]
    return json.loads(host.check_output(f"docker inspect {name}"))[0]


def pytest_terminal_summary(terminalreporter) -> None:
    """What the request streams measured, for the record of the run."""
    if MEASUREMENTS:
        terminalreporter.section("requests during the rollouts")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)
