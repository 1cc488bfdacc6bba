"""End-to-end rollouts against the local stand-in for AWS (marker `e2e`).

    make setup    # once: engine, PostgreSQL, registry, apt cache, base images
    pytest -m e2e tests/e2e            # about 15 minutes; reports/e2e.json, reports/e2e/
    DEPLOYKIT_E2E_KEEP=1 pytest -m e2e tests/e2e    # leaves the stand-in up afterwards

Without `-m e2e` (or another -m naming e2e) these tests are left out: they replace the machine's
stand-in, so `pytest tests` or `pytest -m "not docker"` must never start them by accident.

What is real here: the hosts (systemd containers with sshd, their own Docker engine and nginx),
the registry (Debian's docker-registry with TLS), PostgreSQL, ansible-playbook and the roles, the
HTTP traffic and the browser. What stands in: moto for EC2's and SSM's APIs, reached through
AWS_ENDPOINT_URL only.

The session brings the stand-in up fresh (`down`, then `up`), builds and pushes the six releases
the scenarios use once, and takes the stand-in down at the end (DEPLOYKIT_E2E_KEEP=1 leaves it up
to look at). The numbered modules run in order and build on each other: each scenario starts from
the fleet the one before left. Every ansible-playbook run is kept under reports/e2e/logs/, with
the stand-in's secret values masked; reports/e2e.json says how each scenario went.

Network rule (the platform notes, PLATFORM.md): test traffic goes only to 127.0.0.0/8 and to the stand-in's
hosts on the project's Docker network; request streams stop by themselves after a bounded time
and count.
"""

from __future__ import annotations

import contextlib
import html.parser
import http.client
import inspect
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploykit import app_image, apt_cache, engine, images, network, postgres, registry, standin
from deploykit import front_door as public_address
from deploykit.e2e_report import E2EReport
from deploykit.request_stream import Reply, RequestStream, StreamResult, release_of
from deploykit.system import DOCKER, REPORTS, ROOT

BIN = Path(sys.executable).parent
FIXTURES = Path(__file__).parent / "fixtures"
ARTIFACTS = REPORTS / "e2e"
REPORT_FILE = REPORTS / "e2e.json"
REPOSITORY = "deploykit/app"
INVENTORY = "inventory/local"
# app_deploy's state file on a host: what serves, what it replaced, the releases it keeps.
APP_STATE_FILE = "/var/lib/deploykit/app/state.json"
LOCK_PARAMETER = f"/deploykit/{standin.TAGS['Env']}/deploy-lock"
# The request streams' name for the environment's public address.
FRONT_DOOR = "front door"
SSM_SECRETS = (
    f"/deploykit/{standin.TAGS['Env']}/DJANGO_SECRET_KEY",
    f"/deploykit/{standin.TAGS['Env']}/DATABASE_URL",
)
# One token per session: it marks this session's deploys in the app's history (the database
# outlives the stand-in, and other tests deploy into it too) and this session's images.
RUN_TOKEN = secrets.token_hex(3)
ACTOR = f"e2e-{RUN_TOKEN}"
# Bounds of every playbook run and of the wait for a stand-in that another deploy is using.
PLAYBOOK_TIMEOUT_SECONDS = 900
BUSY_STANDIN_WAIT_SECONDS = 600

REPORT = E2EReport()


# ---------------------------------------------------------------------------------------------
# pytest hooks: the marker, the selection, the report


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e: end-to-end rollouts against the local AWS stand-in (replaces the stand-in; ~15 min)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave the e2e tests out unless `-m` asks for them: they replace the machine's stand-in."""
    if "e2e" in (config.getoption("markexpr") or ""):
        return
    chosen, left_out = [], []
    for item in items:
        (left_out if item.get_closest_marker("e2e") else chosen).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = chosen


def scenario_number(path: Path) -> int | None:
    """The scenario a test module holds: the number its name starts with (test_03_... is 3)."""
    match = re.match(r"test_(\d+)_", path.name)
    return int(match.group(1)) if match else None


