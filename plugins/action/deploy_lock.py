"""Action plugin: the deploy lock (see plugins/modules/deploy_lock.py for its options).

Runs on the controller, in the worker process: the lock is an SSM parameter, never anything on a
host, and done in-process it costs the two or three API calls it makes rather than a module run
(a Python interpreter, the amazon.aws module_utils compiled from the module's zip, a new boto3
client), which every deploy would pay before its first host is touched.
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
import shlex
import socket
import sys

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

_ARGUMENTS = {
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "choices": ["acquired", "released"], "default": "acquired"},
    "run_id": {"type": "str", "required": True},
    "holder": {"type": "str", "default": ""},
    "details": {"type": "dict", "default": {}},
    "force": {"type": "bool", "default": False},
    "stale_after_minutes": {"type": "int", "default": 90},
    "region": {"type": "str", "aliases": ["aws_region", "ec2_region"]},
}

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def controller() -> dict:
    """Who and where this run is: the user, the machine, and the ansible-playbook process (the
    deploy_lock callback sets DEPLOYKIT_CONTROLLER_PID in it; this plugin runs in a worker forked
    from it)."""
    return {
        "user": getpass.getuser(),
        "machine": socket.gethostname(),
        "pid": int(os.environ.get("DEPLOYKIT_CONTROLLER_PID") or os.getppid()),
    }


def staleness(lock: dict, stale_after_minutes: int, now: datetime.datetime | None = None) -> str:
    """Why the lock is stale, or "" when its holder may still be deploying."""
    here = controller()
    if lock.get("machine") == here["machine"] and isinstance(lock.get("pid"), int):
        try:
            os.kill(lock["pid"], 0)
        except ProcessLookupError:
            return f"process {lock['pid']} no longer runs on {here['machine']}"
        except PermissionError:
            pass  # it runs, as another user
    try:
        started = datetime.datetime.strptime(lock.get("started_at", ""), _TIME_FORMAT)
    except (TypeError, ValueError):
        return ""
    age = (now or datetime.datetime.now(datetime.UTC)) - started.replace(tzinfo=datetime.UTC)
    if age > datetime.timedelta(minutes=stale_after_minutes):
        minutes = int(age.total_seconds() // 60)
        return f"it was taken {minutes} min ago, more than the {stale_after_minutes} min a deploy may take"
    return ""


def override_command() -> str:
    """The command this run was started with, plus the override: what to type to take the lock over."""
    argv = [os.path.basename(sys.argv[0]) if sys.argv else "ansible-playbook", *sys.argv[1:]]
    return shlex.join([*argv, "-e", "deploy_lock_force=true"])


def refusal(name: str, lock: dict, stale: str = "") -> str:
    where = ", ".join(
        f"{label} {lock[key]}" for key, label in (("user", "user"), ("machine", "on"), ("pid", "process"))
        if lock.get(key) not in (None, "")
    )  # fmt: skip
    what = f"deploying {lock['image_tag']}" if lock.get("image_tag") not in (None, "") else ""
    held = (
        f"deploy lock {name} is held by {lock.get('holder') or 'unknown'}"
        + (f" ({where})" if where else "")
        + f" since {lock.get('started_at') or 'an unknown time'}, run {lock.get('run_id') or 'unknown'}"
        + (f", {what}" if what else "")
        + "."
    )
    if stale:
        return f"{held} It is stale: {stale}. Take it over with: {override_command()}"
    return (
        f"{held} Wait for that deploy to finish. If it ended without releasing the lock (a killed "
        f"controller), take it over with: {override_command()}"
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
            **params["details"],
            **controller(),
            "holder": params["holder"],
            "started_at": datetime.datetime.now(datetime.UTC).strftime(_TIME_FORMAT),
            "run_id": run_id,
        }
        held = self._read(client, name)
        if held is not None and held.get("run_id") == run_id:
            return {"changed": False, "lock": held}
        if held is not None and not params["force"]:
            stale = staleness(held, params["stale_after_minutes"])
            return {"failed": True, "msg": refusal(name, held, stale), "lock": held, "stale": bool(stale)}
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
        # The deploy_lock callback reads where the lock is from this result, to give it back when
        # the run ends: nothing is written on the controller's disk that a killed run could leave.
        return {
            "changed": True,
            "lock": lock,
            "took_over": held,
            "lock_name": name,
            "region": client.meta.region_name,
        }

    def _release(self, client, params: dict) -> dict:
        name, run_id = params["name"], params["run_id"]
        held = self._read(client, name)
        if held is None:
            return {"changed": False, "lock": {}}
        if held.get("run_id") != run_id and not params["force"]:
            return {"failed": True, "msg": f"not releasing {name}: " + refusal(name, held), "lock": held}
        if not self._task.check_mode:
            client.delete_parameter(Name=name)
        return {"changed": True, "lock": held}
