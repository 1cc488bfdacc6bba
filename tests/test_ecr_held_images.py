"""The marks the deploy puts on the images an environment holds (plugins/action/ecr_held_images.py).

moto stands in for ECR's API here (moto's own image store, on a free port); the stand-in's ECR over
the real registry is tests/test_ecr_registry.py's, and the deploy's marks on it are e2e's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import socket
import textwrap

import boto3
import pytest

from deploykit.system import ROOT
from tests.test_deploy_plugins import _playbook, _run

_SPEC = importlib.util.spec_from_file_location("ecr_held_images", ROOT / "plugins/action/ecr_held_images.py")
assert _SPEC
assert _SPEC.loader
plugin = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(plugin)

REPOSITORY = "deploykit/app"
KEY = "testing"  # moto takes any key; this one is not a secret


@pytest.fixture(scope="module")
def endpoint(moto_server, request: pytest.FixtureRequest) -> str:
    return moto_server(request)


@pytest.fixture
def ecr(endpoint: str):
    client = boto3.client(
        "ecr",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=KEY,
    )
    client.create_repository(repositoryName=REPOSITORY, imageTagMutability="IMMUTABLE")
    yield client
    client.delete_repository(repositoryName=REPOSITORY, force=True)


def push(ecr, tag: str, layer: str = "") -> str:
    """An image of its own under `tag` (what `docker push` makes); its digest."""
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2,
                   "digest": "sha256:" + hashlib.sha256(tag.encode()).hexdigest()},
        # moto makes an image's digest from its layers': each image gets one of its own.
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2,
                    "digest": "sha256:" + hashlib.sha256(f"layer {tag} {layer}".encode()).hexdigest()}],
    })  # fmt: skip
    return ecr.put_image(repositoryName=REPOSITORY, imageManifest=manifest, imageTag=tag)["image"]["imageId"][
        "imageDigest"
    ]


def tags_of(ecr) -> dict[str, str]:
    """Every tag of the repository, with the digest it names."""
    images = ecr.list_images(repositoryName=REPOSITORY, filter={"tagStatus": "TAGGED"})["imageIds"]
    return {image["imageTag"]: image["imageDigest"] for image in images}


def test_the_deployed_image_gets_the_environments_mark_on_the_same_digest(ecr):
    digest = push(ecr, "v1")
    outcome = plugin.hold(ecr, REPOSITORY, "production", ["v1"])
    assert outcome["changed"]
    assert outcome["added"] == ["held-production-v1"]
    assert tags_of(ecr) == {"v1": digest, "held-production-v1": digest}


def test_a_second_run_with_the_same_tags_changes_nothing(ecr):
    push(ecr, "v1")
    plugin.hold(ecr, REPOSITORY, "production", ["v1"])
    outcome = plugin.hold(ecr, REPOSITORY, "production", ["v1"], exclusive=True)
    assert not outcome["changed"]
    assert outcome["held"] == ["held-production-v1"]


def test_exclusive_removes_the_mark_of_an_image_no_host_holds_and_keeps_the_image(ecr):
    old, new = push(ecr, "v1"), push(ecr, "v2")
    assert old != new
    plugin.hold(ecr, REPOSITORY, "production", ["v1", "v2"])
    outcome = plugin.hold(ecr, REPOSITORY, "production", ["v2"], exclusive=True)
    assert outcome["removed"] == ["held-production-v1"]
    assert tags_of(ecr) == {"v1": old, "v2": new, "held-production-v2": new}


def test_a_mark_left_on_an_image_whose_tag_was_pushed_again_follows_the_tag(ecr):
    old = push(ecr, "v1")
    plugin.hold(ecr, REPOSITORY, "production", ["v1"])
    # The tag deleted and the commit pushed again (a new build: a new digest); the mark keeps the
    # old image alive under its own tag.
    ecr.batch_delete_image(repositoryName=REPOSITORY, imageIds=[{"imageTag": "v1"}])
    new = push(ecr, "v1", layer="rebuilt")
    assert new != old
    outcome = plugin.hold(ecr, REPOSITORY, "production", ["v1"], exclusive=True)
    assert outcome["moved"] == ["held-production-v1"]
    assert tags_of(ecr) == {"v1": new, "held-production-v1": new}


def test_an_environment_never_removes_another_environments_marks(ecr):
    push(ecr, "v1"), push(ecr, "v2")
    plugin.hold(ecr, REPOSITORY, "staging", ["v1"])
    plugin.hold(ecr, REPOSITORY, "production", ["v2"], exclusive=True)
    assert "held-staging-v1" in tags_of(ecr)


def test_an_environment_that_would_begin_another_ones_marks_is_refused_before_any_call(ecr):
    push(ecr, "v1")
    with pytest.raises(plugin.HoldError, match=r"prod-eu.*letters, digits and '_' only"):
        plugin.hold(ecr, REPOSITORY, "prod-eu", ["v1"], exclusive=True)
    assert set(tags_of(ecr)) == {"v1"}


def test_a_tag_not_in_the_repository_is_reported_missing_and_nothing_is_marked_for_it(ecr):
    push(ecr, "v1")
    outcome = plugin.hold(ecr, REPOSITORY, "production", ["v1", "gone"])
    assert outcome["missing"] == ["gone"]
    assert outcome["held"] == ["held-production-v1"]


def test_check_mode_reports_what_it_would_change_and_changes_nothing(ecr):
    push(ecr, "v1"), push(ecr, "v2")
    plugin.hold(ecr, REPOSITORY, "production", ["v1"])
    before = tags_of(ecr)
    outcome = plugin.hold(ecr, REPOSITORY, "production", ["v2"], exclusive=True, check_mode=True)
    assert outcome["added"] == ["held-production-v2"]
    assert outcome["removed"] == ["held-production-v1"]
    assert tags_of(ecr) == before


HOLD = """
- name: Mark the image production holds
  ecr_held_images:
    repository: deploykit/app
    environment: production
    tags: [v1, nope]
    region: us-east-1
