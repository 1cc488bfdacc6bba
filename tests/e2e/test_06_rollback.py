"""Scenario 6: playbooks/rollback.yml returns every host to v1 without pulling anything.

First, three rollbacks that must be refused before any host switches back: a release name that is
no release ID or tag, a fleet where the last host of the rollout lost the environment file of the
release to return to (once, the first batch would have switched back and the fleet split), and a
fleet whose last host does not answer (frozen with docker pause).
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e

CHECK_PLAY = "Check every host can return to the release"
ROLLBACK_PLAY = "Roll back the release"
STATE_FILE = "/var/lib/deploykit/app/state.json"


@pytest.fixture(scope="module")
def refused(ansible, fleet, freeze):
    """The three refused rollbacks, with the fleet's containers before and after them."""
    runs = {}
    before = fleet.snapshot()
    runs["malformed"] = ansible.rollback(
        "rollback-refused-malformed-release", "-e", "app_deploy_rollback_to=../v1"
    )
    last = fleet.rollout_order()[-1]
    env_file = json.loads(fleet.sh(last, f"cat {STATE_FILE}"))["previous"]["env_file"]
    fleet.sh(last, f"mv {env_file} {env_file}.aside")
    try:
        runs["env-file-gone"] = ansible.rollback("rollback-refused-env-file-gone")
    finally:
        fleet.sh(last, f"mv {env_file}.aside {env_file}")
    freeze(last, True)
    try:
        # A short connect timeout keeps the wait for the frozen host short, as in scenario 13.
        runs["unreachable"] = ansible.rollback("rollback-refused-host-unreachable", ANSIBLE_TIMEOUT="5")
    finally:
        freeze(last, False)
    return {
        "runs": runs,
        "last": last,
        "before": before,
        "after": fleet.snapshot(),
        "versions": fleet.versions(),
    }


def test_a_release_name_that_is_no_id_or_tag_is_refused_naming_it(refused):
    run = refused["runs"]["malformed"]
    assert run.returncode != 0, run.tail()
    assert 'app_deploy_rollback_to="../v1" is neither a release ID nor an image tag' in run.output, run.tail()
    assert run.hosts_in(CHECK_PLAY) == [], run.tail()


def test_a_host_that_cannot_return_stops_the_rollback_before_any_host_switches(refused):
    run, last = refused["runs"]["env-file-gone"], refused["last"]
    assert run.returncode != 0, run.tail()
    assert [host for host, _ in run.failures()] == [last], run.tail()
    assert "environment file missing" in run.play(CHECK_PLAY), run.tail()
    assert run.hosts_in(ROLLBACK_PLAY) == [], run.tail()


def test_a_host_that_does_not_answer_stops_the_rollback_before_any_host_switches(refused):
    run, last = refused["runs"]["unreachable"], refused["last"]
    assert run.returncode != 0, run.tail()
    assert run.recap()[last]["unreachable"] == 1, run.tail()
    assert f"fatal: [{last}]: UNREACHABLE!" in run.play(CHECK_PLAY), run.tail()
    assert run.hosts_in(ROLLBACK_PLAY) == [], run.tail()


def test_refused_rollbacks_change_no_host(refused, fleet):
    assert refused["after"] == refused["before"]
    assert refused["versions"] == dict.fromkeys(fleet.names, "v2")


@pytest.fixture(scope="module")
def rollback(refused, ansible):
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
