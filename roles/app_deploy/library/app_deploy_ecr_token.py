#!/usr/bin/python
# Copyright: deploykit
# MIT License (see the role's meta/main.yml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_deploy_ecr_token
short_description: Get a registry login for Amazon ECR from GetAuthorizationToken
description:
  - Calls ECR's C(GetAuthorizationToken) with boto3 and returns the user name and password that
    C(docker login) takes, plus the registry endpoint and the token's expiry.
  - Meant to run on the controller (C(delegate_to: localhost), C(run_once: true)) so that hosts
    need no AWS credentials of their own; run it with C(no_log: true), the password is a secret.
  - Takes the usual AWS connection options and environment variables, C(AWS_ENDPOINT_URL) included.
options:
  registry_ids:
    description: AWS account IDs of the registries; empty asks for the caller's own registry.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
author:
  - deploykit
"""

EXAMPLES = r"""
- name: Get a registry login from ECR
  app_deploy_ecr_token:
    region: eu-west-1
  delegate_to: localhost
  run_once: true
  no_log: true
  register: ecr_login
"""

RETURN = r"""
username:
  description: User name for C(docker login) (always C(AWS) for ECR).
  returned: success
  type: str
password:
  description: Password for C(docker login); valid for 12 hours.
  returned: success
  type: str
proxy_endpoint:
  description: The registry's address as ECR reports it.
  returned: success
  type: str
expires_at:
  description: When the token expires (ISO 8601).
  returned: success
  type: str
"""

import base64
import contextlib

# AnsibleAWSModule reports a missing botocore itself.
with contextlib.suppress(ImportError):
    import botocore

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={"registry_ids": {"type": "list", "elements": "str", "default": []}},
        supports_check_mode=True,
    )
    ecr = module.client("ecr")
    params = {"registryIds": module.params["registry_ids"]} if module.params["registry_ids"] else {}
    try:
        response = ecr.get_authorization_token(**params)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        module.fail_json_aws(error, msg="ECR GetAuthorizationToken failed")
    data = response["authorizationData"][0]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    expires = data.get("expiresAt")
    module.exit_json(
        changed=False,
        username=username,
        password=password,
        proxy_endpoint=data.get("proxyEndpoint", ""),
        expires_at=expires.isoformat() if hasattr(expires, "isoformat") else str(expires or ""),
    )


if __name__ == "__main__":
    main()
