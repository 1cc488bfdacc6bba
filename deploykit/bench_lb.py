"""The load balancer's benchmarks, on the local stand-in: what users see through the environment's
public address during a rollout, and while the health check takes a host that stopped answering out.

Users' requests are GETs of /version.json at the public address (deploykit/front_door.py), one new
HTTPS connection each, from a few threads, bounded in count and time. What stands in: HAProxy for
the Application Load Balancer (deploykit/loadbalancer.py), configured from the target group moto
holds, with the health-check settings of roles/aws_load_balancer.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

from deploykit import front_door, loadbalancer, standin
from deploykit.request_stream import Reply, RequestStream, StreamResult, release_of
from deploykit.system import DOCKER, SetupError, say

THREADS = 4
# Each thread starts a request at most this often: 4 threads x 20/s, 80 requests a second.
INTERVAL_SECONDS = 0.05
MAX_REQUESTS = 200_000
MAX_SECONDS = 900
TIMEOUT_SECONDS = 10
T = TypeVar("T")
# The streams' one target.
PUBLIC_ADDRESS = "public address"


def _fetch(_target: str, timeout: float) -> Reply:
    status, _headers, body = front_door.get("/version.json", timeout=timeout)
    return Reply(release_of(status, body)["version"])


def _stream() -> RequestStream:
    """Requests to the public address from a few threads; when each failed one was sent."""
    return RequestStream(
        [PUBLIC_ADDRESS],
        _fetch,
        threads_per_target=THREADS,
        interval=INTERVAL_SECONDS,
        max_requests=MAX_REQUESTS,
        max_seconds=MAX_SECONDS,
        timeout=TIMEOUT_SECONDS,
    )


def _wait_for_every_target_up(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        targets = loadbalancer.status()["targets"]
        if targets and all(health["status"] == "UP" for health in targets.values()):
            return
        if time.monotonic() > deadline:
            raise SetupError(
                f"the load balancer's targets are not all healthy after {timeout:.0f} s: {targets}"
            )
        time.sleep(0.5)


def _pause(host: str, paused: bool) -> None:
    subprocess.run(
        [DOCKER, "pause" if paused else "unpause", host], check=True, capture_output=True, timeout=60
    )


def measure_rollout(deploy: Callable[[], Any]) -> tuple[dict[str, float], dict[str, float]]:
    """Requests through the load balancer during `deploy` (a 3-host rollout)."""
    _wait_for_every_target_up(120)
    with _stream() as stream:
        deploy()
    versions = stream.result.versions[PUBLIC_ADDRESS]
    if len(versions) < 2:
        raise SetupError(f"the stream through the load balancer did not see the release change: {versions}")
    return {"lb_rollout_failed_requests": stream.result.failed}, {"lb_rollout_requests": stream.result.sent}


def under_stream(action: Callable[[], T]) -> tuple[T, StreamResult]:
    """`action`'s result, and the requests through the load balancer while it ran."""
    _wait_for_every_target_up(120)
    with _stream() as stream:
        result = action()
    return result, stream.result


def measure_lost_host(host: str) -> tuple[dict[str, float], dict[str, float]]:
    """`host` freezes (docker pause: it accepts connections and never answers); requests through the
    load balancer until well after its health check's detection window."""
    _wait_for_every_target_up(120)
    window = standin.detection_window_seconds()
    try:
        with _stream() as stream:
            time.sleep(2)  # requests before the fault, for comparison
            _pause(host, True)
            paused_at = time.monotonic()
            time.sleep(window + 10)
    finally:
        _pause(host, False)
    say(f"{host} answers again; waiting for its health check to take it back")
    _wait_for_every_target_up(120)
    failed = [at - paused_at for at in stream.result.failed_at]
    after = [offset for offset in failed if offset > window]
    return {"lb_lost_host_failed_after_window_requests": len(after)}, {
        "lb_lost_host_failed_requests": len(failed),
        "lb_lost_host_requests": stream.result.sent,
        "lb_detection_window_seconds": window,
        # When the last failed request was sent, after the fault: how long detection really took.
        "lb_lost_host_detection_seconds": round(max(failed, default=0.0), 2),
    }
