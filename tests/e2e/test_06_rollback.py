"""Scenario 6: playbooks/rollback.yml returns every host to v1 without pulling anything.

First, three rollbacks that must be refused before any host switches back: a release name that is
no release ID or tag, a fleet where the last host of the rollout lost the environment file of the
release to return to (once, the first batch would have switched back and the fleet split), and a
fleet whose last host does not answer (frozen with docker pause).

After the rollback, and so after every deploy of scenarios 1 to 5, the images the hosts keep are
exactly those the deploys marked in ECR (the stand-in's ECR API answers from the real registry),
and the repository's lifecycle policy, evaluated over those images and many newer pushes, expires
none of them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from deploykit import standin
from tests.test_ecr_lifecycle import Image, expired_by, render_defaults

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


# ---------------------------------------------------------------------------------------------
# The images the hosts keep, marked in ECR: roles/aws_registry's lifecycle policy never expires them.

HELD = "held-local-"


@pytest.fixture(scope="module")
def repository_after_rollback(rollback, fleet) -> dict:
    """The hosts' kept image tags and the repository's images, as ECR's API describes them."""
    kept = fleet.kept_tags()
    ecr = standin.client("ecr")
    pages = ecr.get_paginator("describe_images").paginate(repositoryName="deploykit/app")
    images = [image for page in pages for image in page["imageDetails"]]
    return {"kept": kept, "images": images}


def test_ecr_marks_exactly_the_images_the_hosts_keep(repository_after_rollback):
    kept, images = repository_after_rollback["kept"], repository_after_rollback["images"]
    marks = {tag for image in images for tag in image.get("imageTags", []) if tag.startswith(HELD)}
    assert len(kept) > 1, kept  # the serving release and one to return to, at least
    assert marks == {HELD + tag for tag in kept}
    # Each mark is on the image of the tag it names.
    digests = {tag: image["imageDigest"] for image in images for tag in image.get("imageTags", [])}
    assert all(digests[HELD + tag] == digests[tag] for tag in kept)


def test_the_lifecycle_policy_expires_no_kept_image_after_many_newer_pushes(repository_after_rollback):
    kept, described = repository_after_rollback["kept"], repository_after_rollback["images"]
    policy = render_defaults()["aws_registry_lifecycle_policy"]
    images = [Image(d["imageDigest"], d["imagePushedAt"], set(d.get("imageTags", []))) for d in described]
    latest = max(image.pushed_at for image in images)
    # Far more pushes than the policy keeps by count, none of them deployed.
    images += [Image(f"sha256:new{n:04d}", latest + timedelta(minutes=n), {f"new-{n}"}) for n in range(1, 61)]
    kept_digests = {image.digest for image in images if image.tags & kept}
    now = datetime.now(UTC) + timedelta(days=1)
    assert not kept_digests & expired_by(policy, images, now)
    # The marks do the work: the same images without them lose what the hosts keep.
    unmarked = [Image(image.digest, image.pushed_at, {t for t in image.tags if not t.startswith(HELD)})
                for image in images]  # fmt: skip
    assert kept_digests & expired_by(policy, unmarked, now)
