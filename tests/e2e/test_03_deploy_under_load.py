"""Scenario 3: v1 -> v2 while clients keep sending requests to every host and, as users do, to the
environment's public address through the load balancer: none of them fails, and no host answers
from v1 once it has answered from v2."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def deploy_under_load(ansible, fleet, releases, request_stream, record_requests):
    with request_stream(fleet.hosts, front_door=True) as stream:
        run = ansible.deploy("v2-under-load", releases.v2.tag)
    record_requests(stream.result)
    return run, stream.result


def test_every_host_serves_v2_after_the_rollout(deploy_under_load, fleet):
    run, _ = deploy_under_load
    assert run.returncode == 0, run.tail()
    assert fleet.versions() == dict.fromkeys(fleet.names, "v2")


def test_no_request_fails_while_every_host_switches(deploy_under_load, fleet):
    _, stream = deploy_under_load
    # The stream must have seen each host answer with the old and then the new release, or it did
    # not cover the switch it is meant to watch.
    seen = {name: sorted(stream.versions[name]) for name in fleet.names}
    assert seen == {name: ["v1", "v2"] for name in fleet.names}, (
        f"versions answered per host: {stream.versions}"
    )
    assert (stream.failed, stream.failures) == (0, []), f"{stream.failed} of {stream.sent} requests failed"


def test_no_host_answers_from_v1_once_it_has_answered_from_v2(deploy_under_load, fleet):
    _, stream = deploy_under_load
    # The switch is atomic: requests in flight on v1 may finish there, but none sent after the
    # host's first v2 answer arrived is answered by v1 (deploykit/switch_order.py).
    assert {name: stream.old_after_new()[name] for name in fleet.names} == dict.fromkeys(fleet.names, 0)


def test_summary_names_each_hosts_release_before_and_after(deploy_under_load, fleet, releases):
    run, _ = deploy_under_load
    lines = re.findall(r'"(\S+): (\S+) -> (\S+) in [\d.]+ s"', run.play("Summarise the deploy"))
    # Both sides by image tag: the one the host served, the one it serves now.
    summary = {host: (before, after) for host, before, after in lines}
    assert summary == {name: (releases.v1.tag, releases.v2.tag) for name in fleet.names}


def test_users_at_the_public_address_see_the_release_change_without_a_failure(deploy_under_load, fleet):
    _, stream = deploy_under_load
    through = stream.versions["front door"]
    assert sorted(through) == ["v1", "v2"], f"versions through the front door: {through}"
    assert set(stream.answered_by) == set(fleet.names), stream.answered_by
    assert (stream.failed, stream.failures) == (0, [])