def case_of(item: pytest.Item) -> str | None:
    """The case of its scenario a test belongs to, from the module's FAULT_CASES, if it has one.

    FAULT_CASES maps the module-scoped fixture that injects a fault (the test's first argument
    among them) to the case's title; a test parametrized with `case` belongs to that case.
    """
    cases = getattr(getattr(item, "module", None), "FAULT_CASES", None)
    if not cases or not isinstance(item, pytest.Function):
        return None
    for argument in inspect.signature(item.function).parameters:
        if argument in cases:
            return cases[argument]
    callspec = getattr(item, "callspec", None)
    case = callspec.params.get("case") if callspec else None
    return case if case in cases.values() else None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Each case gets its row in reports/e2e.json, in the order its tests run."""
    for item in session.items:
        number, case = scenario_number(item.path), case_of(item)
        if item.get_closest_marker("e2e") and number is not None and case is not None:
            REPORT.declare_case(number, case)


# The test whose setup runs now: a module-scoped fixture that injects a fault is set up by the
# first test of its case.
_setting_up: dict[str, pytest.Item] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    _setting_up["item"] = item
    try:
        return (yield)
    finally:
        _setting_up.pop("item", None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    number = scenario_number(item.path) if item.get_closest_marker("e2e") else None
    if number is not None:
        # The session's own setup and teardown (stand-in, images) are no scenario's time; pytest
        # counts them in the setup of the first test and the teardown of the last.
        seconds = report.duration - _session_time.pop(report.when, 0.0)
        REPORT.record_phase(number, item.name, report.when, report.outcome, seconds, case_of(item))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    if any(scenario.phases for scenario in REPORT.scenarios.values()):
        REPORT.write(REPORT_FILE)


# Seconds of the session fixture's setup and teardown, until taken off the test phase they ran in.
_session_time: dict[str, float] = {}


@pytest.fixture(scope="module")
def record_requests(request: pytest.FixtureRequest) -> Callable[[StreamResult], None]:
    """Adds a request stream's counts to the module's scenario in reports/e2e.json, and to the case
    whose fixture streamed them: the case of the test being set up when they are recorded."""
    number = scenario_number(request.node.path)
    assert number is not None, f"{request.node.path.name} is not a numbered e2e module"

    def record(result: StreamResult) -> None:
        item = _setting_up.get("item")
        REPORT.add_requests(number, result.sent, result.failed, case_of(item) if item else None)

    return record


# ---------------------------------------------------------------------------------------------
# Commands


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, check=False, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def on_host(host: str, script: str, *, check: bool = True, timeout: float = 120) -> str:
    """Run a shell script as root on a stand-in host (out of band, like a console session)."""
    return docker("exec", host, "sh", "-c", script, check=check, timeout=timeout).stdout


def tool_env(**extra: str | None) -> dict[str, str]:
    """This process's environment pointed at the stand-in, with no Ansible settings of the caller,
    and the stand-in's deploy key and known hosts, as an operator deploys by hand. A value of None
    in `extra` removes that variable."""
    env = {
        key: value
        for key, value in standin.tool_env().items()
        if not key.startswith("ANSIBLE_") and key != "DEPLOYKIT_RUN_ID"
    }
    env.update(
        standin.ssh_environment(),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        PYTHONUNBUFFERED="1",
        USER=ACTOR,
        DEPLOYKIT_ACTOR=ACTOR,
    )
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


# ---------------------------------------------------------------------------------------------
# Playbook runs


_RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)",
    re.MULTILINE,
)
_RESULT = re.compile(r"^(?:ok|changed|fatal|failed|skipping): \[([^\]\s]+)", re.MULTILINE)
_FAILURE = re.compile(r"^(?:fatal|failed): \[([^\]\s]+)\]", re.MULTILINE)


@dataclass
class PlaybookRun:
    label: str
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    # What the registry logged while the run went on: one access-log line per request.
    registry_log: str = ""

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def tail(self, lines: int = 60) -> str:
        """The end of the output, for assertion messages."""
        return "\n".join(self.output.splitlines()[-lines:])

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP by host: ok, changed, unreachable, failed, skipped, rescued, ignored."""
        _, _, recap = self.stdout.rpartition("PLAY RECAP")
        return {
            match["host"]: {key: int(value) for key, value in match.groupdict().items() if key != "host"}
            for match in _RECAP.finditer(recap)
        }

    def play(self, name: str) -> str:
        """The output of the play called `name` (empty when it did not run)."""
        parts = re.split(r"^(?=PLAY \[|PLAY RECAP)", self.stdout, flags=re.MULTILINE)
        return "".join(part for part in parts if part.startswith(f"PLAY [{name}]"))

    def hosts_in(self, play_name: str) -> list[str]:
        """Hosts with a task result in a play, in the order they first appear."""
        return list(dict.fromkeys(_RESULT.findall(self.play(play_name))))

    def failures(self) -> list[tuple[str, str]]:
        """(host, task name) of every failed task, in order."""
        found, task = [], ""
        for line in self.stdout.splitlines():
            if line.startswith("TASK ["):
                task = line[len("TASK [") :].rsplit("]", 1)[0]
            match = _FAILURE.match(line)
            if match:
                found.append((match.group(1), task))
        return found

    def registry_requests(self, addresses: Sequence[str], repository: str = REPOSITORY) -> list[str]:
        """Requests for `repository` that came from `addresses` while the run went on."""
        return [
            line
            for line in self.registry_log.splitlines()
            if line.split(" ", 1)[0] in addresses and f" /v2/{repository}/" in line
        ]


