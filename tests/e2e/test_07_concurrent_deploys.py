"""Scenario 7: of two deploys at once, the second is refused and names who holds the lock."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e

LOCK = "/deploykit/local/deploy-lock"


def _lock(ssm) -> dict | None:
    try:
        return json.loads(ssm.get_parameter(Name=LOCK)["Parameter"]["Value"])
    except ssm.exceptions.ParameterNotFound:
        return None


@pytest.fixture(scope="module")
def two_deploys(ansible, releases, ssm, wait_for, fleet):
    first_actor, second_actor = f"{ansible.actor}-first", f"{ansible.actor}-second"
    first = ansible.start(
        "v2-first-of-two", ansible.deploy_args(releases.v2.tag), USER=first_actor, DEPLOYKIT_ACTOR=first_actor
    )
    try:
        lock = wait_for(
            lambda: _lock(ssm) or (not first.running() and {"holder": "nobody: the first deploy ended"}),
            timeout=300,
            what="the first deploy to take the lock",
        )
        second = ansible.run(
            "v2-second-of-two",
            ansible.deploy_args(releases.v2.tag),
            USER=second_actor,
            DEPLOYKIT_ACTOR=second_actor,
        )
        # --limit leaves localhost out of every play; the lock must still be asked for.
        limited = ansible.run(
            "v2-limited-while-locked",
            ansible.deploy_args(releases.v2.tag, "--limit", fleet.names[0]),
            USER=second_actor,
            DEPLOYKIT_ACTOR=second_actor,
        )
    finally:
        first_run = first.wait()
    return {
        "first_actor": first_actor,
        "lock": lock,
        "first": first_run,
        "second": second,
        "limited": limited,
        "lock_after": _lock(ssm),
    }


def test_second_deploy_is_refused_naming_the_holder(two_deploys):
    second, lock = two_deploys["second"], two_deploys["lock"]
    assert lock.get("holder") == two_deploys["first_actor"], lock
    assert second.returncode != 0, second.tail()
    assert (
        f"is held by {two_deploys['first_actor']} (user {lock['user']}, on {lock['machine']}, "
        f"process {lock['pid']}) since {lock['started_at']}" in second.output
    ), second.tail()
    assert "Wait for that deploy to finish" in second.output
    assert "It is stale" not in second.output


def test_deploy_limited_to_one_host_is_refused_too(two_deploys, fleet):
    limited, lock = two_deploys["limited"], two_deploys["lock"]
    assert limited.returncode != 0, limited.tail()
    assert f"is held by {two_deploys['first_actor']} (user {lock['user']}" in limited.output, limited.tail()
    # Under --limit the controller's checks are counted against the one host the play has left,
    # so its recap shows them as ok; what matters is that nothing changed and no play past the
    # checks began.
    assert limited.recap().get(fleet.names[0], {}).get("changed", 0) == 0
    assert "PLAY [Plan the rollout]" not in limited.output, limited.tail()


def test_refused_deploy_reaches_no_host(two_deploys, fleet):
    # The checks' play names the web hosts too (so that --limit runs it), and a refusal there fails
    # them all in the recap; what matters is that no task ran on any of them.
    recap = two_deploys["second"].recap()
    assert {name: (recap[name]["ok"], recap[name]["changed"]) for name in fleet.names if name in recap} == {
        name: (0, 0) for name in fleet.names if name in recap
    }


def test_first_deploy_completes(two_deploys, fleet):
    first = two_deploys["first"]
    assert first.returncode == 0, first.tail()
    assert fleet.versions() == dict.fromkeys(fleet.names, "v2")


def test_lock_is_released_when_the_first_deploy_ends(two_deploys):
    assert two_deploys["lock_after"] is None
