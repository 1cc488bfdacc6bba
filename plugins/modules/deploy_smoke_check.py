#!/usr/bin/python
# Copyright: deploykit
# MIT License (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deploy_smoke_check
short_description: Ask a host's nginx which release it serves, then record the host's finished deploy
description:
  - Asks I(url) (the host's nginx, with the headers the load balancer sends) until it answers
    HTTP 200 with a JSON document, at most I(retries) times more after the first, I(delay) seconds
    apart. Redirects are not followed - a redirect is an answer that is not the release's.
  - With I(record_path), once the answer came, writes the host's deploy record there - I(record)
    and the C(image) the answer names, as JSON - whole, beside its name and renamed over it, only
    when its content changes. The next deploy's plan trusts this record, so nothing is written
    unless the host answered.
  - One module run where M(ansible.builtin.uri), M(ansible.builtin.file) and
    M(ansible.builtin.copy) took three or four; each costs a few hundred milliseconds of CPU on
    the controller and the host, for every host of a rollout.
  - Supports check mode - it asks, and reports whether the record would change.
options:
  url:
    description: The page that names the release, C(/version.json) through the host's nginx.
    type: str
    required: true
  headers:
    description: Request headers (the public C(Host), C(X-Forwarded-Proto)).
    type: dict
    default: {}
  retries:
    description: Attempts after the first, until HTTP 200.
    type: int
    default: 5
  delay:
    description: Seconds between attempts.
    type: float
    default: 1
  timeout:
    description: Seconds one request may take.
    type: float
    default: 10
  record_path:
    description: Where to write the host's deploy record; empty for none.
    type: path
    default: ""
  record:
    description: What the record holds besides the C(image) the answer names.
    type: dict
    default: {}
author:
  - deploykit
"""

EXAMPLES = r"""
- name: Ask the host's nginx which release it serves and record the deploy
  deploy_smoke_check:
    url: http://127.0.0.1/version.json
    headers: {Host: app.example.com, X-Forwarded-Proto: https}
    record_path: /var/lib/deploykit/deploy.json
    record: {config_sha256: 0f3c9a}
  register: smoke
"""

RETURN = r"""
status:
  description: The last answer's HTTP status (-1 when nothing answered).
  returned: always
  type: int
json:
  description: The answer's JSON document (the release's version, image and commit).
  returned: success
  type: dict
attempts:
  description: How many requests were made.
  returned: always
  type: int
recorded:
  description: Whether the record was written (it changed).
  returned: always
  type: bool
"""

import json
import os
import tempfile
import time
from urllib.error import HTTPError, URLError

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url


def _ask(params: dict) -> tuple[int, str]:
    """The answer's status and body; -1 and the reason when nothing answered."""
    try:
        response = open_url(
            params["url"], headers=params["headers"], timeout=params["timeout"], follow_redirects="none"
        )
        status, body = response.status, response.read()
    except HTTPError as error:
        # Any status but 2xx, a redirect included (redirects are not followed).
        status, body = error.code, error.read()
    except (URLError, OSError) as error:
        return -1, str(getattr(error, "reason", error))
    return status, body.decode("utf-8", "replace")


def _write(path: str, content: str) -> None:
    """The record whole, beside its name and renamed over it: a reader never sees half of it."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(content)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError:
        os.unlink(temporary)
        raise


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "headers": {"type": "dict", "default": {}},
            "retries": {"type": "int", "default": 5},
            "delay": {"type": "float", "default": 1},
            "timeout": {"type": "float", "default": 10},
            "record_path": {"type": "path", "default": ""},
            "record": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    params = module.params
    status, body, answer = -1, "", None
    attempts = 0
    while attempts <= params["retries"]:
        if attempts:
            time.sleep(params["delay"])
        attempts += 1
        status, body = _ask(params)
        if status == 200:
            try:
                answer = json.loads(body)
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                break
    result = {"changed": False, "status": status, "attempts": attempts, "recorded": False}
    if not isinstance(answer, dict):
        said = " ".join(body.split())[:300] or "no body"
        module.fail_json(
            msg=f"{params['url']} did not answer with the release's JSON after {attempts} attempts:"
            f" HTTP {status}: {said}",
            **result,
        )
    result["json"] = answer
    path = params["record_path"]
    if path:
        record = {**params["record"], "image": answer.get("image", "")}
        content = json.dumps(record, indent=4, sort_keys=True) + "\n"
        try:
            with open(path) as handle:
                current = handle.read()
        except OSError:
            current = None
        if current != content:
            if not module.check_mode:
                _write(path, content)
            result.update(changed=True, recorded=True)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
