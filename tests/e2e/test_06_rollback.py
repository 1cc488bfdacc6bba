"""Scenario 6: playbooks/rollback.yml returns every host to v1 without pulling anything."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rollback(ansible):
    return ansible.rollback("rollback-to-v1")


def test_every_host_serves_v1_again(rollback, fleet):
    assert rollback.returncode == 0, rollback.tail()
    assert fleet.versions() == dict.fromkeys(fleet.names, "v1")


def test_rollback_pulls_nothing_from_the_registry(rollback, ansible, fleet):
    recap = rollback.recap()
    switched = [name for name in fleet.names if recap.get(name, {}).get("changed", 0) > 0]
    assert switched == fleet.names, f"the rollback switched only {switched}:\n{rollback.tail()}"
    # The registry's access log names the client of every request; it must show the hosts' pulls
    # during the deploys before, or its silence during the rollback would prove nothing.
    pulled_before = [run.label for run in ansible.runs if run.registry_requests(fleet.addresses)]
    assert pulled_before, "the registry's log shows no request from the hosts during any deploy"
    assert rollback.registry_requests(fleet.addresses) == []
