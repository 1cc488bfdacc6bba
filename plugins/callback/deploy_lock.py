"""Ansible callback: give the deploy lock back when the run ends, however it ends.

A play that fails (a host that does not pass the readiness gate, an unreachable host) stops the
playbook, so a last play cannot be relied on to release the lock. The end-of-run statistics
are reported on success and failure; this plugin releases the lock there, and when the process
exits without them (an error that aborts the run, such as a role that does not parse, or
Ctrl-C). Only a killed controller leaves the lock behind: that is the stale lock that
`-e deploy_lock_force=true` takes over (the refusal says when a lock is stale and prints the
command). It also gives every run an id (DEPLOYKIT_RUN_ID) that the deploy_lock module records,
so only the run that took the lock gives it back.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: deploy_lock
type: aggregate
short_description: Release the deploykit deploy lock at the end of a run
description:
  - Sets DEPLOYKIT_RUN_ID for the run, and at the end releases the lock that this run took.
requirements:
  - boto3
"""

import atexit
import json
import os
import uuid

from ansible.plugins.callback import CallbackBase
from ansible_collections.amazon.aws.plugins.module_utils.botocore import HAS_BOTO3


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "deploy_lock"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.run_id = os.environ.setdefault("DEPLOYKIT_RUN_ID", uuid.uuid4().hex)
        # The process the lock names as its holder: this one, ansible-playbook itself (the action
        # plugin runs in a worker forked from it, which inherits the environment).
        os.environ["DEPLOYKIT_CONTROLLER_PID"] = str(os.getpid())
        # The lock this run took, learnt from the result of the task that took it: kept in memory,
        # so a killed run leaves nothing behind on disk for a later run to trip on.
        self.taken: dict[str, str] | None = None
        atexit.register(self._release)

    def v2_runner_on_ok(self, result) -> None:
        taken = result._result
        if (
            result._task.action.split(".")[-1] == "deploy_lock"
            and taken.get("lock_name")
            and taken.get("lock", {}).get("run_id") == self.run_id
        ):
            self.taken = {"name": taken["lock_name"], "region": taken.get("region") or ""}

    def v2_playbook_on_stats(self, stats) -> None:
        self._release()

    def _release(self) -> None:
        lock, self.taken = self.taken, None
        if lock is None:
            return
        if not HAS_BOTO3:
            self._display.warning(f"boto3 missing: deploy lock {lock['name']} was not released")
            return
        import boto3

        client = boto3.client("ssm", region_name=lock["region"] or None)
        try:
            value = json.loads(client.get_parameter(Name=lock["name"])["Parameter"]["Value"])
            if value.get("run_id") == self.run_id:
                client.delete_parameter(Name=lock["name"])
                self._display.display(f"deploy lock {lock['name']} released")
        except client.exceptions.ParameterNotFound:
            pass
        except Exception as error:  # the run's own result matters more than a failed release
            self._display.warning(f"could not release deploy lock {lock['name']}: {error}")
