#!/usr/bin/python
# Copyright: deploykit
# MIT License (see the role's meta/main.yml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_deploy_host_info
short_description: Read what the app runs on a host, in one call
description:
  - Returns what app_deploy decides from on a host, read in a single module run - where nginx's
    upstream socket link points, the release state file, the app's containers, the local ID of
    one image, extra files a playbook keeps, and one HTTP probe.
  - The same facts come from M(ansible.builtin.slurp), M(community.docker.docker_host_info),
    M(community.docker.docker_image_info), M(ansible.builtin.find) and M(ansible.builtin.uri),
    one module run each; a rollout reads every host before it changes one, and on a small
    controller each module run costs a few hundred milliseconds per host, so this module exists
    for speed only.
  - Talks to Docker with the C(docker) command line client, so a host without Docker (or whose
    engine does not answer) is reported with C(engine.ready=false) rather than failing.
  - Changes nothing; supports check mode.
options:
  upstream_socket:
    description: The symlink nginx connects to; its target is the serving release's socket.
    type: path
    required: true
  state_file:
    description: The release state file (JSON).
    type: path
    required: true
  label:
    description: Label (C(key=value)) that the app's containers carry.
    type: str
    required: true
  image:
    description: Image (C(repository:tag)) whose local ID is returned as C(image_id); empty looks up none.
    type: str
    default: ""
  extra_files:
    description: More text files to read; each one's content, or null when it is absent.
    type: list
    elements: path
    default: []
  probe_url:
    description: URL fetched from the host (for example the app through nginx); empty fetches none.
    type: str
    default: ""
  probe_host:
    description: Host header of the probe.
    type: str
    default: localhost
  probe_timeout:
    description: Seconds the probe may take.
    type: int
    default: 5
author:
  - deploykit
"""

EXAMPLES = r"""
- name: Read what the app runs on the host
  app_deploy_host_info:
    upstream_socket: /var/lib/deploykit/upstream.sock
    state_file: /var/lib/deploykit/app/state.json
    label: org.deploykit.app=app
    image: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:3f2c1e9d8b7a
  register: host_info
"""

RETURN = r"""
engine:
  description: Whether the Docker engine answered, and the error when it did not.
  returned: always
  type: dict
upstream:
  description: The target of the I(upstream_socket) link, or null when there is no such link.
  returned: always
  type: str
state:
  description: The state file's content, or null when it is absent.
  returned: always
  type: dict
containers:
  description:
    - The app's containers, running or not, shaped like the verbose container listing of
      M(community.docker.docker_host_info) (C(Names), C(State), C(ImageID), C(Labels)), plus
      C(Health) (the image's health check verdict, empty without one) and C(StartedAt).
  returned: always
  type: list
image_id:
  description: Local ID of I(image), or an empty string when it is not on the host.
  returned: always
  type: str
files:
  description: Each of I(extra_files) mapped to its content, or null when it is absent.
  returned: always
  type: dict
probe:
  description: The probe's C(status) (0 when it got no answer), C(body) and C(json) (null when not JSON).
  returned: when I(probe_url) is set
  type: dict
"""

import json
import os
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except FileNotFoundError:
        return None


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except (FileNotFoundError, OSError):
        return None


def _docker(module: AnsibleModule, *args: str) -> tuple[int, str, str]:
    return module.run_command([module.get_bin_path("docker") or "docker", *args])


def _containers(module: AnsibleModule, label: str) -> tuple[list[dict], str]:
    rc, out, err = _docker(module, "ps", "--all", "--quiet", "--no-trunc", "--filter", f"label={label}")
    if rc != 0:
        return [], err.strip() or out.strip()
    ids = out.split()
    if not ids:
        return [], ""
    rc, out, err = _docker(module, "container", "inspect", *ids)
    # A container removed between the two calls makes inspect exit 1 but print the others.
    listed = []
    for data in json.loads(out or "[]"):
        listed.append(
            {
                "Id": data["Id"],
                "Names": [data["Name"]],
                "State": data["State"]["Status"],
                # The image's HEALTHCHECK verdict (healthy, unhealthy, starting); "" without one.
                "Health": (data["State"].get("Health") or {}).get("Status", ""),
                "StartedAt": data["State"].get("StartedAt", ""),
                "ImageID": data["Image"],
                "Labels": data["Config"].get("Labels") or {},
            }
        )
    return listed, ""


def _probe(url: str, host: str, timeout: int) -> dict:
    # No proxy: the probe is for the host itself.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Host": host, "User-Agent": "deploykit-app-deploy"})
    try:
        with opener.open(request, timeout=timeout) as response:
            status, body = response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as error:
        return {"status": 0, "body": str(error), "json": None}
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    return {"status": status, "body": body[:2000], "json": parsed}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "upstream_socket": {"type": "path", "required": True},
            "state_file": {"type": "path", "required": True},
            "label": {"type": "str", "required": True},
            "image": {"type": "str", "default": ""},
            "extra_files": {"type": "list", "elements": "path", "default": []},
            "probe_url": {"type": "str", "default": ""},
            "probe_host": {"type": "str", "default": "localhost"},
            "probe_timeout": {"type": "int", "default": 5},
        },
        supports_check_mode=True,
    )
    params = module.params
    state_text = _read(params["state_file"])
    try:
        state = json.loads(state_text) if state_text else None
    except ValueError as error:
        message = f"{params['state_file']} is not JSON ({error}); restore it, or remove it to start afresh"
        module.fail_json(msg=message)
    result: dict = {
        "changed": False,
        "upstream": _link(params["upstream_socket"]),
        "state": state,
        "files": {path: _read(path) for path in params["extra_files"]},
        "containers": [],
        "image_id": "",
    }
    if params["probe_url"]:
        result["probe"] = _probe(params["probe_url"], params["probe_host"], params["probe_timeout"])
    if module.get_bin_path("docker") is None:
        result["engine"] = {"ready": False, "msg": "no docker command on the host"}
        module.exit_json(**result)
    containers, error = _containers(module, params["label"])
    result["engine"] = {"ready": not error, "msg": error}
    if error:
        module.exit_json(**result)
    result["containers"] = containers
    if params["image"]:
        rc, out, _ = _docker(module, "image", "inspect", "--format", "{{.Id}}", params["image"])
        result["image_id"] = out.strip() if rc == 0 else ""
    module.exit_json(**result)


if __name__ == "__main__":
    main()
