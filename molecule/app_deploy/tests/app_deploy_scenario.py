"""What the app_deploy scenario set up, and the means its tests drive it with.

Molecule hands testinfra Ansible's inventory, whose JSON ansible-core 2.19 breaks, so the tests
name their host as a docker:// container, taken from the inventory file Molecule wrote. The
acceptance tests run ansible-playbook against the same inventory, and send their requests from
this machine to the host's address on the project's Docker network (never anywhere else), in
loops bounded in count and time. This machine is the load balancer in front of the host, as the
ALB is in production: its requests say that they came over HTTPS, and nginx believes them.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SCENARIO_DIRECTORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SCENARIO_DIRECTORY))

import release_images  # noqa: E402

ROLE_DEFAULTS = SCENARIO_DIRECTORY.parent.parent / "roles" / "app_deploy" / "defaults" / "main.yml"
NETWORK = "deploykit"
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
PLAYBOOK_TIMEOUT_SECONDS = 900
VERSIONS = {tag: release["version"] for tag, release in release_images.RELEASES.items()}
BROKEN_TAG = release_images.BROKEN
# group_vars' app_deploy_image_repository, rendered: this distro's repository.
IMAGE_REPOSITORY = release_images.IMAGE_REPOSITORY
MISSING_TAG = "release-that-was-never-built"


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def inventory_file() -> Path:
    path = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not path:
        raise RuntimeError("MOLECULE_INVENTORY_FILE is not set: run these tests with `molecule verify`")
    return Path(path)


def instance() -> str:
    """The scenario's one host."""
    hosts = _load(inventory_file())["all"]["hosts"]
    return next(iter(hosts))


def group_vars() -> dict[str, Any]:
    """The scenario's variables as written (templates unrendered), over the role's defaults."""
    return {**_load(ROLE_DEFAULTS), **_load(SCENARIO_DIRECTORY / "group_vars" / "all.yml")}


