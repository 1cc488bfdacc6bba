"""Scenario 1: v1 to three fresh hosts (Docker, nginx and the app installed on the way)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def first_deploy(ansible, releases):
    return ansible.deploy("v1-first", releases.v1.tag)


def test_first_deploy_succeeds_on_every_host(first_deploy, fleet):
    recap = first_deploy.recap()
    outcome = {name: recap.get(name, {}).get("failed", "not in recap") for name in fleet.names}
    assert first_deploy.returncode == 0, first_deploy.tail()
    assert outcome == dict.fromkeys(fleet.names, 0)


def test_every_host_serves_v1_through_nginx(first_deploy, fleet, releases):
    served = {name: fleet.release(name) for name in fleet.names}
    assert {
        name: (release["version"], release["host"], release["image"]) for name, release in served.items()
    } == {name: ("v1", name, releases.v1.uri) for name in fleet.names}


def test_app_page_lists_the_deploy_in_its_history(first_deploy, fleet, ansible):
    recorded = {
        name: [
            row
            for row in fleet.history(name)
            if (row["version"], row["host"], row["by"]) == ("v1", name, ansible.actor)
        ]
        for name in fleet.names
    }
    assert {name: len(rows) for name, rows in recorded.items()} == dict.fromkeys(fleet.names, 1)
