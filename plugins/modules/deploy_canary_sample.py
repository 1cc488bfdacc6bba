#!/usr/bin/python
# Copyright: deploykit
# MIT License (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deploy_canary_sample
short_description: Count a host's requests, server errors and response times from its nginx access log
description:
  - Reads the host's nginx access log (edge_proxy's C(deploykit_json) format, one JSON object per
    request) from its end back to the start of a window, and counts the requests that users made
    in that window - the ones nginx passed to the release - their server errors (status 500 and
    above, as the client saw them) and the release's response times (C(upstream_response_time)).
  - The probes (I(ignored_paths)) and the host's own requests (I(ignored_addresses), the deploy's
    smoke check) are left out - they say nothing about how the release serves users.
  - Read only, so it runs in check mode too. When the log was rotated inside the window, the
    rotated file (C(<path>.1)) is read as well.
  - The deploy's canary analysis runs it on the canary hosts and on hosts still serving the old
    release, and compares the two sides (the C(deploy_canary_judgement) filter).
options:
  path:
    description: The nginx access log.
    type: path
    required: true
  since:
    description: The window's start, in seconds since the epoch. nginx logs whole seconds, so a
      request logged in the second that holds I(since) is left out.
    type: float
    required: true
  until:
    description: The window's end, in seconds since the epoch; 0 for now.
    type: float
    default: 0
  ignored_paths:
    description: Path prefixes of requests that are not users' (the probes).
    type: list
    elements: str
    default: [/healthz/, /readyz/]
  ignored_addresses:
    description: Client addresses whose requests are not users' (the host's own checks).
    type: list
    elements: str
    default: [127.0.0.1, "::1"]
author:
  - deploykit
"""

EXAMPLES = r"""
- name: Count the canary's requests since it switched
  deploy_canary_sample:
    path: /var/log/nginx/deploykit-access.log
    since: 1765152000.5
  register: sample
"""

RETURN = r"""
requests:
  description: Users' requests in the window.
  returned: always
  type: int
errors:
  description: Those answered with a status of 500 or above.
  returned: always
  type: int
latency_ms:
  description: How many of those requests the release answered in each whole number of
    milliseconds (keys are the milliseconds), from which percentiles over several hosts are exact
    to the millisecond.
  returned: always
  type: dict
unparsed:
  description: Lines in the window that were not the log format's JSON (left out).
  returned: always
  type: int
"""

import json
import math
import os
import time
from collections import Counter
from datetime import datetime

from ansible.module_utils.basic import AnsibleModule

# Read from the end in blocks of this size: a bake window is the last few minutes of a log that can
# hold days.
BLOCK = 1 << 16


def _lines_backwards(path: str):
    """The file's lines, last first (bytes, without the newline)."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        position = handle.tell()
        rest = b""
        while position > 0:
            size = min(BLOCK, position)
            position -= size
            handle.seek(position)
            lines = (handle.read(size) + rest).split(b"\n")
            rest = lines.pop(0)
            for line in reversed(lines):
                if line:
                    yield line
        if rest:
            yield rest


def _epoch(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value).timestamp()
    except (TypeError, ValueError):
        return None


def _milliseconds(value: str) -> int | None:
    """The release's time for a request: nginx writes "-" when no upstream answered, and one value per
    attempt ("0.004, 0.012") when it tried more than one; the user waited for all of them."""
    try:
        return math.ceil(sum(float(part) for part in value.replace(":", ",").split(",")) * 1000)
    except (AttributeError, ValueError):
        return None


def sample(path: str, since: float, until: float, ignored_paths, ignored_addresses) -> dict:
    counts = {"requests": 0, "errors": 0, "unparsed": 0}
    latency: Counter[int] = Counter()
    # nginx writes whole seconds: the second that holds `since` may hold requests from before it.
    start = math.floor(since) + 1
    for name in (path, path + ".1"):
        reached_start = False
        try:
            lines = list(_window(name, start, until, counts))
        except FileNotFoundError:
            break
        for entry in lines:
            if entry is None:
                reached_start = True
                continue
            uri = str(entry.get("uri", ""))
            if entry.get("remote_addr") in ignored_addresses or uri.startswith(tuple(ignored_paths)):
                continue
            if entry.get("upstream_status", "-") in ("", "-"):
                # Answered by nginx itself (a redirect to HTTPS, a refusal): the release never saw it.
                continue
            counts["requests"] += 1
            if int(entry.get("status", 0)) >= 500:
                counts["errors"] += 1
            milliseconds = _milliseconds(entry.get("upstream_response_time"))
            if milliseconds is not None:
                latency[milliseconds] += 1
        if reached_start:
            break
    return {**counts, "latency_ms": {str(key): value for key, value in sorted(latency.items())}}


def _window(path: str, start: float, until: float, counts: dict):
    """The file's entries inside [start, until], last first; None once an entry before the window
    shows that no older file need be read."""
    for line in _lines_backwards(path):
        try:
            entry = json.loads(line)
            logged = _epoch(entry["time"])
        except (ValueError, KeyError, TypeError):
            counts["unparsed"] += 1
            continue
        if logged is None:
            counts["unparsed"] += 1
            continue
        if logged < start:
            yield None
            return
        if logged <= until:
            yield entry


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "since": {"type": "float", "required": True},
            "until": {"type": "float", "default": 0},
            "ignored_paths": {"type": "list", "elements": "str", "default": ["/healthz/", "/readyz/"]},
            "ignored_addresses": {"type": "list", "elements": "str", "default": ["127.0.0.1", "::1"]},
        },
        supports_check_mode=True,
    )
    params = module.params
    until = params["until"] or time.time()
    try:
        result = sample(
            params["path"], params["since"], until, params["ignored_paths"], params["ignored_addresses"]
        )
    except OSError as error:
        module.fail_json(msg=f"cannot read the access log {params['path']}: {error}")
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