class Ansible:
    """Runs the project's playbooks as a user types them: from the repository root, venv on PATH,
    ansible.cfg, the stand-in's AWS environment."""

    # Who the runs say deploys (the lock's holder, the app's history): this session.
    actor = ACTOR

    def __init__(self, masked: Callable[[], list[str]]) -> None:
        self.runs: list[PlaybookRun] = []
        self._masked = masked

    @staticmethod
    def migrate_args() -> list[str]:
        """Until the role has a default migrate command, give it the one it should default to."""
        defaults = yaml.safe_load((ROOT / "roles/app_deploy/defaults/main.yml").read_text())
        if "app_deploy_migrate_command" in defaults:
            return []
        return [
            "-e",
            json.dumps({"app_deploy_migrate_command": ["python", "manage.py", "migrate", "--noinput"]}),
        ]

    def deploy_args(self, tag: str, *args: str, inventory: str = INVENTORY) -> list[str]:
        return [
            "deploy.yml",
            "-i",
            inventory,
            "-e",
            f"app_deploy_image_tag={tag}",
            *self.migrate_args(),
            *args,
        ]

    def start(self, label: str, args: Sequence[str], **env: str | None) -> RunningPlaybook:
        return RunningPlaybook(self, label, list(args), tool_env(**env))

    def run(self, label: str, args: Sequence[str], **env: str | None) -> PlaybookRun:
        return self.start(label, args, **env).wait()

    def deploy(self, label: str, tag: str, *args: str, **env: str) -> PlaybookRun:
        return self.run(label, self.deploy_args(tag, *args), **env)

    def rollback(self, label: str, *args: str, **env: str) -> PlaybookRun:
        return self.run(label, ["playbooks/rollback.yml", "-i", INVENTORY, *args], **env)

    def keep(self, run: PlaybookRun) -> None:
        """Record the run and write its output, secrets masked, under reports/e2e/logs/."""
        self.runs.append(run)
        text = f"$ ansible-playbook {' '.join(run.args)}\n# exit {run.returncode} after {run.seconds:.1f} s\n"
        text += run.stdout + ("\n# stderr\n" + run.stderr if run.stderr else "")
        for value in self._masked():
            text = text.replace(value, "<masked secret>")
        path = ARTIFACTS / "logs" / f"{len(self.runs):02d}-{run.label}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def registry_log_size() -> int:
    return registry._LOG.stat().st_size if registry._LOG.exists() else 0


def registry_log_since(offset: int) -> str:
    if not registry._LOG.exists():
        return ""
    with registry._LOG.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