"""


def test_the_task_fails_naming_the_tag_that_is_not_in_the_repository(tmp_path, ecr, endpoint):
    push(ecr, "v1")
    run = _playbook(tmp_path, endpoint, HOLD)
    assert run.returncode != 0
    assert "ECR repository deploykit/app has no image tagged nope" in run.stdout, run.stdout[-3000:]
    assert "push it first" in run.stdout


def test_with_missing_warn_the_task_marks_the_rest_and_warns(tmp_path, ecr, endpoint):
    push(ecr, "v1")
    run = _playbook(tmp_path, endpoint, textwrap.dedent(HOLD) + "    missing: warn\n")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "a replaced instance could not pull it" in run.stdout + run.stderr
    assert "held-production-v1" in tags_of(ecr)


def test_an_ecr_that_cannot_be_reached_warns_and_the_task_goes_on(tmp_path, ecr):
    # A port nothing listens on: what the deploy meets when ECR's endpoint cannot be reached.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    run = _playbook(tmp_path, closed, HOLD, AWS_MAX_ATTEMPTS="1")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "not marked, the next deploy marks them" in run.stdout + run.stderr


def test_a_refusal_of_ecr_fails_the_task(tmp_path, endpoint):
    # No such repository: ECR refuses (400), which is a setting to fix, not an outage.
    run = _playbook(tmp_path, endpoint, HOLD)
    assert run.returncode != 0
    assert "RepositoryNotFoundException" in run.stdout, run.stdout[-3000:]


# playbooks/tasks/held-images.yml, the last step of a deploy or rollback, over an inventory whose
# web hosts were read (app_deploy_kept_tags set, as app_deploy's inspect sets it) or not.
HELD_IMAGES_PLAY = f"""
- name: The end of a deploy
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
    app_env: production
    aws_region: us-east-1
    deploy_image_repository_name: {REPOSITORY}
    aws_registry_held_tag_prefix: held-
  tasks:
    - name: Include the marks of the images the hosts keep
      ansible.builtin.import_tasks: {ROOT / "playbooks/tasks/held-images.yml"}
"""


@pytest.mark.parametrize(
    ("second_host_read", "marks_after"),
    [
        (True, {"held-production-v2", "held-production-v3"}),
        # web-2 was not read (left out by --limit): what it keeps is unknown, so nothing is removed.
        (False, {"held-production-v1", "held-production-v2"}),
    ],
)
def test_the_end_of_a_deploy_makes_the_marks_exact_only_when_every_web_host_was_read(
    tmp_path, ecr, endpoint, second_host_read, marks_after
):
    for tag in ("v1", "v2", "v3"):
        push(ecr, tag)
    plugin.hold(ecr, REPOSITORY, "production", ["v1", "v2"])
    inventory = tmp_path / "inventory.yml"
    second = {"app_deploy_kept_tags": ["v3", "v2"]} if second_host_read else {}
    inventory.write_text(
        json.dumps({"role_web": {"hosts": {"web-1": {"app_deploy_kept_tags": ["v2"]}, "web-2": second}}})
    )
    run = _run(tmp_path, endpoint, HELD_IMAGES_PLAY, "-i", str(inventory))
    assert run.returncode == 0, run.stdout[-3000:]
    assert {tag for tag in tags_of(ecr) if tag.startswith("held-")} == marks_after
