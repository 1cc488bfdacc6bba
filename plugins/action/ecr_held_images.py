"""Action plugin: mark in ECR the images an environment's hosts hold (see plugins/modules/ecr_held_images.py).

Runs on the controller, like the deploy lock: the marks are ECR tags, never anything on a host,
and under `--limit` the play's first host may be a web host. The work is in `hold()`, which takes
any ECR client, so the tests drive it against the stand-in without Ansible.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

_ARGUMENTS = {
    "repository": {"type": "str", "required": True},
    "environment": {"type": "str", "required": True},
    "tags": {"type": "list", "elements": "str", "required": True},
    "prefix": {"type": "str", "default": "held-"},
    "exclusive": {"type": "bool", "default": False},
    "missing": {"type": "str", "choices": ["fail", "warn"], "default": "fail"},
    "region": {"type": "str", "aliases": ["aws_region", "ec2_region"]},
}

# The manifests a tag may name: Docker's and OCI's, single-platform and index. BatchGetImage
# answers only in the types it is told to accept (its default is Docker schema 2 alone).
MEDIA_TYPES = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
]
# An environment's marks are found by their prefix <prefix><environment>-, so no environment's
# prefix may begin another's: with "prod" and "prod-eu", prod's cleanup would take prod-eu's marks.
ENVIRONMENT = re.compile(r"^[A-Za-z0-9_]+$")
# Docker's (and so ECR's registry API's) rule for a tag.
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DELETE_BATCH = 100  # BatchDeleteImage takes at most 100 image IDs


class HoldError(Exception):
    """The marks cannot be named: an environment or a tag that cannot be part of an image tag."""


def mark(prefix: str, environment: str, tag: str) -> str:
    """The tag that says `environment` holds the image tagged `tag`."""
    return f"{prefix}{environment}-{tag}"


def _tags(client: Any, repository: str) -> dict[str, str]:
    """Every tag of `repository`, with the digest it names."""
    found: dict[str, str] = {}
    for page in client.get_paginator("list_images").paginate(
        repositoryName=repository, filter={"tagStatus": "TAGGED"}
    ):
        found |= {image["imageTag"]: image["imageDigest"] for image in page.get("imageIds", [])}
    return found


def _image(client: Any, repository: str, tag: str) -> dict | None:
    """The image tagged `tag` with its manifest (BatchGetImage), or None when there is none."""
    answer = client.batch_get_image(
        repositoryName=repository, imageIds=[{"imageTag": tag}], acceptedMediaTypes=MEDIA_TYPES
    )
    return (answer.get("images") or [None])[0]


def _add(client: Any, repository: str, image: dict, held: str) -> None:
    """Tag `image` as `held` too: its manifest put again under the new tag."""
    # A new tag is allowed in an IMMUTABLE repository; only moving an existing one is not. Already
    # there: another run marked it between our list and our put, on the same digest, as wanted.
    with contextlib.suppress(client.exceptions.ImageAlreadyExistsException):
        client.put_image(
            repositoryName=repository,
            imageManifest=image["imageManifest"],
            imageManifestMediaType=image.get("imageManifestMediaType") or MEDIA_TYPES[0],
            imageTag=held,
        )


def hold(
    client: Any,
    repository: str,
    environment: str,
    tags: list[str],
    *,
    prefix: str = "held-",
    exclusive: bool = False,
    check_mode: bool = False,
) -> dict[str, Any]:
    """Ensure each image of `tags` carries the environment's mark; with `exclusive`, remove the
    environment's mark from every other image. A mark on another image than its tag names now
    is moved to that image. Returns what was (or would be) added, moved and removed, and the tags
    not in the repository (left unmarked)."""
    if not ENVIRONMENT.match(environment):
        raise HoldError(
            f"environment {environment!r} cannot name ECR marks: use letters, digits and '_' only "
            "(app_env), so that no environment's marks begin with another's"
        )
    wanted = {tag: mark(prefix, environment, tag) for tag in dict.fromkeys(tags)}
    too_long = sorted(held for held in wanted.values() if not TAG.match(held))
    if too_long:
        raise HoldError(
            f"cannot mark {', '.join(too_long)}: not a valid image tag (at most 128 letters, digits, "
            "'_', '.' and '-'); use shorter image tags"
        )
    tags = _tags(client, repository)
    start = mark(prefix, environment, "")
    existing = {tag: digest for tag, digest in tags.items() if tag.startswith(start)}
    added, moved, missing = [], [], []
    for tag, held in wanted.items():
        if tag not in tags:
            missing.append(tag)
            continue
        if existing.get(held) == tags[tag]:
            continue
        if held in existing:
            # The mark names another image than the tag does now: the tag was pushed again after
            # it had been deleted (ECR's tags are immutable, so only so), or locally, where the
            # registry lets a push move a tag. The mark follows the tag; a tag cannot be moved in
            # an immutable repository, so it is removed and made again.
            moved.append(held)
            if not check_mode:
                client.batch_delete_image(repositoryName=repository, imageIds=[{"imageTag": held}])
        image = _image(client, repository, tag)
        if image is None:  # deleted since the listing
            missing.append(tag)
            continue
        if not check_mode:
            _add(client, repository, image, held)
        added.append(tag)
    removed = sorted(held for held in existing if held not in wanted.values()) if exclusive else []
    if removed and not check_mode:
        for first in range(0, len(removed), _DELETE_BATCH):
            batch = removed[first : first + _DELETE_BATCH]
            client.batch_delete_image(repositoryName=repository, imageIds=[{"imageTag": t} for t in batch])
    return {
        "changed": bool(added or removed),
        "added": [wanted[tag] for tag in added],
        "moved": moved,
        "removed": removed,
        "missing": missing,
        "held": sorted(held for tag, held in wanted.items() if tag not in missing),
    }


def unavailable(error: Exception) -> bool:
    """Whether `error` says ECR could not answer (no connection, a server error, throttling),
    rather than refused the request."""
    from botocore.exceptions import ConnectionError as NoConnection
    from botocore.exceptions import HTTPClientError

    if isinstance(error, (NoConnection, HTTPClientError)):
        return True  # no connection, a timeout, a connection closed before the answer
    response = getattr(error, "response", None)
    if response is None:
        return False  # no credentials, no region: settings, not an outage
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    code = response.get("Error", {}).get("Code", "")
    return status >= 500 or code in {"ServerException", "ThrottlingException", "ServiceUnavailable"}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, params = self.validate_argument_spec(argument_spec=_ARGUMENTS)
        try:
            import boto3
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as error:
            raise AnsibleActionFail(f"marking held images needs boto3 on the controller: {error}") from error
        # The environment's AWS settings (AWS_PROFILE, keys, AWS_ENDPOINT_URL), as amazon.aws uses them.
        client = boto3.client("ecr", region_name=params["region"] or None)
        where = f"ECR repository {params['repository']}"
        try:
            outcome = hold(
                client,
                params["repository"],
                params["environment"],
                params["tags"],
                prefix=params["prefix"],
                exclusive=params["exclusive"],
                check_mode=bool(self._task.check_mode),
            )
        except HoldError as error:
            raise AnsibleActionFail(f"{where}: {error}") from error
        except (BotoCoreError, ClientError) as error:
            text = f"{where}: could not mark the images environment {params['environment']} holds: {error}"
            if not unavailable(error):
                raise AnsibleActionFail(text) from error
            # ECR down or throttling (after botocore's retries): the marks protect images from a
            # lifecycle run hours away, and the image just pushed is among the newest the policy
            # keeps anyway, so the deploy goes on (its hosts' pulls say what they meet) and the
            # next one marks what the hosts keep. A refusal (access denied, no such repository)
            # is a setting to fix and fails.
            result.update(
                changed=False, added=[], moved=[], removed=[], missing=[], held=[], unavailable=True
            )
            result.setdefault("warnings", []).append(f"{text}; not marked, the next deploy marks them")
            return result
        result.update(outcome)
        if outcome["missing"]:
            text = (
                f"{where} has no image tagged {', '.join(outcome['missing'])}, which environment "
                f"{params['environment']} needs"
            )
            if params["missing"] == "fail":
                fix = "push it first (buildspec.yml), or deploy a tag that is there"
                result.update(failed=True, msg=f"{text}: {fix}")
            else:
                # A release a host keeps whose image has gone: the host still runs it, but an
                # instance that replaces this one could not pull it.
                result.setdefault("warnings", []).append(f"{text}; a replaced instance could not pull it")
        return result
