#!/usr/bin/python
"""Ansible module: the webhook of a CodeBuild project, with its filter groups.

Neither amazon.aws nor community.aws (10.x) has a module for CodeBuild webhooks:
community.aws.codebuild_project manages the project only. This one calls CreateWebhook,
UpdateWebhook and DeleteWebhook, and only when the webhook differs from what is asked.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: codebuild_webhook
short_description: Manage the webhook of an AWS CodeBuild project
description:
  - Creates, updates or deletes the webhook that starts builds of a CodeBuild project when the
    source provider (GitHub, GitHub Enterprise, Bitbucket, GitLab) reports an event.
  - The current webhook is read from C(BatchGetProjects) (its C(webhook) field). C(UpdateWebhook) is
    called only when the filter groups or the build type differ, so a second run changes nothing.
  - Filter groups are compared as the API evaluates them. A build starts when all filters of any
    one group match, so the order of groups and of filters within a group does not matter, and an
    absent C(excludeMatchedPattern) means C(false).
  - The webhook's secret, which some providers return on creation, is never returned.
  - The project must exist, and for GitHub the account's source credentials must be imported
    (C(aws codebuild import-source-credentials)) or the project's source must use a connection.
options:
  project_name:
    description: Name of the CodeBuild project.
    type: str
    required: true
  filter_groups:
    description:
      - The webhook's filter groups in the CodeBuild API's C(filterGroups) shape, a list of groups,
        each a list of filters with C(type), C(pattern) and optionally C(excludeMatchedPattern).
      - Each group needs an C(EVENT) filter (the API refuses a group without one).
      - Required when O(state=present).
    type: list
    elements: list
  build_type:
    description: C(BUILD) starts a build, C(BUILD_BATCH) a batch build.
    type: str
    choices: [BUILD, BUILD_BATCH]
    default: BUILD
  state:
    description: C(present) creates or updates the webhook, C(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
author: deploykit
"""

EXAMPLES = r"""
- name: Ensure pushes to main start a build
  codebuild_webhook:
    project_name: deploykit
    filter_groups:
      - - type: EVENT
          pattern: PUSH
        - type: HEAD_REF
          pattern: ^refs/heads/main$
    region: eu-west-1

- name: Ensure the project has no webhook
  codebuild_webhook:
    project_name: deploykit
    state: absent
"""

RETURN = r"""
operation:
  description: The API operation the module called (or would call, in check mode); null when none was needed.
  returned: always
  type: str
  sample: UpdateWebhook
webhook:
  description: The webhook after the call, in the API's shape, without its secret; C({}) when absent.
  returned: always
  type: dict
  sample:
    url: https://api.github.com/repos/example/deploykit/hooks/1
    payloadUrl: https://codebuild.eu-west-1.amazonaws.com/webhooks?t=...
    buildType: BUILD
    filterGroups:
      - - type: EVENT
          pattern: PUSH
          excludeMatchedPattern: false
"""

import contextlib
import datetime
from dataclasses import dataclass, field
from typing import Any

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore itself
    import botocore

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

_FILTER_KEYS = frozenset({"type", "pattern", "excludeMatchedPattern"})
# Fields of the webhook that must never reach a log.
_SECRET_FIELDS = ("secret",)


class WebhookError(Exception):
    """The request cannot be made: bad filter groups, or no such project."""


@dataclass
class Outcome:
    changed: bool
    operation: str | None = None
    webhook: dict[str, Any] = field(default_factory=dict)


def normalize_filter_groups(groups: Any) -> list[list[dict[str, Any]]]:
    """The groups in the API's shape with excludeMatchedPattern explicit; WebhookError if malformed."""
    if not isinstance(groups, list) or not groups:
        raise WebhookError("filter_groups must be a non-empty list of groups")
    normalized = []
    for number, group in enumerate(groups, start=1):
        if not isinstance(group, list) or not group:
            raise WebhookError(f"filter group {number} must be a non-empty list of filters")
        filters = []
        for item in group:
            if not isinstance(item, dict) or not {"type", "pattern"} <= item.keys():
                raise WebhookError(f"filter group {number}: each filter needs a type and a pattern: {item!r}")
            unknown = item.keys() - _FILTER_KEYS
            if unknown:
                raise WebhookError(f"filter group {number}: unknown keys {sorted(unknown)}")
            exclude = item.get("excludeMatchedPattern", False)
            if not isinstance(exclude, bool):
                raise WebhookError(f"filter group {number}: excludeMatchedPattern must be true or false")
            filters.append(
                {"type": str(item["type"]), "pattern": str(item["pattern"]), "excludeMatchedPattern": exclude}
            )
        if not any(item["type"] == "EVENT" for item in filters):
            raise WebhookError(f"filter group {number} has no EVENT filter")
        normalized.append(filters)
    return normalized