class RunningPlaybook:
    """An ansible-playbook process; wait() collects it as a PlaybookRun."""

    def __init__(self, ansible: Ansible, label: str, args: list[str], env: dict[str, str]) -> None:
        self._ansible, self.label, self.args = ansible, label, args
        self._registry_offset = registry_log_size()
        self._started = time.monotonic()
        self.process = subprocess.Popen(
            [str(BIN / "ansible-playbook"), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Its own process group: kill() ends the run as a dying machine would, workers and all.
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL to ansible-playbook and everything it started: no handler, no callback runs."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def wait(self, timeout: float = PLAYBOOK_TIMEOUT_SECONDS) -> PlaybookRun:
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate()
            stderr += f"\n[e2e] killed after {timeout} s\n"
        except BaseException:  # an interrupted session leaves no playbook running on its own
            self.process.kill()
            raise
        run = PlaybookRun(
            label=self.label,
            args=self.args,
            returncode=self.process.returncode,
            stdout=stdout,
            stderr=stderr,
            seconds=time.monotonic() - self._started,
            registry_log=registry_log_since(self._registry_offset),
        )
        self._ansible.keep(run)
        return run

    def running(self) -> bool:
        return self.process.poll() is None


# ---------------------------------------------------------------------------------------------
# The fleet, seen from outside: HTTP through nginx, and the hosts' Docker engines


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    image: str
    started_at: str
    status: str
    restarts: int


def http_get(address: str, path: str, *, timeout: float = 10) -> tuple[int, str]:
    """GET http://<address><path> (port 80, no proxy); (status, body)."""
    connection = http.client.HTTPConnection(address, 80, timeout=timeout)
    try:
        connection.request("GET", path, headers={"User-Agent": "deploykit-e2e"})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


@dataclass(frozen=True)
class Host:
    name: str
    ip: str


class Fleet:
    """The stand-in's web hosts."""

    def __init__(self, hosts: list[Host]) -> None:
        self.hosts = hosts
        self.by_name = {host.name: host for host in hosts}

    @property
    def names(self) -> list[str]:
        return [host.name for host in self.hosts]

    @property
    def addresses(self) -> list[str]:
        return [host.ip for host in self.hosts]

    def release(self, name: str) -> dict[str, str]:
        """What the host's nginx serves: the release behind it, as its liveness probe names it.

        Straight to one host, the app's pages answer only the load balancer's requests (its public
        name, HTTPS in front); /healthz/ answers anyone, and names the release too.
        """
        status, body = http_get(self.by_name[name].ip, "/healthz/")
        assert status == 200, f"{name}: /healthz/ answered {status}: {body[:300]}"
        return json.loads(body)

    def kept_tags(self) -> set[str]:
        """The image tags of the releases any host keeps (each host's app_deploy state history)."""
        return {
            entry["tag"]
            for name in self.names
            for entry in json.loads(self.sh(name, f"cat {APP_STATE_FILE}"))["history"]
        }

    def versions(self) -> dict[str, str]:
        """Each host's serving version, or what went wrong asking it."""
        found = {}
        for name in self.names:
            try:
                found[name] = self.release(name)["version"]
            except (AssertionError, OSError, ValueError) as error:
                found[name] = f"no answer: {error}"
        return found

    def containers(self, name: str) -> list[Container]:
        """Every container on the host's own engine, running or not."""
        script = (
            "docker ps --all --quiet --no-trunc | xargs -r docker inspect --format "
            "'{{.Id}} {{.Name}} {{.Image}} {{.State.StartedAt}} {{.State.Status}} {{.RestartCount}}'"
        )
        containers = []
        for line in on_host(name, script).splitlines():
            id_, container_name, image, started_at, status, restarts = line.split()
            containers.append(
                Container(id_, container_name.lstrip("/"), image, started_at, status, int(restarts))
            )
        return sorted(containers, key=lambda container: container.name)

    def snapshot(self) -> dict[str, list[Container]]:
        return {name: self.containers(name) for name in self.names}

    def history(self, name: str) -> list[dict[str, str]]:
        """The deploy history that the app page (/) shows on that host, asked on the host itself
        the way the load balancer asks (nginx believes loopback's X-Forwarded-Proto)."""
        status, page = self.page(name, "/")
        assert status == 200, f"{name}: / answered {status}: {page[:300]}"
        return history_rows(page)

    def page(self, name: str, path: str, host_header: str = "") -> tuple[int, str]:
        """GET `path` from the host's nginx on the host, as the load balancer sends it."""
        script = (
            "import sys, urllib.request, urllib.error\n"
            "class NoRedirect(urllib.request.HTTPRedirectHandler):\n"
            "    def redirect_request(self, *args): return None\n"
            "request = urllib.request.Request('http://127.0.0.1' + sys.argv[1],"
            " headers={'Host': sys.argv[2], 'X-Forwarded-Proto': 'https'})\n"
            "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)\n"
            "try:\n"
            "    response = opener.open(request, timeout=10)\n"
            "except urllib.error.HTTPError as error:\n"
            "    response = error\n"
            "print(response.status)\n"
            "sys.stdout.write(response.read().decode(errors='replace'))\n"
        )
        result = docker("exec", name, "python3", "-c", script, path, host_header or public_address.HOST)
        status, _, body = result.stdout.partition("\n")
        return int(status), body

    @staticmethod
    def sh(name: str, script: str, *, check: bool = True, timeout: float = 120) -> str:
        return on_host(name, script, check=check, timeout=timeout)

    def rollout_order(self) -> list[str]:
        """The web hosts the inventory finds, in the order a rollout takes them."""
        result = subprocess.run(
            [str(BIN / "ansible-inventory"), "-i", INVENTORY, "--graph", "role_web"],
            cwd=ROOT,
            env=tool_env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return re.findall(r"\|--(\S+)", result.stdout)


# ---------------------------------------------------------------------------------------------
# Request streams


def _fetch_from(hosts: Sequence[Host]) -> Callable[[str, float], Reply]:
    """A fetch of a release's identity: a host's from its nginx's /healthz/ (which names the release
    to any client), the front door's from /version.json through the load balancer over HTTPS, as
    users come, with the host that answered."""
    addresses = {host.name: host.ip for host in hosts}

    def fetch(target: str, timeout: float) -> Reply:
        if target == FRONT_DOOR:
            status, _headers, body = public_address.get("/version.json", timeout=timeout)
            release = release_of(status, body)
            return Reply(release["version"], release["host"])
        status, body = http_get(addresses[target], "/healthz/", timeout=timeout)
        return Reply(release_of(status, body)["version"])

    return fetch


def stream_requests(hosts: Sequence[Host] = (), *, front_door: bool = False) -> RequestStream:
    """A request stream (deploykit/request_stream.py, its default pace and bounds) to each of
    `hosts` and, with `front_door=True`, to the environment's public address."""
    targets = [host.name for host in hosts] + ([FRONT_DOOR] if front_door else [])
    return RequestStream(targets, _fetch_from(hosts))


# ---------------------------------------------------------------------------------------------
# Releases


@dataclass(frozen=True)
class Release:
    version: str
    tag: str
    uri: str


@dataclass(frozen=True)
class Releases:
    v1: Release
    v2: Release
    # v2 plus a setting that binds gunicorn to the container's loopback: never ready.
    unready: Release
    # v2 plus a migration that always raises.
    failing_migration: Release
    # v2 plus a 40 MiB layer of random bytes: a pull that needs room on the host's disk.
    large: Release
    # v2 plus a middleware that answers one request in five with a 500: ready, but broken.
    flaky: Release


def _build_and_push(version: str, tag: str, *, context: Path = app_image.APP_DIR, base: str = "") -> Release:
    local = f"{REPOSITORY}:{tag}"
    app_image.build(
        local,
        version=version,
        revision=f"e2e{RUN_TOKEN}{version}",
        build_id=f"e2e-{RUN_TOKEN}",
        context=context,
        **({"base_image": base} if base else {}),
    )
    return Release(version, tag, registry.push(local, REPOSITORY, tag))


def build_releases() -> Releases:
    """The six releases, built from this tree (v1, v2) and from v2 plus a fixture (v3 to v6)."""
    v1 = _build_and_push("v1", "e2e-v1")
    v2 = _build_and_push("v2", "e2e-v2")
    base = f"{REPOSITORY}:{v2.tag}"
    return Releases(
        v1=v1,
        v2=v2,
        unready=_build_and_push("v3", "e2e-v3-unready", context=FIXTURES / "unready-release", base=base),
        failing_migration=_build_and_push(
            "v4", "e2e-v4-failing-migration", context=FIXTURES / "failing-migration", base=base
        ),
        large=_build_and_push("v5", "e2e-v5-large", context=FIXTURES / "large-release", base=base),
        flaky=_build_and_push("v6", "e2e-v6-flaky", context=FIXTURES / "flaky-release", base=base),
    )


# ---------------------------------------------------------------------------------------------
# The session: platform, a fresh stand-in, the releases


def _wait_until_no_deploy_runs() -> None:
    """A stand-in whose deploy lock is held is in use by a deploy: let it finish first."""
    if not standin.moto_answers():
        return
    ssm = standin.client("ssm")
    deadline = time.monotonic() + BUSY_STANDIN_WAIT_SECONDS
    while True:
        try:
            holder = ssm.get_parameter(Name=LOCK_PARAMETER)["Parameter"]["Value"]
        except ssm.exceptions.ParameterNotFound:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"the stand-in is busy: {LOCK_PARAMETER} has been held for over "
                f"{BUSY_STANDIN_WAIT_SECONDS} s ({holder}); wait for that deploy or run `make stand-in-down`"
            )
        time.sleep(5)


def _fresh_standin() -> list[standin.Host]:
    _wait_until_no_deploy_runs()
    standin.down()
    return standin.up(standin.DEFAULT_HOSTS)


@pytest.fixture(scope="session")
def e2e_session() -> Iterator[tuple[Fleet, Releases]]:
    started = time.monotonic()
    # What `make setup` starts, started again only where it does not answer.
    engine.ensure_engine()
    postgres.ensure_cluster()
    images.ensure_images()
    registry.ensure_registry()
    apt_cache.ensure_apt_cache()
    network.ensure_network()
    # The hosts boot while the images build.
    with ThreadPoolExecutor(max_workers=2) as pool:
        hosts_future = pool.submit(_fresh_standin)
        releases = build_releases()
        hosts = hosts_future.result()
    fleet = Fleet([Host(host.name, host.ip) for host in hosts])
    REPORT.setup_seconds = time.monotonic() - started
    _session_time["setup"] = REPORT.setup_seconds
    try:
        yield fleet, releases
    finally:
        started = time.monotonic()
        if os.environ.get("DEPLOYKIT_E2E_KEEP") != "1":
            standin.down()
        REPORT.teardown_seconds = _session_time["teardown"] = time.monotonic() - started


@pytest.fixture(scope="session")
def fleet(e2e_session: tuple[Fleet, Releases]) -> Fleet:
    return e2e_session[0]


@pytest.fixture(scope="session")
def releases(e2e_session: tuple[Fleet, Releases]) -> Releases:
    return e2e_session[1]


def ssm_value(name: str) -> str:
    return standin.client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]


_seen_secrets: set[str] = set()


def secret_values() -> list[str]:
    """The app's SSM values seen so far (one may be deleted for a while), and the database password."""
    for name in SSM_SECRETS:
        with contextlib.suppress(Exception):
            _seen_secrets.add(ssm_value(name))
    for value in list(_seen_secrets):
        match = re.match(r"^\w+://[^:/@]+:([^@]+)@", value)
        if match:
            _seen_secrets.add(match.group(1))
    return sorted((value for value in _seen_secrets if len(value) >= 8), key=len, reverse=True)


@pytest.fixture(scope="session")
def ansible(e2e_session: tuple[Fleet, Releases]) -> Ansible:
    return Ansible(masked=secret_values)


class HistoryTable(html.parser.HTMLParser):
    """The rows of the app page's deploy history table, as lists of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._in_history = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and "history" in (dict(attrs).get("class") or "").split():
            self._in_history = True
        elif self._in_history and tag == "tr":
            self.rows.append([])
        elif self._in_history and tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_history = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def history_rows(page: str) -> list[dict[str, str]]:
    """The deploy history on the app page: deployed, version, commit, host, by, build."""
    parser = HistoryTable()
    parser.feed(page)
    columns = ("deployed", "version", "commit", "host", "by", "build")
    return [dict(zip(columns, row, strict=True)) for row in parser.rows if len(row) == len(columns)]


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll `predicate` until it returns something true; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., Any]:
    return wait_until


def freeze_host(name: str, frozen: bool) -> None:
    """docker pause (or unpause) a host: its connections stay open and nothing on it answers, as
    a host that hangs or loses its network does."""
    docker("pause" if frozen else "unpause", name, timeout=60)


@pytest.fixture(scope="session")
def freeze() -> Callable[[str, bool], None]:
    return freeze_host


@pytest.fixture(scope="session")
def request_stream() -> Callable[..., RequestStream]:
    return stream_requests


@dataclass(frozen=True)
class FrontDoor:
    """The environment's public address: the stand-in's load balancer on this machine's loopback."""

    url: str = public_address.URL
    host: str = public_address.HOST
    port: int = public_address.HTTPS_PORT
    http_port: int = public_address.HTTP_PORT

    @property
    def detection_window(self) -> float:
        return standin.detection_window_seconds()

    @staticmethod
    def get(path: str, **kwargs: Any) -> tuple[int, dict[str, str], str]:
        return public_address.get(path, **kwargs)

    @staticmethod
    def get_http(path: str, **kwargs: Any) -> tuple[int, dict[str, str]]:
        return public_address.get_http(path, **kwargs)


@pytest.fixture(scope="session")
def front_door(e2e_session: tuple[Fleet, Releases]) -> FrontDoor:
    return FrontDoor()


@pytest.fixture(scope="session")
def ssm(e2e_session: tuple[Fleet, Releases]) -> Any:
    """The stand-in's SSM (moto)."""
    return standin.client("ssm")


@pytest.fixture(scope="session")
def ec2(e2e_session: tuple[Fleet, Releases]) -> Any:
    """The stand-in's EC2 API (moto)."""
    return standin.ec2_client()
