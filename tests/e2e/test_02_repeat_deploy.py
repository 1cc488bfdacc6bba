"""Scenario 2: the same deploy again changes nothing on any host."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repeat(ansible, fleet, releases):
    before = fleet.snapshot()
    run = ansible.deploy("v1-again", releases.v1.tag)
    return before, run, fleet.snapshot()


def test_repeat_deploy_reports_no_change_on_any_web_host(repeat, fleet):
    _, run, _ = repeat
    recap = run.recap()
    assert run.returncode == 0, run.tail()
    assert {
        name: recap.get(name, {}).get("changed", "not in recap") for name in fleet.names
    } == dict.fromkeys(fleet.names, 0)


def test_repeat_deploy_restarts_no_container(repeat, fleet):
    before, _, after = repeat
    running = {
        name: [c.name for c in containers if c.status == "running"] for name, containers in before.items()
    }
    assert all(running.values()), f"a host ran no container before the repeat: {running}"
    assert after == before