def _canonical(groups: list[list[dict[str, Any]]]) -> list[list[tuple[str, str, bool]]]:
    """Order-free form of normalized groups: what decides whether a push starts a build."""
    return sorted(
        sorted((item["type"], item["pattern"], item["excludeMatchedPattern"]) for item in group)
        for group in groups
    )


def public(webhook: dict[str, Any] | None) -> dict[str, Any]:
    """The webhook without its secret, timestamps as ISO 8601 text."""
    return {
        key: value.isoformat() if isinstance(value, datetime.datetime) else value
        for key, value in (webhook or {}).items()
        if key not in _SECRET_FIELDS
    }


def describe_webhook(client, project_name: str) -> dict[str, Any] | None:
    """The project's webhook from BatchGetProjects, None if it has none; WebhookError if no project."""
    projects = client.batch_get_projects(names=[project_name])["projects"]
    if not projects:
        raise WebhookError(f"CodeBuild project {project_name} does not exist")
    return projects[0].get("webhook") or None


def webhook_matches(
    current: dict[str, Any], filter_groups: list[list[dict[str, Any]]], build_type: str
) -> bool:
    try:
        current_groups = normalize_filter_groups(current.get("filterGroups") or [])
    except WebhookError:
        return False  # a webhook without (valid) filter groups is not the one asked for
    same_type = (current.get("buildType") or "BUILD") == build_type
    return same_type and _canonical(current_groups) == _canonical(filter_groups)


def ensure_webhook(
    client,
    project_name: str,
    filter_groups: Any = None,
    build_type: str = "BUILD",
    state: str = "present",
    check_mode: bool = False,
) -> Outcome:
    """Make the project's webhook match; one write call at most, none when it already matches."""
    current = describe_webhook(client, project_name)
    if state == "absent":
        if current is None:
            return Outcome(changed=False)
        if not check_mode:
            client.delete_webhook(projectName=project_name)
        return Outcome(changed=True, operation="DeleteWebhook")

    wanted = normalize_filter_groups(filter_groups)
    if current is not None and webhook_matches(current, wanted, build_type):
        return Outcome(changed=False, webhook=public(current))
    operation = "CreateWebhook" if current is None else "UpdateWebhook"
    settings = {"filterGroups": wanted, "buildType": build_type}
    if check_mode:
        return Outcome(changed=True, operation=operation, webhook=public({**(current or {}), **settings}))
    call = client.create_webhook if current is None else client.update_webhook
    response = call(projectName=project_name, **settings)
    return Outcome(changed=True, operation=operation, webhook=public(response["webhook"]))


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "project_name": {"type": "str", "required": True},
            "filter_groups": {"type": "list", "elements": "list"},
            "build_type": {"type": "str", "choices": ["BUILD", "BUILD_BATCH"], "default": "BUILD"},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        },
        required_if=[("state", "present", ["filter_groups"])],
        supports_check_mode=True,
    )
    client = module.client("codebuild")
    params = module.params
    try:
        outcome = ensure_webhook(
            client,
            params["project_name"],
            filter_groups=params["filter_groups"],
            build_type=params["build_type"],
            state=params["state"],
            check_mode=module.check_mode,
        )
    except WebhookError as error:
        module.fail_json(msg=str(error))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        module.fail_json_aws(
            error, msg=f"could not manage the webhook of CodeBuild project {params['project_name']}"
        )
    module.exit_json(changed=outcome.changed, operation=outcome.operation, webhook=outcome.webhook)


if __name__ == "__main__":
    main()
