#!/usr/bin/python
"""Ansible module: the concurrent build limit of a CodeBuild project.

community.aws.codebuild_project (10.x) has no option for C(concurrentBuildLimit); this module reads
the project with BatchGetProjects and calls UpdateProject with that one field, only when it differs.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: codebuild_build_limit
short_description: Set how many builds of an AWS CodeBuild project may run at once
description:
  - Sets the C(concurrentBuildLimit) of an existing CodeBuild project. A start of a build beyond
    the limit is queued by CodeBuild, not run beside the others.
  - The current limit is read from C(BatchGetProjects); C(UpdateProject) is called with the project's
    name and the limit alone, and only when the limit differs, so a second run changes nothing and
    no other setting of the project is touched.
options:
  project_name:
    description: Name of the CodeBuild project.
    type: str
    required: true
  limit:
    description:
      - The most builds of the project that run at once, 1 or more; null removes the limit (the
        account's own concurrency limit then applies).
    type: int
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
author: deploykit
"""

EXAMPLES = r"""
- name: Ensure one build of the project runs at a time
  codebuild_build_limit:
    project_name: deploykit-deploy
    limit: 1
    region: eu-west-1
"""

RETURN = r"""
limit:
  description: The project's concurrent build limit after the call; null when it has none.
  returned: always
  type: int
  sample: 1
previous:
  description: The limit before the call; null when the project had none.
  returned: always
  type: int
  sample: null
"""

import contextlib
from typing import Any

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore itself
    import botocore

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule


class BuildLimitError(Exception):
    """The request cannot be made: no such project, or a limit below 1."""


def current_limit(client: Any, project_name: str) -> int | None:
    """The project's concurrentBuildLimit (None when unset); BuildLimitError when there is no project."""
    projects = client.batch_get_projects(names=[project_name]).get("projects", [])
    if not projects:
        raise BuildLimitError(f"CodeBuild project {project_name} does not exist; create it first")
    return projects[0].get("concurrentBuildLimit")


def ensure_limit(
    client: Any, project_name: str, limit: int | None, *, check_mode: bool
) -> tuple[bool, int | None]:
    """Set the limit when it differs; return (changed, the limit before)."""
    if limit is not None and limit < 1:
        raise BuildLimitError(f"limit must be 1 or more (or null for none), not {limit}")
    previous = current_limit(client, project_name)
    if previous == limit:
        return False, previous
    if not check_mode:
        # -1 is the API's way to remove the limit (UpdateProject's concurrentBuildLimit).
        client.update_project(name=project_name, concurrentBuildLimit=-1 if limit is None else limit)
    return True, previous


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "project_name": {"type": "str", "required": True},
            "limit": {"type": "int"},
        },
        supports_check_mode=True,
    )
    client = module.client("codebuild")
    params = module.params
    try:
        changed, previous = ensure_limit(
            client, params["project_name"], params["limit"], check_mode=module.check_mode
        )
    except BuildLimitError as error:
        module.fail_json(msg=str(error))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        module.fail_json_aws(
            error,
            msg=f"could not set the concurrent build limit of CodeBuild project {params['project_name']}",
        )
    module.exit_json(changed=changed, limit=params["limit"], previous=previous)


if __name__ == "__main__":
    main()
