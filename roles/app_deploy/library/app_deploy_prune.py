#!/usr/bin/python
# Copyright: deploykit
# MIT License (see the role's meta/main.yml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_deploy_prune
short_description: Remove the images, environment files and socket directories no kept release needs
description:
  - Keeps the images and environment files of I(kept_releases) and any image a container of the
    app uses; removes the other images of I(repository) (by tag), the other C(*.env) files of
    I(env_dir), and the directories of I(socket_dir) whose release's container is gone.
  - One module run for what M(community.docker.docker_image_remove) and M(ansible.builtin.file)
    would do one item at a time, after a read of the host; the role's module C(app_deploy_turn)
    does the same at the end of a switch, with the same code (the role's C(module_utils)).
  - A removal that fails is a warning; supports check mode (says what it would remove).
options:
  label:
    description: Label (C(key=value)) that the app's containers carry.
    type: str
    required: true
  name_prefix:
    description: What the app's container names start with, before the release ID.
    type: str
    required: true
  repository:
    description: Image repository whose unused images are removed.
    type: str
    required: true
  env_dir:
    description: Directory of the releases' C(*.env) files.
    type: path
    required: true
  socket_dir:
    description: Directory of the releases' socket directories.
    type: path
    required: true
  kept_releases:
    description: The releases kept on the host, each with its C(image_id) and C(env_file).
    type: list
    elements: dict
    required: true
author:
  - deploykit
"""

EXAMPLES = r"""
- name: Remove what the kept releases do not need
  app_deploy_prune:
    label: org.deploykit.app=app
    name_prefix: app-
    repository: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/app
    env_dir: /etc/deploykit/app
    socket_dir: /var/lib/deploykit/app/sockets
    kept_releases: "{{ state['history'] }}"
"""

RETURN = r"""
removed:
  description: What was removed (or would be, in check mode) - C(images) (tags), C(env_files), C(socket_dirs).
  returned: always
  type: dict
"""

from ansible.module_utils.app_deploy_prune import prune
from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "label": {"type": "str", "required": True},
            "name_prefix": {"type": "str", "required": True},
            "repository": {"type": "str", "required": True},
            "env_dir": {"type": "path", "required": True},
            "socket_dir": {"type": "path", "required": True},
            "kept_releases": {"type": "list", "elements": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    removed = prune(module, **module.params)
    module.exit_json(changed=any(removed.values()), removed=removed)


if __name__ == "__main__":
    main()
