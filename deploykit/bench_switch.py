"""The switch's benchmark, on the local stand-in: whether any host answers from the old release
after it has answered from the new one (deploykit/switch_order.py says exactly what counts).

Each web host's nginx gets its own stream of GETs of /healthz/ (which names the release), one new
connection each, from a few threads with no pause between requests, bounded in count and time,
while a 3-host rollout runs. The streams go to the hosts, not through the load balancer: the
question is what one host's nginx does at its switch.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from deploykit import standin
from deploykit.switch_order import Answer, old_after_new
from deploykit.system import SetupError

THREADS_PER_HOST = 3
MAX_REQUESTS = 300_000
TIMEOUT_SECONDS = 10


def _version(address: str) -> str | None:
    connection = http.client.HTTPConnection(address, 80, timeout=TIMEOUT_SECONDS)
    try:
        connection.request("GET", "/healthz/", headers={"User-Agent": "deploykit-bench"})
        response = connection.getresponse()
        body = response.read()
        return json.loads(body)["version"] if response.status == 200 else None
    except (OSError, ValueError, KeyError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def measure(deploy: Callable[[], Any], max_seconds: float = 900) -> tuple[dict[str, float], dict[str, float]]:
    """Per-host request streams during `deploy` (a rollout to every web host)."""
    hosts = {
        name: host.ip for name, host in standin.containers().items() if name.startswith(standin.HOST_PREFIX)
    }
    answers: dict[str, list[Answer]] = {name: [] for name in hosts}
    failed: dict[str, int] = dict.fromkeys(hosts, 0)
    lock, stop = threading.Lock(), threading.Event()
    deadline = time.monotonic() + max_seconds

    def work(name: str) -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            sent = time.monotonic()
            version = _version(hosts[name])
            received = time.monotonic()
            with lock:
                if sum(map(len, answers.values())) + sum(failed.values()) >= MAX_REQUESTS:
                    return
                if version is None:
                    failed[name] += 1
                else:
                    answers[name].append(Answer(sent, received, version))

    threads = [
        threading.Thread(target=work, args=(name,), daemon=True)
        for name in hosts
        for _ in range(THREADS_PER_HOST)
    ]
    for thread in threads:
        thread.start()
    try:
        deploy()
    finally:
        stop.set()
        for thread in threads:
            thread.join(TIMEOUT_SECONDS + 5)
    unchanged = [name for name, got in answers.items() if len({answer.version for answer in got}) < 2]
    if unchanged:
        raise SetupError(f"the request streams did not see the release change on {', '.join(unchanged)}")
    per_host = {name: old_after_new(got) for name, got in answers.items()}
    return {"switch_old_after_new": sum(per_host.values())}, {
        "switch_requests": sum(map(len, answers.values())) + sum(failed.values()),
        "switch_failed_requests": sum(failed.values()),
        **{f"switch_old_after_new_{name}": count for name, count in per_host.items()},
    }
