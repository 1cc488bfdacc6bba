"""Acceptance: releases switch without a dropped request, and a bad one never takes traffic.

The steps build on each other, in this order, through module-scoped fixtures:

1. the converged release A serves (deployed again if an earlier run left another);
2. A -> B under a request stream;
3. B -> broken C (a migration nobody applied) under a request stream: the play fails;
4. a tag that does not exist: the play fails before the running release is touched;
5. required variables missing: argument validation fails before any task;
6. rollback to the previous release (A) under a request stream; a rollback to an unknown release;
7. A with one more setting: a changed environment alone is a new release (and prunes B and C);
8. rollback by name to A's first release ID: the host ends as converge left it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from app_deploy_scenario import (
    BROKEN_TAG,
    IMAGE_REPOSITORY,
    MISSING_TAG,
    VERSIONS,
    Rollout,
    ansible_playbook,
    app_containers,
    get,
    group_vars,
    held_request,
    hold_a_request,
    instance,
    state,
    under_traffic,
)

testinfra_hosts = [f"docker://{instance()}"]

MIN_REQUESTS = 1000
A, B = "release-a", "release-b"
DEPLOY = "deploy_release.yml"
ROLLBACK = "rollback.yml"
_outputs: list[str] = []


def _played(run) -> str:
    _outputs.append(run.output)
    return run.output


def _version(address: str) -> str:
    status, body, _ = get(address, "/version.json")
    assert status == 200
    return json.loads(body)["version"]


def _assert_no_request_failed(rollout: Rollout) -> None:
    traffic = rollout.traffic
    print(f"{traffic.total} requests, {len(traffic.failures)} failed, versions {dict(traffic.versions)}")
    assert traffic.total >= MIN_REQUESTS
    assert traffic.failures == []


# 1 ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def release_a(host, host_address) -> dict:
    if state(host)["current"]["tag"] != A or _version(host_address) != VERSIONS[A]:
        run = ansible_playbook(DEPLOY, "--extra-vars", f"app_deploy_image_tag={A}")
        assert run.returncode == 0, _played(run)[-3000:]
    assert _version(host_address) == VERSIONS[A]
    return state(host)


# 2 ----------------------------------------------------------------------------------------------
# Seconds a request stays in flight on A after the switch to B: less than app_deploy_drain_seconds.
HOLD = 1.5
LEFTOVER = "app-left-by-a-failed-stop"


@pytest.fixture(scope="module")
def a_to_b(host, host_address, release_a) -> Rollout:
    # What a stop that failed leaves behind: a running container of the app nginx does not route to.
    host.run("docker rm --force %s", LEFTOVER)
    host.check_output(
        "docker run --detach --name %s --label org.deploykit.app=app --entrypoint sh %s -c %s",
        LEFTOVER,
        release_a["current"]["image_id"],
        "trap 'exit 0' TERM; sleep 600 & wait",
    )
    hold_a_request(host, host_address, HOLD)
    rollout = under_traffic(
        host, host_address, DEPLOY, "--extra-vars", f"app_deploy_image_tag={B}", min_requests=MIN_REQUESTS
    )
    _played(rollout.run)
    return rollout


def test_a_to_b_succeeds(a_to_b):
    assert a_to_b.run.returncode == 0, a_to_b.run.output[-3000:]


def test_a_to_b_drops_no_request(a_to_b):
    _assert_no_request_failed(a_to_b)


def test_a_request_in_flight_on_a_across_the_switch_is_answered_by_a(host, a_to_b):
    held = held_request(host)
    assert held["status"] == 200, held["body"][:500]
    assert json.loads(held["body"])["version"] == VERSIONS[A]
    assert held["answered"] - held["switched"] >= HOLD


def test_a_to_b_drains_exactly_the_request_in_flight_on_a(a_to_b):
    # The drain ends when A's last connection closes: after the held request, before the bound.
    drained = re.search(r'"drain: (\d+\.\d+) s"', a_to_b.run.output)
    assert drained, a_to_b.run.output[-3000:]
    drain_bound = group_vars()["app_deploy_drain_seconds"]
    assert HOLD - 0.2 <= float(drained[1]) < drain_bound


def test_a_to_b_switches_the_traffic_to_b(a_to_b, host_address):
    assert a_to_b.traffic.versions[VERSIONS[A]] > 0
    assert a_to_b.traffic.last_version == VERSIONS[B]
    assert _version(host_address) == VERSIONS[B]


def test_a_to_b_removes_a_container_of_the_app_that_nginx_did_not_route_to(host, a_to_b):
    assert any(LEFTOVER in line for line in a_to_b.containers_before)
    assert not host.run("docker container inspect %s", LEFTOVER).succeeded


def test_a_to_b_leaves_only_b_running(host, a_to_b):
    assert len(a_to_b.containers_after) == 1
    assert a_to_b.containers_after != a_to_b.containers_before
    assert state(host)["current"]["tag"] == B


def test_a_to_b_records_a_as_the_previous_release(host, a_to_b, release_a):
    assert state(host)["previous"]["release"] == release_a["current"]["release"]


# 3 ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def b_to_broken_c(host, host_address, a_to_b) -> Rollout:
    rollout = under_traffic(
        host,
        host_address,
        DEPLOY,
        "--extra-vars",
        f"app_deploy_image_tag={BROKEN_TAG}",
        min_requests=MIN_REQUESTS,
    )
    _played(rollout.run)
    return rollout


def test_broken_c_fails_the_play(b_to_broken_c):
    assert b_to_broken_c.run.returncode != 0


def test_broken_c_failure_names_the_host_and_the_reason(b_to_broken_c):
    failure = re.search(
        rf"fatal: \[{re.escape(instance())}\]: FAILED! => .*\"msg\": \"{re.escape(instance())}: release \S+ "
        rf"\(\S+:{BROKEN_TAG}\) did not become ready: HTTP 503 from /readyz/: "
        r"unapplied migrations: releases\.9999_molecule_unapplied",
        b_to_broken_c.run.output,
    )
    assert failure, b_to_broken_c.run.output[-3000:]


def test_broken_c_shows_its_last_log_lines(b_to_broken_c):
    assert "swap | Show the last log lines of the new release" in b_to_broken_c.run.output


def test_broken_c_drops_no_request(b_to_broken_c):
    _assert_no_request_failed(b_to_broken_c)


def test_broken_c_never_takes_traffic(b_to_broken_c, host_address):
    assert set(b_to_broken_c.traffic.versions) == {VERSIONS[B]}
    assert _version(host_address) == VERSIONS[B]


def test_broken_c_leaves_the_same_b_container_serving(host, b_to_broken_c):
    assert b_to_broken_c.containers_after == b_to_broken_c.containers_before
    assert state(host)["current"]["tag"] == B


# 4 ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def missing_tag(host, host_address, b_to_broken_c) -> Rollout:
    link = "readlink /var/lib/deploykit/upstream.sock"
    upstream_before = host.check_output(link)
    rollout = under_traffic(
        host, host_address, DEPLOY, "--extra-vars", f"app_deploy_image_tag={MISSING_TAG}", min_requests=100
    )
    _played(rollout.run)
    rollout.upstream_unchanged = host.check_output(link) == upstream_before
    return rollout


def test_missing_tag_fails_the_play_with_a_clear_message(missing_tag):
    assert missing_tag.run.returncode != 0
    assert re.search(
        rf"{re.escape(instance())}: cannot pull \S+:{MISSING_TAG}: the tag does not exist in the registry",
        missing_tag.run.output,
    ), missing_tag.run.output[-3000:]
    # Said once, with its cause: the module's raw error is not a failure line of its own.
    assert missing_tag.run.output.count("fatal: [") == 1, missing_tag.run.output[-3000:]


def test_missing_tag_fails_before_the_running_release_is_touched(missing_tag):
    assert missing_tag.containers_after == missing_tag.containers_before
    assert missing_tag.upstream_unchanged
    assert missing_tag.traffic.failures == []
    # Nothing after the failed pull ran: no release described, no container, no switch.
    failure = "release | Fail because the release cannot be prepared"
    tasks_after_pull = missing_tag.run.output.split(failure)[1]
    assert "release | Describe the release" not in tasks_after_pull
    assert "swap |" not in tasks_after_pull


def test_missing_tag_keeps_b_serving(missing_tag, host_address):
    assert _version(host_address) == VERSIONS[B]


# 5 ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("missing", ["app_deploy_image_repository", "app_deploy_image_tag"])
def test_missing_required_variable_fails_argument_validation_before_any_task(
    host, missing, missing_tag, tmp_path
):
    # An inventory and playbook of their own: the scenario's group_vars would define both variables.
    config = group_vars()
    given = {
        name: config[name]
        for name in ("app_deploy_image_repository", "app_deploy_image_tag")
        if name != missing
    }
    playbook = Path(tmp_path, "deploy.yml")
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Deploy without every required variable",
                    "hosts": "all",
                    "gather_facts": False,
                    "roles": [{"role": "app_deploy", "vars": given}],
                }
            ]
        )
    )
    before = app_containers(host)
    run = ansible_playbook(
        playbook, "--extra-vars", "ansible_connection=community.docker.docker", inventory=f"{instance()},"
    )
    _played(run)
    assert run.returncode != 0
    tasks = re.findall(r"^TASK \[(.+?)\]", run.output, re.MULTILINE)
    assert len(tasks) == 1, run.output[-3000:]
    assert tasks[0].startswith("app_deploy : Validating arguments against arg spec 'main'")
    assert re.search(rf"missing required arguments: {missing}\b", run.output), run.output[-3000:]
    assert app_containers(host) == before


# 6 ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rollback_to_previous(host, host_address, missing_tag) -> Rollout:
    rollout = under_traffic(host, host_address, ROLLBACK, min_requests=MIN_REQUESTS)
    _played(rollout.run)
    return rollout


def test_rollback_returns_to_the_previous_release(rollback_to_previous, host, host_address, release_a):
    assert rollback_to_previous.run.returncode == 0, rollback_to_previous.run.output[-3000:]
    assert _version(host_address) == VERSIONS[A]
    assert state(host)["current"]["release"] == release_a["current"]["release"]


def test_rollback_pulls_nothing(rollback_to_previous):
    # release.yml holds the login and the pull (app_deploy_prepare).
    assert "release |" not in rollback_to_previous.run.output


def test_rollback_drops_no_request(rollback_to_previous):
    _assert_no_request_failed(rollback_to_previous)


def test_rollback_to_an_unknown_release_fails_and_changes_nothing(host, rollback_to_previous):
    before = app_containers(host)
    run = ansible_playbook(ROLLBACK, "--extra-vars", "app_deploy_rollback_to=no-such-release")
    _played(run)
    assert run.returncode != 0
    assert f'{instance()}: no release "no-such-release" is recorded on this host' in " ".join(
        run.output.split()
    )
    assert app_containers(host) == before


# 7 ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def changed_env(host, host_address, rollback_to_previous) -> Rollout:
    env = {**group_vars()["app_deploy_env"], "DJANGO_LOG_LEVEL": "WARNING"}
    rollout = under_traffic(
        host,
        host_address,
        DEPLOY,
        "--extra-vars",
        json.dumps({"app_deploy_image_tag": A, "app_deploy_env": env}),
        min_requests=MIN_REQUESTS,
    )
    _played(rollout.run)
    return rollout


def test_changed_environment_alone_is_a_new_release(host, changed_env, release_a):
    assert changed_env.run.returncode == 0, changed_env.run.output[-3000:]
    current = state(host)["current"]
    assert current["image_id"] == release_a["current"]["image_id"]
    assert current["release"] != release_a["current"]["release"]
    assert changed_env.containers_after != changed_env.containers_before


def test_changed_environment_drops_no_request(changed_env):
    _assert_no_request_failed(changed_env)


def test_prune_keeps_only_the_last_releases(host, changed_env):
    # app_deploy_keep_releases is 2: A with the new setting and A; B and the never-released C go.
    tags = host.check_output("docker images --format '{{.Tag}}' %s", IMAGE_REPOSITORY)
    assert sorted(tags.split()) == [A]
    assert len(state(host)["history"]) == 2


# 8 ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rollback_by_name(host, host_address, changed_env, release_a) -> Rollout:
    rollout = under_traffic(
        host,
        host_address,
        ROLLBACK,
        "--extra-vars",
        f"app_deploy_rollback_to={release_a['current']['release']}",
        min_requests=MIN_REQUESTS,
    )
    _played(rollout.run)
    return rollout


def test_rollback_by_release_id_returns_to_that_release(host, rollback_by_name, release_a):
    assert rollback_by_name.run.returncode == 0, rollback_by_name.run.output[-3000:]
    assert state(host)["current"]["release"] == release_a["current"]["release"]
    _assert_no_request_failed(rollback_by_name)


def test_deploying_the_serving_release_again_changes_nothing(rollback_by_name):
    run = ansible_playbook(DEPLOY, "--extra-vars", f"app_deploy_image_tag={A}")
    _played(run)
    assert run.returncode == 0
    assert re.search(rf"{re.escape(instance())}\s*: ok=\d+\s+changed=0\s", run.output), run.output[-2000:]


def test_no_secret_reaches_the_playbook_output(host, rollback_by_name):
    env = dict(
        line.split("=", 1)
        for line in host.file(state(host)["current"]["env_file"]).content_string.splitlines()
        if line and not line.startswith("#")
    )
    secrets = [env["DJANGO_SECRET_KEY"], env["DATABASE_URL"].split("@")[0].rsplit(":", 1)[1]]
    assert _outputs
    for output in _outputs:
        for secret in secrets:
            assert secret not in output
