"""The host's record of its releases agrees with what runs."""

from __future__ import annotations

from app_deploy_scenario import app_containers, instance

testinfra_hosts = [f"docker://{instance()}"]


def test_state_file_names_the_running_release(serving, release_state):
    assert serving["Name"].lstrip("/") == release_state["current"]["container"]
    assert serving["State"]["Running"]


def test_one_release_container_runs(host):
    assert len(app_containers(host)) == 1


def test_history_starts_with_the_current_release(release_state):
    assert release_state["history"][0]["release"] == release_state["current"]["release"]
