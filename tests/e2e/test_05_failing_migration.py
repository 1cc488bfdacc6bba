"""Scenario 5: a release whose migration fails never reaches a host.

The release (tests/e2e/fixtures/failing-migration) is v2 plus a migration that raises.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def failing_migration(ansible, fleet, releases):
    before = fleet.snapshot()
    run = ansible.deploy("v4-failing-migration", releases.failing_migration.tag)
    return before, run, fleet.snapshot()


def test_rollout_fails_in_the_migrations_step(failing_migration):
    _, run, _ = failing_migration
    assert run.returncode != 0, run.tail()
    assert [task for _, task in run.failures()] == [
        "app_deploy : migrate | Ensure the database migrations of the new release applied"
    ]
    assert "e2e: this data migration always fails" in run.output
    assert run.play("Roll out the release") == ""


def test_every_host_still_serves_v2(failing_migration, fleet):
    assert fleet.versions() == dict.fromkeys(fleet.names, "v2")


def test_no_container_changed_on_any_host(failing_migration):
    before, _, after = failing_migration
    assert after == before
