#!/usr/bin/python
# Copyright: deploykit
# MIT License (see the role's meta/main.yml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_deploy_prepare
short_description: Prepare a release of the app on a host, in one module run
description:
  - The plan's half of a host's deploy, in the order of a rollout - refuse an environment that an
    env file cannot carry, log in to the registry, check that the disk has room for the pull, pull
    the image, work out the release's identity, and write its environment file (C(0600), root
    only). Nothing that serves changes.
  - The same work took about six module runs (M(community.docker.docker_login), a space check,
    M(community.docker.docker_image_pull), M(ansible.builtin.file) and M(ansible.builtin.template),
    which is three runs); each costs a few hundred milliseconds of CPU on the controller and the
    host, which bounds how many hosts one controller deploys. This module exists for that.
  - The space check is the role's C(module_utils/app_deploy_pull_space.py) - a pull that fills
    the disk fails halfway; the manifest's missing layers are measured first, and a pull that needs
    more than the free space is refused with both figures.
  - A failure returns I(stage) (C(environment), C(login), C(space), C(pull) or C(engine)) and what
    the engine said (I(said), with the password masked); the role words the message once from it.
    Nothing has changed on the host when it fails, but for a registry login.
  - The release is identified as the role always has - the first 12 hex digits of the SHA-256 of
    the JSON of the image ID, the environment's SHA-256 and the container settings (keys sorted) -
    so hosts deployed before this module keep their release identities.
  - Talks to Docker with the C(docker) command line client, as the role's other modules do. The
    login is stored where C(docker login) stores it (root's C(~/.docker/config.json)), which the
    space check's C(docker manifest inspect) and the pull use.
  - Check mode logs in to nothing, pulls nothing and writes nothing; it reports what it would change,
    with the image ID already on the host (C(unknown) when the image is not there yet).
options:
  image:
    description: The release image, C(repository:tag).
    type: str
    required: true
  pull:
    description: Whether to ask the registry for the image (the caller's pull policy) - log in,
      check the space and pull. Without it, I(known_image_id) is the release's image.
    type: bool
    required: true
  known_image_id:
    description: The ID of the image I(image) names on the host, or an empty string.
    type: str
    default: ""
  registry:
    description: The registry to log in to before the pull.
    type: str
    default: ""
  username:
    description: The registry login's user.
    type: str
    default: ""
  password:
    description: The registry login's password or token; empty for no login.
    type: str
    default: ""
  space_factor:
    description: Bytes of free space the pull needs per byte of missing layers to download.
    type: float
    required: true
  env:
    description:
      - The release's environment, names to values, as base64 of its JSON (values are secrets).
      - One opaque string, because AnsibleModule masks every value of a C(no_log) dictionary
        wherever it occurs in the result, and a short value (C(3), C(true)) would garble release
        IDs and messages.
    type: str
    required: true
  ssm_parameters:
    description: Names of I(env) that come from SSM, to their parameters - named in an error.
    type: dict
    default: {}
  container:
    description: The container settings that are part of the release's identity.
    type: dict
    required: true
  env_dir:
    description: Directory of the releases' environment files (made C(0700), root only).
    type: path
    required: true
author:
  - deploykit
"""

EXAMPLES = r"""
- name: Prepare the release on the host
  app_deploy_prepare:
    image: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:3f2c1e9d8b7a
    pull: true
    registry: 123456789012.dkr.ecr.eu-west-1.amazonaws.com
    username: AWS
    password: "{{ ecr_token }}"
    space_factor: 3.5
    env: "{{ {'DJANGO_SETTINGS_MODULE': 'config.settings.production'} | to_json | b64encode }}"
    container: {schema: 3}
    env_dir: /etc/deploykit/app
  no_log: true
  register: prepared
"""

RETURN = r"""
release:
  description: The release's identity (12 hex digits).
  returned: success
  type: str
image_id:
  description: The image's ID on the host (C(unknown) in check mode before the first pull).
  returned: success
  type: str
env_sha256:
  description: SHA-256 of the environment's JSON (keys sorted).
  returned: success
  type: str
env_file:
  description: The release's environment file, I(env_dir)/<release>.env.
  returned: success
  type: str
space:
  description: The space check's figures (root, free_bytes, layers, missing_layers, download_bytes,
    needed_bytes, manifest_error); empty without a pull.
  returned: always
  type: dict
stage:
  description: On failure, the step that failed.
  returned: failure
  type: str
said:
  description: On a login or pull failure, what the Docker client said (the password masked).
  returned: failure
  type: str
"""

import base64
import hashlib
import json
import os
import re
import tempfile

from ansible.module_utils.app_deploy_pull_space import pull_space
from ansible.module_utils.basic import AnsibleModule

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What an env file cannot carry exactly: docker's --env-file parser ends a value at a line break
# and strips whitespace at either end of a line.
_UNFIT = re.compile(r"[\r\n\x00]|^\s|\s$")


def _sha256(value: object) -> str:
    # The JSON Ansible's to_json(sort_keys=true) writes: release identities stay as they were.
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


class Prepare:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params
        self.docker = module.get_bin_path("docker", required=True)
        self.result: dict = {"changed": False, "space": {}}

    def fail(self, stage: str, msg: str, **extra: object) -> None:
        self.module.fail_json(msg=msg, stage=stage, **self.result, **extra)

    def _docker(self, *args: str, data: str | None = None) -> tuple[int, str, str]:
        return self.module.run_command([self.docker, *args], data=data)

    def check_env(self, env: dict[str, str]) -> None:
        bad = [name for name in env if not _NAME.match(name)]
        ssm = self.params["ssm_parameters"]
        unfit = [
            name + (f" (SSM parameter {ssm[name]})" if name in ssm else "")
            for name in sorted(env)
            if _UNFIT.search(env[name])
        ]
        if bad or unfit:
            said = f"Not valid as environment variable names: {', '.join(bad)}. " if bad else ""
            if unfit:
                said += (
                    "Values a container cannot receive exactly (a line break, a NUL, or whitespace at the"
                    f" start or the end; not shown): {', '.join(unfit)}. Store them without it."
                )
            self.fail("environment", said.strip())

    def image_id(self) -> str:
        rc, out, _ = self._docker("image", "inspect", "--format", "{{.Id}}", self.params["image"])
        return out.strip() if rc == 0 else ""

    def fetch(self) -> str:
        """Log in, check the space and pull; the image's ID."""
        params = self.params
        if params["password"] and not self.module.check_mode:
            rc, out, err = self._docker(
                "login",
                "--username",
                params["username"],
                "--password-stdin",
                params["registry"],
                data=params["password"],
            )
            if rc != 0:
                self.fail("login", "the registry login failed", said=(err or out).strip())
        try:
            space = pull_space(self.module.run_command, self.docker, params["image"], params["space_factor"])
        except RuntimeError as error:
            self.fail("engine", str(error))
        self.result["space"] = space
        if space["free_bytes"] < space["needed_bytes"]:
            self.fail("space", "not enough disk space for the pull")
        # The host's read already looked it up, but for the migrate entry point run alone.
        before = params["known_image_id"] or self.image_id()
        if self.module.check_mode:
            return before or "unknown"
        rc, out, err = self._docker("pull", "--quiet", params["image"])
        if rc != 0:
            self.fail("pull", "the pull failed", said=(err or out).strip())
        after = self.image_id()
        self.result["changed"] = after != before
        return after or "unknown"

    def write_env_file(self, path: str, content: str) -> bool:
        """Write the env file atomically, 0600 and root's, unless it already holds `content`."""
        env_dir = self.params["env_dir"]
        changed = False
        if not os.path.isdir(env_dir):
            changed = True
            if not self.module.check_mode:
                os.makedirs(env_dir, mode=0o700)
        if os.path.isdir(env_dir) and os.stat(env_dir).st_mode & 0o777 != 0o700:
            changed = True
            if not self.module.check_mode:
                os.chmod(env_dir, 0o700)
        try:
            with open(path) as handle:
                current = handle.read()
            mode = os.stat(path).st_mode & 0o777
        except OSError:
            current, mode = None, None
        if current == content and mode == 0o600:
            return changed
        if not self.module.check_mode:
            # Written beside its final name and renamed over it: a reader never sees half a file,
            # and the file is 0600 from its first byte (mkstemp).
            handle, temporary = tempfile.mkstemp(dir=env_dir, prefix=".", suffix=".env.tmp")
            try:
                with os.fdopen(handle, "w") as stream:
                    stream.write(content)
                os.replace(temporary, path)
            except OSError:
                os.unlink(temporary)
                raise
        return True

    def run(self) -> None:
        params = self.params
        env = {name: str(value) for name, value in json.loads(base64.b64decode(params["env"])).items()}
        self.check_env(env)
        image_id = self.fetch() if params["pull"] else (params["known_image_id"] or "unknown")
        env_sha256 = _sha256(env)
        release = _sha256({"image_id": image_id, "env_sha256": env_sha256, "container": params["container"]})[
            :12
        ]
        env_file = os.path.join(params["env_dir"], f"{release}.env")
        lines = [
            "# Written by the app_deploy role for every deploy; edits are overwritten.",
            f"# Release {release} ({params['image']}). Secrets: keep 0600, root only.",
            *(f"{name}={env[name]}" for name in sorted(env)),
        ]
        if self.write_env_file(env_file, "\n".join(lines) + "\n"):
            self.result["changed"] = True
        self.result.update(release=release, image_id=image_id, env_sha256=env_sha256, env_file=env_file)
        self.module.exit_json(**self.result)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "image": {"type": "str", "required": True},
            "pull": {"type": "bool", "required": True},
            "known_image_id": {"type": "str", "default": ""},
            "registry": {"type": "str", "default": ""},
            "username": {"type": "str", "default": ""},
            "password": {"type": "str", "default": "", "no_log": True},
            "space_factor": {"type": "float", "required": True},
            "env": {"type": "str", "required": True, "no_log": True},
            "ssm_parameters": {"type": "dict", "default": {}},
            "container": {"type": "dict", "required": True},
            "env_dir": {"type": "path", "required": True},
        },
        supports_check_mode=True,
    )
    Prepare(module).run()


if __name__ == "__main__":
    main()
