"""Ansible callback: give the deploy lock back when the run ends, however it ends.

A play that fails (a host that does not pass the readiness gate, an unreachable host) stops the
playbook, so a last play cannot be relied on to release the lock. The end-of-run statistics
are reported on success and failure; this plugin releases the lock there, and when the process
exits without them (an error that aborts the run, such as a role that does not parse, or
Ctrl-C). Only a killed controller leaves the lock behind: that is the stale lock that
`-e deploy_lock_force=true` takes over. It also gives
every run an id (DEPLOYKIT_RUN_ID) that the deploy_lock module records, so only the run that
took the lock gives it back.
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
import tempfile
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
        atexit.register(self._release)

    def v2_playbook_on_stats(self, stats) -> None:
        self._release()

    def _release(self) -> None:
        # The marker the deploy_lock action plugin writes: marker_path() in
        # plugins/action/deploy_lock.py (a callback cannot import an action plugin;
        # tests/test_deploy_plugins.py holds the two to the same file).
        marker = os.path.join(tempfile.gettempdir(), f"deploykit-lock-{self.run_id}.json")
        if not os.path.exists(marker):
            return
        with open(marker, encoding="utf-8") as file:
            lock = json.load(file)
        if not HAS_BOTO3:
            self._display.warning(f"boto3 missing: deploy lock {lock['name']} was not released")
            return
        import boto3

        client = boto3.client("ssm", region_name=lock.get("region"))
        try:
            value = json.loads(client.get_parameter(Name=lock["name"])["Parameter"]["Value"])
            if value.get("run_id") == self.run_id:
                client.delete_parameter(Name=lock["name"])
                self._display.display(f"deploy lock {lock['name']} released")
        except client.exceptions.ParameterNotFound:
            pass
        except Exception as error:  # the run's own result matters more than a failed release
            self._display.warning(f"could not release deploy lock {lock['name']}: {error}")
            return
        os.unlink(marker)
