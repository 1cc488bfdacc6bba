"""The switch's benchmark, on the local stand-in: whether any host answers from the old release
after it has answered from the new one (deploykit/switch_order.py says exactly what counts).

Each web host's nginx gets its own stream of GETs of /healthz/ (which names the release), one new
connection each, from a few threads with no pause between requests, bounded in count and time
(deploykit/request_stream.py), while a 3-host rollout runs. The streams go to the hosts, not
through the load balancer: the question is what one host's nginx does at its switch.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable
from typing import Any

from deploykit import standin
from deploykit.request_stream import Reply, RequestStream, release_of
from deploykit.system import SetupError

THREADS_PER_HOST = 3
MAX_REQUESTS = 300_000
TIMEOUT_SECONDS = 10


def _fetch_from(hosts: dict[str, str]) -> Callable[[str, float], Reply]:
    """A fetch of /healthz/ from a host's nginx, by the host's name."""

    def fetch(name: str, timeout: float) -> Reply:
        connection = http.client.HTTPConnection(hosts[name], 80, timeout=timeout)
        try:
            connection.request("GET", "/healthz/", headers={"User-Agent": "deploykit-bench"})
            response = connection.getresponse()
            return Reply(release_of(response.status, response.read())["version"])
        finally:
            connection.close()

    return fetch


def measure(deploy: Callable[[], Any], max_seconds: float = 900) -> tuple[dict[str, float], dict[str, float]]:
    """Per-host request streams during `deploy` (a rollout to every web host)."""
    hosts = {
        name: host.ip for name, host in standin.containers().items() if name.startswith(standin.HOST_PREFIX)
    }
    stream = RequestStream(
        list(hosts),
        _fetch_from(hosts),
        threads_per_target=THREADS_PER_HOST,
        interval=0,
        max_requests=MAX_REQUESTS,
        max_seconds=max_seconds,
        timeout=TIMEOUT_SECONDS,
    )
    with stream:
        deploy()
    result = stream.result
    unchanged = [name for name, versions in result.versions.items() if len(versions) < 2]
    if unchanged:
        raise SetupError(f"the request streams did not see the release change on {', '.join(unchanged)}")
    per_host = result.old_after_new()
    return {"switch_old_after_new": sum(per_host.values())}, {
        "switch_requests": result.sent,
        "switch_failed_requests": result.failed,
        **{f"switch_old_after_new_{name}": count for name, count in per_host.items()},
    }
