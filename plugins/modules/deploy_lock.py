#!/usr/bin/python
"""Ansible module: the deploy lock, an SSM parameter that only one deploy can create."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deploy_lock
short_description: Take or release the deploy lock kept in SSM Parameter Store
description:
  - The lock is one SSM parameter per environment. Taking it is C(PutParameter) without overwrite,
    which AWS performs atomically, so two deploys started at once cannot both hold it, whether
    they run in CodeBuild or on a laptop.
  - The value records who holds the lock, since when, and which run, so a refused deploy can say so.
  - On taking the lock, a marker file lets the C(deploy_lock) callback release it when the run ends,
    whether the run succeeded or failed.
options:
  name:
    description: Name of the SSM parameter that is the lock.
    type: str
    required: true
  state:
    description: C(acquired) takes the lock, C(released) gives it back.
    type: str
    choices: [acquired, released]
    default: acquired
  run_id:
    description: Identifies this run; only the run that holds the lock releases it.
    type: str
    required: true
  holder:
    description: Who is deploying (a user, a CodeBuild build id).
    type: str
    default: ""
  details:
    description: Extra facts to record with the lock (the image tag, say).
    type: dict
    default: {}
  force:
    description: Take or release the lock even when another run holds it (a stale lock).
    type: bool
    default: false
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
author: deploykit
"""

EXAMPLES = r"""
- name: Take the deploy lock
  deploy_lock:
    name: /deploykit/production/deploy-lock
    run_id: "{{ lookup('ansible.builtin.env', 'DEPLOYKIT_RUN_ID') }}"
    holder: "{{ lookup('ansible.builtin.env', 'USER') }}"
"""

RETURN = r"""
lock:
  description: The lock's content after the call (or the holder's, when refused).
  returned: always
  type: dict
"""

import contextlib
import datetime
import json
import os
import tempfile

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore itself
    import botocore

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule


def marker_path(run_id: str) -> str:
    """Where the callback looks for the lock this run took (both run on the controller)."""
    return os.path.join(tempfile.gettempdir(), f"deploykit-lock-{run_id}.json")


def read_lock(client, name: str) -> dict | None:
    try:
        value = client.get_parameter(Name=name)["Parameter"]["Value"]
    except client.exceptions.ParameterNotFound:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return {"holder": value, "started_at": "unknown", "run_id": ""}


def refusal(name: str, lock: dict) -> str:
    return (
        f"deploy lock {name} is held by {lock.get('holder') or 'unknown'} since {lock.get('started_at')} "
        f"(run {lock.get('run_id') or 'unknown'}). Wait for that deploy to finish; if it is stale "
        "(its run ended without releasing it), re-run with -e deploy_lock_force=true."
    )


def acquire(module, client, params: dict) -> None:
    name, run_id = params["name"], params["run_id"]
    lock = {
        "holder": params["holder"],
        "started_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run_id": run_id,
        **params["details"],
    }
    held = read_lock(client, name)
    if held is not None and held.get("run_id") == run_id:
        module.exit_json(changed=False, lock=held)
    if held is not None and not params["force"]:
        module.fail_json(msg=refusal(name, held), lock=held)
    if module.check_mode:
        module.exit_json(changed=True, lock=lock)
    try:
        client.put_parameter(
            Name=name,
            Value=json.dumps(lock, sort_keys=True),
            Type="String",
            Overwrite=held is not None,
            Description="deploykit deploy lock: present while a deploy runs",
        )
    except client.exceptions.ParameterAlreadyExists:
        # Another run took it between our read and our write.
        module.fail_json(msg=refusal(name, read_lock(client, name) or {}), lock=read_lock(client, name))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        module.fail_json_aws(error, msg=f"could not take the deploy lock {name}")
    with open(marker_path(run_id), "w", encoding="utf-8") as marker:
        json.dump({"name": name, "region": module.region, "run_id": run_id}, marker)
    module.exit_json(changed=True, lock=lock, took_over=held)


def release(module, client, params: dict) -> None:
    name, run_id = params["name"], params["run_id"]
    held = read_lock(client, name)
    marker = marker_path(run_id)
    if held is None:
        module.exit_json(changed=False, lock={})
    if held.get("run_id") != run_id and not params["force"]:
        module.fail_json(msg=f"not releasing {name}: " + refusal(name, held), lock=held)
    if not module.check_mode:
        client.delete_parameter(Name=name)
        if os.path.exists(marker):
            os.unlink(marker)
    module.exit_json(changed=True, lock=held)


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["acquired", "released"], "default": "acquired"},
            "run_id": {"type": "str", "required": True},
            "holder": {"type": "str", "default": ""},
            "details": {"type": "dict", "default": {}},
            "force": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    if not module.params["run_id"]:
        module.fail_json(
            msg="run_id is empty: enable the deploy_lock callback (ansible.cfg does) or set DEPLOYKIT_RUN_ID"
        )
    client = module.client("ssm")
    if module.params["state"] == "acquired":
        acquire(module, client, module.params)
    release(module, client, module.params)


if __name__ == "__main__":
    main()
