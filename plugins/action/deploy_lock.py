"""Action plugin: the deploy lock (see plugins/modules/deploy_lock.py for its options).

Runs on the controller, in the worker process: the lock is an SSM parameter, never anything on a
host, and done in-process it costs the two or three API calls it makes rather than a module run
(a Python interpreter, the amazon.aws module_utils compiled from the module's zip, a new boto3
client), which every deploy would pay before its first host is touched.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

_ARGUMENTS = {
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "choices": ["acquired", "released"], "default": "acquired"},
    "run_id": {"type": "str", "required": True},
    "holder": {"type": "str", "default": ""},
    "details": {"type": "dict", "default": {}},
    "force": {"type": "bool", "default": False},
    "region": {"type": "str", "aliases": ["aws_region", "ec2_region"]},
}


def marker_path(run_id: str) -> str:
    """Where the deploy_lock callback looks for the lock this run took (both run on the controller;
    the callback spells the same path out)."""
    return os.path.join(tempfile.gettempdir(), f"deploykit-lock-{run_id}.json")


def refusal(name: str, lock: dict) -> str:
    return (
        f"deploy lock {name} is held by {lock.get('holder') or 'unknown'} since {lock.get('started_at')} "
        f"(run {lock.get('run_id') or 'unknown'}). Wait for that deploy to finish; if it is stale "
        "(its run ended without releasing it), re-run with -e deploy_lock_force=true."
    )


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, params = self.validate_argument_spec(argument_spec=_ARGUMENTS)
        if not params["run_id"]:
            raise AnsibleActionFail(
                "run_id is empty: enable the deploy_lock callback (ansible.cfg does) or set DEPLOYKIT_RUN_ID"
            )
        try:
            import boto3
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as error:
            raise AnsibleActionFail(f"the deploy lock needs boto3 on the controller: {error}") from error
        # The environment's AWS settings (AWS_PROFILE, keys, AWS_ENDPOINT_URL), as amazon.aws uses them.
        client = boto3.client("ssm", region_name=params["region"] or None)
        try:
            if params["state"] == "acquired":
                result.update(self._acquire(client, params))
            else:
                result.update(self._release(client, params))
        except (BotoCoreError, ClientError) as error:
            raise AnsibleActionFail(f"deploy lock {params['name']}: {error}") from error
        return result

    @staticmethod
    def _read(client, name: str) -> dict | None:
        try:
            value = client.get_parameter(Name=name)["Parameter"]["Value"]
        except client.exceptions.ParameterNotFound:
            return None
        try:
            return json.loads(value)
        except ValueError:
            return {"holder": value, "started_at": "unknown", "run_id": ""}

    def _acquire(self, client, params: dict) -> dict:
        name, run_id = params["name"], params["run_id"]
        lock = {
            "holder": params["holder"],
            "started_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "run_id": run_id,
            **params["details"],
        }
        held = self._read(client, name)
        if held is not None and held.get("run_id") == run_id:
            return {"changed": False, "lock": held}
        if held is not None and not params["force"]:
            return {"failed": True, "msg": refusal(name, held), "lock": held}
        if self._task.check_mode:
            return {"changed": True, "lock": lock}
        try:
            # PutParameter without Overwrite creates the parameter or fails, atomically.
            client.put_parameter(
                Name=name,
                Value=json.dumps(lock, sort_keys=True),
                Type="String",
                Overwrite=held is not None,
                Description="deploykit deploy lock: present while a deploy runs",
            )
        except client.exceptions.ParameterAlreadyExists:
            # Another run took it between our read and our write.
            now_held = self._read(client, name) or {}
            return {"failed": True, "msg": refusal(name, now_held), "lock": now_held}
        with open(marker_path(run_id), "w", encoding="utf-8") as marker:
            json.dump({"name": name, "region": client.meta.region_name, "run_id": run_id}, marker)
        return {"changed": True, "lock": lock, "took_over": held}

    def _release(self, client, params: dict) -> dict:
        name, run_id = params["name"], params["run_id"]
        held = self._read(client, name)
        if held is None:
            return {"changed": False, "lock": {}}
        if held.get("run_id") != run_id and not params["force"]:
            return {"failed": True, "msg": f"not releasing {name}: " + refusal(name, held), "lock": held}
        if not self._task.check_mode:
            client.delete_parameter(Name=name)
            marker = marker_path(run_id)
            if os.path.exists(marker):
                os.unlink(marker)
        return {"changed": True, "lock": held}
