"""Scenario 4: a release that never becomes ready stops the rollout on its first host.

The release (tests/e2e/fixtures/unready-release) is v2 with gunicorn bound to the container's
loopback only, not to the socket the deploy mounts for it: migrations pass, the container runs and
even reports healthy, but nothing outside it gets an answer, so the readiness gate never passes.
"""

from __future__ import annotations

import pytest

from deploykit import standin

pytestmark = pytest.mark.e2e

ROLLOUT = "Roll out the release"


@pytest.fixture(scope="module")
def unready_deploy(ansible, fleet, releases, request_stream, record_requests):
    before = fleet.snapshot()
    with request_stream(fleet.hosts) as stream:
        # This release can never pass the gate; a shorter gate (20 s instead of 60 s) only saves time.
        run = ansible.deploy("v3-unready", releases.unready.tag, "-e", "app_deploy_readiness_retries=10")
    record_requests(stream.result)
    return before, run, stream.result, fleet.snapshot()


def test_rollout_fails_on_its_first_host(unready_deploy, fleet):
    _, run, _, _ = unready_deploy
    first = fleet.rollout_order()[0]
    assert run.returncode != 0, run.tail()
    assert run.hosts_in(ROLLOUT) == [first]
    assert {host for host, _ in run.failures()} == {first}


def test_failure_names_the_host_and_shows_the_release_log(unready_deploy, fleet):
    _, run, _, _ = unready_deploy
    first = fleet.rollout_order()[0]
    assert f"{first}: release " in run.output
    assert "did not become ready" in run.output
    # gunicorn's own start-up line, from the failed container's log.
    assert "Listening at: http://127.0.0.1:8000" in run.output


def test_no_request_fails_during_the_failed_rollout(unready_deploy):
    _, _, stream, _ = unready_deploy
    assert stream.sent > 0
    assert (stream.failed, stream.failures) == (0, []), f"{stream.failed} of {stream.sent} requests failed"


def test_every_host_still_serves_v2(unready_deploy, fleet):
    assert fleet.versions() == dict.fromkeys(fleet.names, "v2")


def test_failed_release_leaves_every_container_as_it_was(unready_deploy):
    before, _, _, after = unready_deploy
    assert after == before


def test_a_failed_rollout_removes_no_mark_and_leaves_the_release_it_tried_marked(
    unready_deploy, fleet, releases
):
    # The marks are made exact only once every host has finished: a rollout that stops half-way
    # may have left a host holding the new release, so it keeps every mark it found and made.
    ecr = standin.client("ecr")
    tags = {i["imageTag"] for i in ecr.list_images(repositoryName="deploykit/app")["imageIds"]}
    kept = fleet.kept_tags()
    assert {f"held-local-{tag}" for tag in kept | {releases.unready.tag}} <= tags
