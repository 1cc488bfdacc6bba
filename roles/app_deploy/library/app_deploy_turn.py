#!/usr/bin/python
# Copyright: deploykit
# MIT License (see the role's meta/main.yml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_deploy_turn
short_description: Switch a host to a new release of the app, in one module run
description:
  - One host's turn in a rollout, in the order of a rollout - remove the app's containers left
    over from earlier runs, start the new release beside the serving one, wait until it answers
    its readiness probe through its own unix socket, point nginx's upstream link at that socket,
    write the host's release state, wait for the connections to the old release to finish, stop
    and remove the old release, record the deploy in the app's own history, and remove what no
    kept release needs (as the role's module C(app_deploy_prune) does, with the same code).
  - The same work takes about ten module runs with M(community.docker.docker_container),
    M(ansible.builtin.file), M(ansible.builtin.uri), M(ansible.builtin.command) and
    M(community.docker.docker_container_exec); each costs a few hundred milliseconds of CPU on the
    controller and the host, which bounds how many hosts one controller deploys. This module
    exists for that.
  - The switch renames a new symlink over I(upstream_link) (one rename(2)). nginx resolves the
    link for every new connection, so once any request has reached the new release no later
    connection reaches the old one.
  - Until the link has moved, a failure removes the new release (container, socket directory and,
    unless I(keep_env_file), its environment file) and leaves the old one serving. After it, only
    the record can fail the turn; a failure to stop the old release is a warning (it serves nobody,
    and the role removes such containers on its next run).
  - Talks to Docker with the C(docker) command line client. The environment file is handed to
    C(docker run --env-file); no value of it passes through the module's arguments or result.
  - Every failure returns C(failed), C(stage) (C(leftovers), C(start), C(gate), C(switch) or
    C(record)) and C(msg), the reason.
  - Does not support check mode; the role does not call it in one.
options:
  leftovers:
    description: Containers of the app that serve nobody, removed before the new release starts.
    type: list
    elements: str
    default: []
  name:
    description: Name of the new release's container.
    type: str
    required: true
  image:
    description: The image (its ID) the new release runs.
    type: str
    required: true
  env_file:
    description: The release's environment file on the host.
    type: path
    required: true
  keep_env_file:
    description: Keep I(env_file) when the release does not become ready (a rollback may need it).
    type: bool
    default: false
  env:
    description: More environment variables (not secrets; they appear in the container's configuration).
    type: dict
    default: {}
  socket_root:
    description: The directory of the releases' socket directories, made as root, mode 0755.
    type: path
    required: true
  socket_dir:
    description: The new release's socket directory on the host, owned by I(user), mode 0755.
    type: path
    required: true
  container_socket:
    description:
      - Path of the release's socket inside the container; I(socket_dir) is mounted on its directory.
    type: path
    required: true
  user:
    description: C(uid:gid) the container runs as; it owns I(socket_dir).
    type: str
    required: true
  memory:
    description: Memory limit (C(docker run --memory)).
    type: str
    required: true
  cpus:
    description: CPU quota (C(docker run --cpus)).
    type: float
    required: true
  pids_limit:
    description: Process limit (C(docker run --pids-limit)).
    type: int
    required: true
  tmpfs:
    description: Options of the tmpfs mounted at C(/tmp).
    type: str
    required: true
  stop_timeout:
    description: Seconds a stop waits before SIGKILL.
    type: int
    required: true
  log_driver:
    description: Logging driver; empty uses the daemon's.
    type: str
    default: ""
  log_options:
    description: Options of I(log_driver).
    type: dict
    default: {}
  labels:
    description: Labels of the container.
    type: dict
    default: {}
  readiness_path:
    description: Path of the readiness probe.
    type: str
    required: true
  readiness_host:
    description: Host header of the readiness probe.
    type: str
    required: true
  readiness_retries:
    description: With I(readiness_delay), how long the release may take to become ready - at most
      I(readiness_retries) times I(readiness_delay) seconds after the first probe.
    type: int
    required: true
  readiness_delay:
    description: The longest pause between two probes; the first pauses are shorter (50 ms, then
      doubling), so a release that is ready sooner is switched sooner.
    type: float
    required: true
  readiness_timeout:
    description: Seconds one probe may take.
    type: float
    required: true
  failure_log_lines:
    description: Lines of the new release's log returned when it does not become ready.
    type: int
    default: 30
  upstream_link:
    description: The symlink nginx connects to.
    type: path
    required: true
  state_file:
    description: The host's release state file, replaced by I(state) once the link has moved.
    type: path
    required: true
  state:
    description: The host's release state after the switch (JSON).
    type: dict
    required: true
  old_name:
    description: The serving release's container; empty when none serves.
    type: str
    default: ""
  old_socket_dir:
    description: The serving release's socket directory on the host; empty when none serves.
    type: str
    default: ""
  drain_seconds:
    description: Seconds at most to wait for the connections to the old release to finish.
    type: float
    required: true
  record_command:
    description: Command run inside the new release once it serves (its deploy history); empty runs none.
    type: list
    elements: str
    default: []
  prune_repository:
    description:
      - Image repository whose images no kept release uses are removed at the end; empty prunes
        nothing. The kept releases are the I(state)'s C(history).
    type: str
    default: ""
  prune_env_dir:
    description: Directory of the releases' C(*.env) files, pruned with the images.
    type: path
    default: ""
  prune_label:
    description: Label (C(key=value)) of the app's containers, whose images and sockets are kept.
    type: str
    default: ""
  prune_name_prefix:
    description: What the app's container names start with, before the release ID.
    type: str
    default: ""
author:
  - deploykit
"""

EXAMPLES = r"""
- name: Start, gate and switch to the new release
  app_deploy_turn:
    name: app-3f2c1e9d8b7a
    image: sha256:0f3b...
    env_file: /etc/deploykit/app/3f2c1e9d8b7a.env
    socket_root: /var/lib/deploykit/app/sockets
    socket_dir: /var/lib/deploykit/app/sockets/3f2c1e9d8b7a
    container_socket: /run/app/app.sock
    user: "10001:10001"
    memory: 512m
    cpus: 1.0
    pids_limit: 256
    tmpfs: rw,noexec,nosuid,nodev,size=64m
    stop_timeout: 30
    readiness_path: /readyz/
    readiness_host: localhost
    readiness_retries: 30
    readiness_delay: 1
    readiness_timeout: 5
    upstream_link: /var/lib/deploykit/upstream.sock
    state_file: /var/lib/deploykit/app/state.json
    state: {app: app, current: {release: 3f2c1e9d8b7a}}
    old_name: app-0a1b2c3d4e5f
    old_socket_dir: /var/lib/deploykit/app/sockets/0a1b2c3d4e5f
    drain_seconds: 5
    record_command: [python, manage.py, record_deploy, --host, web-1]
  register: turn
"""

RETURN = r"""
stage:
  description: The step that failed (C(leftovers), C(start), C(gate), C(switch) or C(record)).
  returned: failure
  type: str
log_lines:
  description: The last lines of the new release's log.
  returned: when the new release did not become ready
  type: list
timings:
  description:
    - Seconds each step took (C(start), C(gate), C(switch), C(drain), C(stop old), C(record), C(prune)).
  returned: always
  type: dict
stdout_lines:
  description: The timings as C(<step>: <seconds> s) lines (what the deploy_timeline callback reads).
  returned: always
  type: list
open_connections:
  description: Connections to the old release still open when the drain ended.
  returned: success
  type: int
recorded:
  description: What I(record_command) printed.
  returned: success
  type: str
removed:
  description: What the prune removed - C(images) (tags), C(env_files), C(socket_dirs).
  returned: when I(prune_repository) is set and the turn succeeded
  type: dict
"""

import contextlib
import grp
import http.client
import json
import os
import pwd
import shutil
import socket
import tempfile
import time

from ansible.module_utils.app_deploy_prune import prune
from ansible.module_utils.basic import AnsibleModule

# Flags of a listening unix socket in /proc/net/unix: that socket is no connection.
_LISTENING = "00010000"


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: the standard library has no such client."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class Turn:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params
        self.docker = module.get_bin_path("docker", required=True)
        self.timings: dict[str, float] = {}
        self.result: dict = {"changed": False}

    def _docker(self, *args: str) -> tuple[int, str, str]:
        return self.module.run_command([self.docker, *args])

    def _timed(self, step: str, started: float) -> None:
        self.timings[step] = round(time.monotonic() - started, 3)

    def fail(self, stage: str, msg: str, **extra) -> None:
        self.module.fail_json(msg=msg, stage=stage, **self._timing_result(), **self.result, **extra)

    def _timing_result(self) -> dict:
        return {
            "timings": self.timings,
            "stdout_lines": [f"{step}: {seconds:.3f} s" for step, seconds in self.timings.items()],
        }

    def remove_leftovers(self) -> None:
        for name in self.params["leftovers"]:
            self._stop_and_remove(name, stage="leftovers")

    def _stop_and_remove(self, name: str, stage: str = "") -> str:
        """Stop (gracefully) and remove a container; the error, or "" when it went or was gone."""
        rc, _, err = self._docker("container", "stop", "--time", str(self.params["stop_timeout"]), name)
        if rc == 0 or "No such container" in err:
            rc, _, err = self._docker("container", "rm", "--force", name)
        if rc != 0 and "No such container" not in err:
            if stage:
                self.result["changed"] = True
                self.fail(stage, f"could not remove the container {name}: {err.strip()}")
            return err.strip()
        self.result["changed"] = True
        return ""

    def _ids(self, user: str) -> tuple[int, int]:
        uid, _, gid = user.partition(":")
        resolved_uid = int(uid) if uid.isdigit() else pwd.getpwnam(uid).pw_uid
        if not gid:
            return resolved_uid, pwd.getpwuid(resolved_uid).pw_gid
        return resolved_uid, int(gid) if gid.isdigit() else grp.getgrnam(gid).gr_gid

    def _directory(self, path: str, uid: int, gid: int) -> None:
        # One at a time, as root first: os.makedirs would leave parents to the umask, and the
        # release's directory must be the container user's alone.
        os.makedirs(path, mode=0o755, exist_ok=True)
        os.chown(path, uid, gid)
        # nginx, another user, must reach the socket inside; only the owner writes.
        os.chmod(path, 0o755)  # noqa: S103

    def start(self) -> None:
        params = self.params
        started = time.monotonic()
        try:
            self._directory(params["socket_root"], 0, 0)
            self._directory(params["socket_dir"], *self._ids(params["user"]))
        except (OSError, KeyError) as error:
            directory = params["socket_dir"]
            self._abandon("start", f"could not make the release's socket directory {directory}: {error}")
        command = [
            "run", "--detach", "--name", params["name"],
            "--env-file", params["env_file"],
            "--volume", f"{params['socket_dir']}:{os.path.dirname(params['container_socket'])}:rw",
            "--user", params["user"],
            "--read-only",
            "--tmpfs", f"/tmp:{params['tmpfs']}",
            "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges:true",
            "--memory", params["memory"],
            "--cpus", str(params["cpus"]),
            "--pids-limit", str(params["pids_limit"]),
            "--restart", "unless-stopped",
            "--stop-timeout", str(params["stop_timeout"]),
        ]  # fmt: skip
        for key, value in sorted(params["env"].items()):
            command += ["--env", f"{key}={value}"]
        if params["log_driver"]:
            command += ["--log-driver", params["log_driver"]]
            for key, value in sorted(params["log_options"].items()):
                command += ["--log-opt", f"{key}={value}"]
        for key, value in sorted(params["labels"].items()):
            command += ["--label", f"{key}={value}"]
        rc, _, err = self._docker(*command, params["image"])
        self.result["changed"] = True
        self._timed("start", started)
        if rc != 0:
            self._abandon("start", f"the container did not start or did not answer: {err.strip()}")

    def _probe(self) -> tuple[int, str]:
        """The readiness probe's status (0 without an answer) and body, or the error."""
        params = self.params
        socket_path = os.path.join(params["socket_dir"], os.path.basename(params["container_socket"]))
        connection = _UnixConnection(socket_path, params["readiness_timeout"])
        try:
            connection.request(
                "GET",
                params["readiness_path"],
                headers={"Host": params["readiness_host"], "User-Agent": "deploykit-app-deploy"},
            )
            response = connection.getresponse()
            return response.status, response.read(4096).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as error:
            return 0, str(error) or type(error).__name__
        finally:
            connection.close()

    def gate(self) -> None:
        params = self.params
        started = time.monotonic()
        delay = params["readiness_delay"]
        deadline = started + params["readiness_retries"] * delay
        # Asked again soon, then less often: a release that is ready in 300 ms is switched then,
        # not at the next whole delay, and one that takes its time is not asked 20 times a second.
        pause = min(0.05, delay)
        status, body = self._probe()
        while status != 200 and time.monotonic() < deadline:
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            status, body = self._probe()
            pause = min(pause * 2, delay)
        self._timed("gate", started)
        if status == 200:
            return
        if status > 0:
            try:
                reason = json.loads(body).get("reason")
            except (ValueError, AttributeError):
                reason = None
            if not reason:
                reason = body if len(body) <= 300 else body[:297] + "..."
            self._abandon("gate", f"HTTP {status} from {params['readiness_path']}: {reason}")
        self._abandon("gate", f"the container did not start or did not answer: {body}")

    def _abandon(self, stage: str, reason: str) -> None:
        """Remove the new release, which never served, and fail; the old one keeps serving."""
        params = self.params
        extra = {}
        if stage in ("start", "gate"):
            rc, out, err = self._docker("logs", "--tail", str(params["failure_log_lines"]), params["name"])
            extra["log_lines"] = (out + err).splitlines() if rc == 0 else []
        self._stop_and_remove(params["name"])
        shutil.rmtree(params["socket_dir"], ignore_errors=True)
        if not params["keep_env_file"] and stage in ("start", "gate"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(params["env_file"])
        self.fail(stage, reason, **extra)

    def switch(self) -> None:
        """Point the link at the new release and write the state."""
        params = self.params
        started = time.monotonic()
        link = params["upstream_link"]
        socket_path = os.path.join(params["socket_dir"], os.path.basename(params["container_socket"]))
        staged = f"{link}.new.{os.getpid()}"
        try:
            os.symlink(socket_path, staged)
            os.rename(staged, link)
        except OSError as error:
            with_link = os.path.lexists(staged)
            if with_link:
                os.remove(staged)
            self._abandon("switch", f"could not point {link} at {socket_path}: {error}")
        directory = os.path.dirname(params["state_file"])
        try:
            os.makedirs(directory, exist_ok=True)
            prefix = os.path.basename(params["state_file"]) + ".new."
            handle, staged_state = tempfile.mkstemp(prefix=prefix, dir=directory)
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(params["state"], file, indent=4, sort_keys=True)
                file.write("\n")
            os.chmod(staged_state, 0o644)
            os.replace(staged_state, params["state_file"])
        except OSError as error:
            self.module.warn(f"could not write {params['state_file']}: {error}")
        self._timed("switch", started)

    def _connections(self) -> set[str]:
        """The connections to a release's socket made from this network namespace (nginx's, the
        host's), accepted or still queued, by their kernel address. A connection to a unix socket
        is listed in the namespace of the side that connected, under the path the release bound,
        which is the same for every release; so which ones are the old release's is told by time."""
        path = self.params["container_socket"]
        try:
            with open("/proc/net/unix", encoding="utf-8") as table:
                rows = [line.split() for line in table.readlines()[1:]]
        except OSError:
            return set()
        return {row[0] for row in rows if len(row) >= 8 and row[-1] == path and row[3] != _LISTENING}

    def drain_and_stop_old(self) -> None:
        params = self.params
        started = time.monotonic()
        left: set[str] = set()
        if params["old_name"]:
            # Every connection listed now was made before the switch (a connect() that had already
            # found the old socket when the link moved lists itself within microseconds; 20 ms is
            # a wide margin), so it is the old release's; one made later to the new release may
            # be counted too, which only makes the drain wait for it as well.
            time.sleep(0.02)
            left = self._connections()
            deadline = started + params["drain_seconds"]
            # A kernel that hides its addresses from this process (kernel.kptr_restrict) lists
            # them all as 0: then every connection to a release counts, old or new.
            hidden = any(int(address.rstrip(":"), 16) == 0 for address in left)
            while left and time.monotonic() < deadline:
                time.sleep(0.05)
                left = self._connections() if hidden else left & self._connections()
        self.result["open_connections"] = len(left)
        self._timed("drain", started)
        if not params["old_name"]:
            return
        started = time.monotonic()
        error = self._stop_and_remove(params["old_name"])
        if error:
            self.module.warn(
                f"could not stop and remove the old release {params['old_name']} "
                f"(it serves nobody; the next run removes it): {error}"
            )
        if params["old_socket_dir"]:
            shutil.rmtree(params["old_socket_dir"], ignore_errors=True)
        self._timed("stop old", started)

    def record(self) -> None:
        command = self.params["record_command"]
        if not command:
            return
        started = time.monotonic()
        rc, out, err = self._docker("exec", self.params["name"], *command)
        self._timed("record", started)
        if rc != 0:
            self.fail(
                "record",
                f"the new release serves, but recording the deploy in its history failed "
                f"(exit {rc}): {(err or out).strip()[-1000:]}",
            )
        self.result["recorded"] = out.strip()

    def prune(self) -> None:
        params = self.params
        if not params["prune_repository"]:
            return
        started = time.monotonic()
        self.result["removed"] = prune(
            self.module,
            label=params["prune_label"],
            name_prefix=params["prune_name_prefix"],
            repository=params["prune_repository"],
            env_dir=params["prune_env_dir"],
            socket_dir=params["socket_root"],
            kept_releases=params["state"].get("history", []),
        )
        self._timed("prune", started)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "leftovers": {"type": "list", "elements": "str", "default": []},
            "name": {"type": "str", "required": True},
            "image": {"type": "str", "required": True},
            "env_file": {"type": "path", "required": True},
            "keep_env_file": {"type": "bool", "default": False},
            "env": {"type": "dict", "default": {}},
            "socket_root": {"type": "path", "required": True},
            "socket_dir": {"type": "path", "required": True},
            "container_socket": {"type": "path", "required": True},
            "user": {"type": "str", "required": True},
            "memory": {"type": "str", "required": True},
            "cpus": {"type": "float", "required": True},
            "pids_limit": {"type": "int", "required": True},
            "tmpfs": {"type": "str", "required": True},
            "stop_timeout": {"type": "int", "required": True},
            "log_driver": {"type": "str", "default": ""},
            "log_options": {"type": "dict", "default": {}},
            "labels": {"type": "dict", "default": {}},
            "readiness_path": {"type": "str", "required": True},
            "readiness_host": {"type": "str", "required": True},
            "readiness_retries": {"type": "int", "required": True},
            "readiness_delay": {"type": "float", "required": True},
            "readiness_timeout": {"type": "float", "required": True},
            "failure_log_lines": {"type": "int", "default": 30},
            "upstream_link": {"type": "path", "required": True},
            "state_file": {"type": "path", "required": True},
            "state": {"type": "dict", "required": True},
            "old_name": {"type": "str", "default": ""},
            "old_socket_dir": {"type": "str", "default": ""},
            "drain_seconds": {"type": "float", "required": True},
            "record_command": {"type": "list", "elements": "str", "default": []},
            "prune_repository": {"type": "str", "default": ""},
            "prune_env_dir": {"type": "path", "default": ""},
            "prune_label": {"type": "str", "default": ""},
            "prune_name_prefix": {"type": "str", "default": ""},
        },
        supports_check_mode=False,
    )
    turn = Turn(module)
    turn.remove_leftovers()
    turn.start()
    turn.gate()
    turn.switch()
    turn.drain_and_stop_old()
    turn.record()
    turn.prune()
    module.exit_json(**turn.result, **turn._timing_result())


if __name__ == "__main__":
    main()