def address(name: str) -> str:
    """The container's address on the project's network: the only place test traffic goes."""
    return subprocess.run(
        [
            DOCKER,
            "inspect",
            "--format",
            f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}',
            name,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


# What the load balancer adds to a request it took over HTTPS. nginx believes it from the tests'
# client, which group_vars names the trusted proxy (edge_proxy_trusted_proxies).
FROM_THE_LOAD_BALANCER = {"X-Forwarded-Proto": "https"}


def get(
    host: str, path: str, port: int = 80, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """One GET on a fresh connection, as the load balancer forwards a client's HTTPS request.

    Host is the address, which the app allows. `headers` replaces the load balancer's: `headers={}`
    is a client that reaches nginx directly over plain HTTP.
    """
    sent = FROM_THE_LOAD_BALANCER if headers is None else headers
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": host, "Connection": "close", **sent})
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


# Run on the instance: one GET to its own network address, printed as JSON (status and headers).
_GET_FROM_THE_HOST = r"""
import http.client, json, sys
address, path, headers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
connection = http.client.HTTPConnection(address, 80, timeout=5)
connection.request("GET", path, headers={"Host": address, "Connection": "close", **headers})
response = connection.getresponse()
print(json.dumps({"status": response.status, "headers": dict(response.getheaders())}))
"""


def get_from_the_host(host, address_: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """One GET from the host to its own address: a client that is neither loopback nor a trusted proxy."""
    answer = json.loads(
        host.check_output("python3 -c %s %s %s %s", _GET_FROM_THE_HOST, address_, path, json.dumps(headers))
    )
    return answer["status"], answer["headers"]


@dataclass
class PlaybookRun:
    returncode: int
    output: str
    seconds: float


def ansible_playbook(playbook: str | Path, *args: str, inventory: str | None = None) -> PlaybookRun:
    """Run a playbook the way Molecule does: same venv, same config, same inventory."""
    command = [
        str(Path(sys.executable).with_name("ansible-playbook")),
        "--inventory",
        inventory or str(inventory_file().parent),
        str(SCENARIO_DIRECTORY / playbook),
        *args,
    ]
    started = time.monotonic()
    result = subprocess.run(
        command,
        cwd=SCENARIO_DIRECTORY,
        capture_output=True,
        text=True,
        timeout=PLAYBOOK_TIMEOUT_SECONDS,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
    )
    return PlaybookRun(result.returncode, result.stdout + result.stderr, time.monotonic() - started)


@dataclass
class Traffic:
    """A stream of requests through nginx while something else happens, bounded in count and time.

    Every request is a fresh connection, as most clients of a web app are, sent as the load
    balancer forwards one (see get). A request fails when it raises (refused, reset, timed out) or
    answers anything but 200.
    """

    host: str
    path: str = "/version.json"
    workers: int = 2
    max_requests: int = 100_000
    max_seconds: float = 600.0
    total: int = 0
    failures: list[str] = field(default_factory=list)
    versions: Counter = field(default_factory=Counter)
    last_version: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _work(self, deadline: float) -> None:
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if self.total >= self.max_requests:
                    return
                self.total += 1
            try:
                status, body, _ = get(self.host, self.path)
                version = json.loads(body)["version"] if status == 200 else ""
                problem = "" if status == 200 else f"HTTP {status}: {body[:200]!r}"
            except (OSError, http.client.HTTPException, ValueError, KeyError) as error:
                version, problem = "", f"{type(error).__name__}: {error}"
            with self._lock:
                if problem:
                    self.failures.append(problem)
                else:
                    self.versions[version] += 1
                    self.last_version = version

    def __enter__(self) -> Traffic:
        deadline = time.monotonic() + self.max_seconds
        self._threads = [
            threading.Thread(target=self._work, args=(deadline,), daemon=True) for _ in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def finish(self, min_requests: int) -> None:
        """Keep going until at least min_requests were sent (or a bound is hit), then stop."""
        while self.total < min_requests and any(thread.is_alive() for thread in self._threads):
            time.sleep(0.05)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


@dataclass
class Rollout:
    """A playbook run under a request stream, and what the host looked like around it."""

    run: PlaybookRun
    traffic: Traffic
    containers_before: list[str]
    containers_after: list[str]


def app_containers(host) -> list[str]:
    """IDs and names of the app's running release containers on the host."""
    output = host.check_output("docker ps --filter label=org.deploykit.app=app --format '{{.ID}} {{.Names}}'")
    return sorted(line for line in output.splitlines() if line.strip())


# One line per playbook run under traffic, printed at the end of the test session (conftest.py).
MEASUREMENTS: list[str] = []


def under_traffic(host, address_: str, playbook: str, *args: str, min_requests: int = 1000) -> Rollout:
    before = app_containers(host)
    with Traffic(address_) as traffic:
        run = ansible_playbook(playbook, *args)
        traffic.finish(min_requests)
    MEASUREMENTS.append(
        f"{playbook} {' '.join(args)}: exit {run.returncode} in {run.seconds:.1f} s;"
        f" {traffic.total} requests, {len(traffic.failures)} failed; answered by {dict(traffic.versions)}"
    )
    return Rollout(run, traffic, before, app_containers(host))


def state(host) -> dict[str, Any]:
    return json.loads(host.file("/var/lib/deploykit/app/state.json").content_string)


# Run on the instance during a rollout: once the new release's socket directory appears, make a
# connection to the serving release's socket and send the first lines of a request as nginx passes
# one on from the load balancer (the headers the app reads); once nginx's link has moved to the new
# release, wait `hold` seconds, end the request and write what came back. That is a request in
# flight on the old release across the switch.
_HOLD_REQUEST = r"""
import http.client, json, os, socket, sys, time
link, hold, out, address = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
old = os.readlink(link)
sockets = os.path.dirname(os.path.dirname(old))
deadline = time.time() + 300
while set(os.listdir(sockets)) == {os.path.basename(os.path.dirname(old))} and time.time() < deadline:
    time.sleep(0.01)
held = socket.socket(socket.AF_UNIX)
held.connect(old)
headers = f"Host: {address}\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n"
held.sendall(f"GET /version.json HTTP/1.1\r\n{headers}".encode())
while os.readlink(link) == old and time.time() < deadline:
    time.sleep(0.01)
switched = time.time()
time.sleep(hold)
held.sendall(b"\r\n")
response = http.client.HTTPResponse(held)
response.begin()
body = response.read().decode("utf-8", "replace")
result = {"switched": switched, "answered": time.time(), "status": response.status, "body": body}
with open(out, "w") as file:
    json.dump(result, file)
"""
HELD_REQUEST_RESULT = "/tmp/held-request.json"


def hold_a_request(host, address_: str, hold: float) -> None:
    """Start holding a request on the serving release across the next switch (see _HOLD_REQUEST).

    address_ is the host's address, the name the request asks for.
    """
    host.run("rm -f %s", HELD_REQUEST_RESULT)
    host.run(
        "setsid nohup python3 -c %s /var/lib/deploykit/upstream.sock %s %s %s"
        " </dev/null >/tmp/held-request.log 2>&1 &",
        _HOLD_REQUEST,
        str(hold),
        HELD_REQUEST_RESULT,
        address_,
    )


def held_request(host) -> dict[str, Any]:
    """What the held request got (its status and body), and when the link moved and it was answered."""
    return json.loads(host.file(HELD_REQUEST_RESULT).content_string)
