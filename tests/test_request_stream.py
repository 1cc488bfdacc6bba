"""deploykit.request_stream against real HTTP servers on this machine's loopback: what it counts, and
that it stops by itself."""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from deploykit.request_stream import Reply, RequestStream, release_of

# A web host's name in the answers, as the app's /version.json gives it.
HOST_NAME = "web-1"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ReleaseServer

    def do_GET(self) -> None:
        status, version = self.server.next_answer()
        if status == 200:
            body = json.dumps({"status": "ok", "version": version, "host": HOST_NAME}).encode()
        else:
            body = b"<h1>Unavailable</h1>\n  try again later"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class ReleaseServer(http.server.ThreadingHTTPServer):
    """Answers each GET with the next entry of its plan (a version, or an HTTP status to fail with),
    then with the plan's last entry for good; keeps what it served, in order."""

    daemon_threads = True

    def __init__(self, plan: list[str | int]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.plan = plan
        self.served: list[str | int] = []
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def next_answer(self) -> tuple[int, str]:
        with self._lock:
            entry = self.plan[min(len(self.served), len(self.plan) - 1)]
            self.served.append(entry)
        return (entry, "") if isinstance(entry, int) else (200, entry)

    def count(self) -> int:
        with self._lock:
            return len(self.served)


@pytest.fixture
def serve() -> Iterator[Callable[[list[str | int]], ReleaseServer]]:
    servers: list[ReleaseServer] = []

    def start(plan: list[str | int]) -> ReleaseServer:
        server = ReleaseServer(plan)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def fetch_from(
    ports: dict[str, int], balanced: frozenset[str] = frozenset()
) -> Callable[[str, float], Reply]:
    """GET / from the target's port; targets in `balanced` say which host answered, as a load
    balancer's do."""

    def fetch(target: str, timeout: float) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", ports[target], timeout=timeout)
        try:
            connection.request("GET", "/healthz/")
            response = connection.getresponse()
            release = release_of(response.status, response.read())
        finally:
            connection.close()
        return Reply(release["version"], release["host"] if target in balanced else None)

    return fetch


def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_clean_switch_is_seen_with_no_old_answer_after_the_new_one(serve):
    server = serve(["v1"] * 30 + ["v2"])
    stream = RequestStream(["web-1"], fetch_from({"web-1": server.port}), threads_per_target=3, interval=0)
    with stream:
        wait_until(lambda: server.count() > 60)
    result = stream.result
    assert set(result.versions["web-1"]) == {"v1", "v2"}
    assert result.old_after_new() == {"web-1": 0}
    assert (result.failed, result.failures) == (0, [])
    assert result.sent == server.count() == result.versions["web-1"].total()


def test_old_answers_to_requests_sent_after_the_first_new_answer_are_counted(serve):
    # One thread: each request is sent after the answer before it arrived, so every v1 served after
    # the first v2 counts.
    server = serve(["v1"] * 5 + ["v2", "v1", "v1", "v1", "v2"])
    stream = RequestStream(["web-1"], fetch_from({"web-1": server.port}), threads_per_target=1, interval=0)
    with stream:
        wait_until(lambda: server.count() > 20)
    assert stream.result.old_after_new() == {"web-1": 3}
    assert stream.result.versions["web-1"]["v1"] == 8


def test_failed_requests_are_counted_with_when_they_were_sent_and_why(serve):
    server = serve(["v1", *[503] * 25, "v2"])
    stream = RequestStream(["web-1"], fetch_from({"web-1": server.port}), threads_per_target=1, interval=0)
    started = time.monotonic()
    with stream:
        wait_until(lambda: server.count() > 30)
    result = stream.result
    assert result.failed == len(result.failed_at) == 25
    assert all(started <= at <= time.monotonic() for at in result.failed_at)
    # Every failure counts; the first 20 keep their reason.
    assert len(result.failures) == 20
    assert all(failure.startswith("web-1 at ") for failure in result.failures)
    assert all(
        failure.endswith(": StatusError: HTTP 503: <h1>Unavailable</h1> try again later")
        for failure in result.failures
    )
    assert result.sent == result.failed + result.versions["web-1"].total()


def test_a_target_that_refuses_connections_fails_while_the_others_answer(serve):
    server = serve(["v1"])
    ports = {"web-1": server.port, "web-2": closed_port()}
    stream = RequestStream(list(ports), fetch_from(ports), threads_per_target=1, interval=0.01)
    with stream:
        wait_until(lambda: stream.result.failed >= 5 and server.count() >= 5)
    result = stream.result
    assert result.versions == {"web-1": Counter(v1=server.count()), "web-2": Counter()}
    assert result.failures
    assert all(
        failure.startswith("web-2 at ") and "ConnectionRefusedError" in failure for failure in result.failures
    )


def test_only_a_load_balancer_s_answers_say_which_host_answered(serve):
    host, front = serve(["v1"]), serve(["v1"])
    ports = {"web-1": host.port, "front door": front.port}
    stream = RequestStream(list(ports), fetch_from(ports, balanced=frozenset({"front door"})), interval=0.01)
    with stream:
        wait_until(lambda: host.count() >= 5 and front.count() >= 5)
    assert stream.result.answered_by == Counter({HOST_NAME: front.count()})


def test_the_stream_stops_by_itself_at_its_request_bound(serve):
    server = serve(["v1"])
    stream = RequestStream(
        ["web-1"], fetch_from({"web-1": server.port}), threads_per_target=3, interval=0, max_requests=50
    )
    with stream:
        wait_until(lambda: server.count() >= 50)
        time.sleep(0.3)
        assert server.count() == 50
    assert stream.result.sent == 50


def test_the_stream_stops_by_itself_at_its_time_bound(serve):
    server = serve(["v1"])
    stream = RequestStream(["web-1"], fetch_from({"web-1": server.port}), interval=0.01, max_seconds=0.3)
    with stream:
        time.sleep(0.6)
        served = server.count()
        time.sleep(0.3)
        assert server.count() == served > 0
    assert stream.result.sent == served
    assert stream.result.seconds >= 0.9


def test_each_thread_starts_a_request_at_most_once_an_interval(serve):
    server = serve(["v1"])
    stream = RequestStream(["web-1"], fetch_from({"web-1": server.port}), threads_per_target=1, interval=0.1)
    with stream:
        time.sleep(0.45)
    # Starts at 0, 0.1, ... 0.4 s: 5, and one more if leaving the block was slow.
    assert 1 <= server.count() <= 6
