#!/usr/bin/python
"""The deploy lock's documentation: the work is done on the controller by plugins/action/deploy_lock.py."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deploy_lock
short_description: Take or release the deploy lock kept in SSM Parameter Store
description:
  - The lock is one SSM parameter per environment. Taking it is C(PutParameter) without overwrite,
    which AWS performs atomically, so two deploys started at once cannot both hold it, whether
    they run in CodeBuild or on a laptop.
  - The value records who holds the lock (the holder, the user, the machine and the
    C(ansible-playbook) process), since when, which run and what it deploys, so a refused deploy
    can say so. A lock whose process no longer runs on the same machine, or older than
    O(stale_after_minutes), is reported as stale, with the command that takes it over.
  - The C(deploy_lock) callback reads the result of the task that took the lock and releases it
    when the run ends, whether the run succeeded or failed; nothing is written on the controller.
  - An action plugin; it runs on the controller with boto3 and the AWS environment
    (C(AWS_PROFILE), keys, C(AWS_ENDPOINT_URL)), never on a host.
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
  stale_after_minutes:
    description:
      - A lock older than this is reported as stale when it refuses a run (it is never taken over
        without O(force)). The default is longer than the CodeBuild project's timeout (60 min).
    type: int
    default: 90
  region:
    description: The AWS region of the parameter; empty uses the AWS environment or profile.
    type: str
    aliases: [aws_region, ec2_region]
requirements:
  - boto3 (on the controller)
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
