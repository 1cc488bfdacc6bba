"""Scenario 15: the day-2 commands on a fleet that serves a release: status, logs, one-off runs.

Whatever release the fleet serves when this scenario starts (only that every host serves one):
- `playbooks/status.yml` prints one row per host (the serving version and release, the one
  before it, the container's health, nginx's upstream link) and the deploy lock's holder, and
  changes nothing, not even the lock another run holds;
- `playbooks/logs.yml` prints the app's lines of every host, each prefixed by its host, merged by
  time, or of the one host --limit names; bad input is refused before any host is asked;
- `playbooks/run.yml` runs a manage.py command once in the serving release (as its non-root user,
  argv split without a shell), with the deploy lock held and given back however it ends, and its
  output shown with the secrets masked; an empty command, a held lock and a host that serves no
  release are refused before anything runs.
Each command is a row of its own in reports/e2e.json (FAULT_CASES below).
"""

from __future__ import annotations

import datetime
import http.client
import json
import re
import secrets
import textwrap
import time

import pytest
import yaml

from deploykit import front_door

pytestmark = pytest.mark.e2e

FAULT_CASES = {
    "status_runs": "status: one row per host, read only, the lock's holder shown",
    "log_runs": "logs: every host's lines merged by time, one host with --limit, bad input refused",
    "command_runs": "run: a manage.py command in the serving release, under the lock, secrets masked",
}

UPSTREAM_LINK = "/var/lib/deploykit/upstream.sock"
APP_STATE_FILE = "/var/lib/deploykit/app/state.json"
LOCK_PARAMETER = "/deploykit/local/deploy-lock"
SECRETS = ("/deploykit/local/DJANGO_SECRET_KEY", "/deploykit/local/DATABASE_URL")
STATUS_TASK = "Show each host's release, the one before it, its health, nginx's route and the deploy lock"
RUN_PLAY = "Run the command in the release the host serves"
LOGS_PLAY = "Read the app's log on every web host"
# What `docker logs --timestamps` puts before a line, after the logs playbook's "<host> | ".
_LOG_LINE = re.compile(
    r"^(?P<host>\S+)\s+\| (?P<stamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (?P<text>.*)$"
)


def debug_lines(run, task: str) -> list[str]:
    """The lines a debug task printed as its `msg` (a list of lines), from the default callback's
    result, JSON or YAML."""
    lines = run.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"TASK [{task}]"))
    result = next(i for i in range(start, len(lines)) if re.match(r"^(ok|fatal|failed): \[", lines[i]))
    first = lines[result].split("=> ", 1)[1].strip()
    body = []
    for line in lines[result + 1 :]:
        body.append(line)
        if first == "{" and line == "}":
            return json.loads("{" + "\n".join(body))["msg"]
        if first != "{" and line.strip() and not line.startswith(" "):
            body.pop()
            break
    return yaml.safe_load(textwrap.dedent("\n".join(body)))["msg"]


def table_rows(lines: list[str]) -> dict[str, dict[str, str]]:
    """The status table by host: each cell cut at its header's column."""
    header = lines[0]
    starts = [match.start() for match in re.finditer(r"(?<!\S)\S+(?: \S+)*", header)]
    names = [header[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
    rows = {}
    for line in lines[1:]:
        if not line.strip():
            break
        cells = [line[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
        rows[cells[0]] = dict(zip(names, cells, strict=True))
    return rows


def _lock(ssm) -> str | None:
    try:
        return ssm.get_parameter(Name=LOCK_PARAMETER)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        return None


def _state(fleet, name: str) -> dict:
    return json.loads(fleet.sh(name, f"cat {APP_STATE_FILE}"))


def _planted_lock(ssm) -> str:
    """A lock another run holds (a deploy from elsewhere), as the deploy_lock action writes one."""
    value = json.dumps(
        {
            "holder": "ops-elsewhere",
            "user": "ops",
            "machine": "another-controller",
            "pid": 4242,
            "started_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "run_id": "planted-by-scenario-15",
            "playbook": "Check the deploy and take the lock",
            "image_tag": "e2e-elsewhere",
        },
        sort_keys=True,
    )
    ssm.put_parameter(Name=LOCK_PARAMETER, Value=value, Type="String")
    return value


@pytest.fixture(scope="module")
def secret_texts(ssm) -> dict[str, str]:
    """The app's SSM values, and the database password alone (as test_09_secrets.py looks for them)."""
    values = {
        name: ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] for name in SECRETS
    }
    password = re.match(r"^\w+://[^:/@]+:([^@]+)@", values[SECRETS[1]])
    assert password, "DATABASE_URL in SSM holds no password"
    return {**values, "the database password": password.group(1)}


def _leaked(text: str, secrets_: dict[str, str]) -> list[str]:
    return [name for name, value in secrets_.items() if value in text]


def _get(address: str, path: str) -> int:
    """GET a path from a host's nginx (port 80) with the public host name (the app answers with its
    HTTPS redirect, and logs the request like any other)."""
    connection = http.client.HTTPConnection(address, 80, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": front_door.HOST, "User-Agent": "deploykit-e2e"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


# ---------------------------------------------------------------------------------------------
# status


def _health(fleet, name: str) -> str:
    """The Docker health check's verdict on the host's serving container."""
    container = _state(fleet, name)["current"]["container"]
    return fleet.sh(name, f"docker inspect --format '{{{{.State.Health.Status}}}}' {container}").strip()


@pytest.fixture(scope="module")
def status_runs(ansible, fleet, ssm, wait_for):
    assert _lock(ssm) is None, "the deploy lock is held before the scenario starts"
    # A release that has just started is "starting" until its health check first answers; the
    # table says what Docker says, so the rows are compared once every check has answered.
    wait_for(
        lambda: all(_health(fleet, name) == "healthy" for name in fleet.names),
        timeout=90,
        what="every serving container's health check to answer",
    )
    before = fleet.snapshot()
    free = ansible.run("status", ["playbooks/status.yml", "-i", "inventory/local"])
    planted = _planted_lock(ssm)
    try:
        held = ansible.run("status-lock-held", ["playbooks/status.yml", "-i", "inventory/local"])
        checked = ansible.run(
            "status-check-mode", ["playbooks/status.yml", "-i", "inventory/local", "--check"]
        )
        lock_after = _lock(ssm)
    finally:
        ssm.delete_parameter(Name=LOCK_PARAMETER)
    return {
        "free": free,
        "held": held,
        "checked": checked,
        "planted": planted,
        "lock_after": lock_after,
        "before": before,
        "after": fleet.snapshot(),
        "states": {name: _state(fleet, name) for name in fleet.names},
        "links": {name: fleet.sh(name, f"readlink {UPSTREAM_LINK}").strip() for name in fleet.names},
        "versions": fleet.versions(),
        "commits": {name: fleet.release(name)["git_commit"][:12] for name in fleet.names},
    }


def _status_table(run) -> dict[str, dict[str, str]]:
    assert run.returncode == 0, run.tail()
    return table_rows(debug_lines(run, STATUS_TASK))


def test_status_prints_a_row_per_host_with_the_version_it_serves(status_runs, fleet):
    table = _status_table(status_runs["free"])
    assert {name: row["VERSION"] for name, row in table.items()} == status_runs["versions"]
    assert sorted(table) == sorted(fleet.names)


def test_status_names_each_hosts_release_its_deploy_and_the_one_before(status_runs):
    table = _status_table(status_runs["free"])
    expected = {}
    for name, state in status_runs["states"].items():
        current, previous = state["current"], state.get("previous") or {}
        expected[name] = {
            "COMMIT": status_runs["commits"][name],
            "RELEASE": current["tag"],
            "SINCE": current["deployed_at"],
            "BY": current["actor"],
            "PREVIOUS": f"{previous['tag']} ({previous['deployed_at']})" if previous else "none",
            "NGINX ROUTES TO": status_runs["links"][name],
            # Docker's health check, and nginx's answer through the link.
            "HEALTH": "healthy, nginx 200",
            "MAINTENANCE": "off",
        }
    assert {name: {key: row[key] for key in expected[name]} for name, row in table.items()} == expected


def test_status_names_the_deploy_locks_holder_or_says_it_is_free(status_runs):
    free = debug_lines(status_runs["free"], STATUS_TASK)[-1]
    held = debug_lines(status_runs["held"], STATUS_TASK)[-1]
    assert free == f"Deploy lock {LOCK_PARAMETER}: free."
    assert (
        f"Deploy lock {LOCK_PARAMETER}: held by ops-elsewhere (user ops on another-controller, process 4242)"
        in held
    )
    assert "run planted-by-scenario-15" in held


def test_status_changes_nothing_and_takes_no_lock(status_runs):
    runs = [status_runs[key] for key in ("free", "held", "checked")]
    assert [run.returncode for run in runs] == [0, 0, 0], [run.tail() for run in runs]
    assert [sum(host["changed"] for host in run.recap().values()) for run in runs] == [0, 0, 0]
    # Another run's lock is left exactly as it was: status neither took it over nor released it.
    assert status_runs["lock_after"] == status_runs["planted"]
    assert status_runs["after"] == status_runs["before"]


def test_status_in_check_mode_prints_the_same_table(status_runs):
    assert _status_table(status_runs["checked"]) == _status_table(status_runs["held"])


# ---------------------------------------------------------------------------------------------
# logs


@pytest.fixture(scope="module")
def log_runs(ansible, fleet):
    token = secrets.token_hex(4)
    # From a second ago: this machine's clock is the hosts' (containers of one kernel).
    since = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    # Two rounds over the hosts, a request each, a moment apart: each host's access log gets a
    # line per round, so merged by time the hosts alternate.
    sent = []
    for round_ in range(2):
        for name in fleet.names:
            _get(fleet.by_name[name].ip, f"/e2e-logs-{token}-{round_}/")
            sent.append((name, round_))
            time.sleep(0.3)
    before = fleet.snapshot()
    return {
        "token": token,
        "sent": sent,
        "all": ansible.run(
            "logs-since", ["playbooks/logs.yml", "-i", "inventory/local", "-e", f"since={since}"]
        ),
        "limited": ansible.run(
            "logs-limit",
            ["playbooks/logs.yml", "-i", "inventory/local", "-e", "lines=20", "--limit", fleet.names[-1]],
        ),
        "bad_lines": ansible.run(
            "logs-bad-lines", ["playbooks/logs.yml", "-i", "inventory/local", "-e", "lines=ten"]
        ),
        "empty_since": ansible.run(
            "logs-empty-since", ["playbooks/logs.yml", "-i", "inventory/local", "-e", "since="]
        ),
        "before": before,
        "after": fleet.snapshot(),
    }


def _log_lines(run) -> list[re.Match]:
    assert run.returncode == 0, run.tail()
    text = debug_lines(run, "Show the log lines of every host, oldest first")
    parsed = [_LOG_LINE.match(line) for line in text]
    assert all(parsed), [line for line, match in zip(text, parsed, strict=True) if not match][:5]
    return parsed


def _moment(stamp: str) -> tuple[datetime.datetime, int]:
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.datetime.fromisoformat(whole), int(fraction.ljust(9, "0"))


def test_logs_show_every_hosts_lines_prefixed_by_host(log_runs, fleet):
    lines = _log_lines(log_runs["all"])
    assert sorted({match["host"] for match in lines}) == sorted(fleet.names)


def test_logs_of_all_hosts_are_merged_in_time_order(log_runs):
    lines = _log_lines(log_runs["all"])
    moments = [_moment(match["stamp"]) for match in lines]
    assert moments == sorted(moments)
    # The requests' own lines come in the order they were sent, hosts alternating.
    marker = re.compile(rf"/e2e-logs-{log_runs['token']}-(\d)/")
    seen = []
    for match in lines:
        found = marker.search(match["text"])
        if found and (match["host"], int(found.group(1))) not in seen:
            seen.append((match["host"], int(found.group(1))))
    assert seen == log_runs["sent"]


def test_logs_with_limit_show_that_host_only_and_the_lines_asked(log_runs, fleet):
    lines = _log_lines(log_runs["limited"])
    assert {match["host"] for match in lines} == {fleet.names[-1]}
    assert 0 < len(lines) <= 20
    assert log_runs["limited"].hosts_in(LOGS_PLAY) == [fleet.names[-1]]


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ("bad_lines", "lines=ten is not a number of lines"),
        ("empty_since", "since='' is not a time docker logs accepts"),
    ],
)
def test_bad_log_requests_are_refused_before_any_host_is_asked(log_runs, run, message):
    refused = log_runs[run]
    assert refused.returncode != 0
    assert message in refused.output, refused.tail()
    assert refused.hosts_in(LOGS_PLAY) == []


def test_logs_change_nothing(log_runs):
    assert log_runs["after"] == log_runs["before"]
    assert [
        sum(host["changed"] for host in log_runs[key].recap().values()) for key in ("all", "limited")
    ] == [0, 0]


# ---------------------------------------------------------------------------------------------
# run


def _run_args(*args: str) -> list[str]:
    return ["playbooks/run.yml", "-i", "inventory/local", *args]


@pytest.fixture(scope="module")
def command_runs(ansible, fleet, ssm, wait_for):
    assert _lock(ssm) is None, "the deploy lock is held before the run scenario starts"
    first = fleet.rollout_order()[0]
    found = {"first": first}
    found["showmigrations"] = ansible.run(
        "run-showmigrations", _run_args("-e", json.dumps({"command": "showmigrations releases"}))
    )
    # One word with spaces, quotes and a ';' a shell would act on: it must reach Python whole.
    found["shell"] = ansible.run(
        "run-shell-quoting",
        _run_args(
            "-e",
            json.dumps(
                {"command": """shell -c "import os; print('uid', os.getuid(), 'gid', os.getgid())" """}
            ),
        ),
    )
    # diffsettings prints SECRET_KEY and the database password: the output shows them masked.
    found["diffsettings"] = ansible.run("run-diffsettings", _run_args("-e", "command=diffsettings", "-v"))

    # The lock is held while the command runs, and given back at its end.
    started = ansible.start(
        "run-holds-the-lock",
        _run_args(
            "-e",
            json.dumps({"command": "shell -c 'import time; time.sleep(10)'"}),
            "--limit",
            fleet.names[-1],
        ),
    )
    found["lock_while_running"] = json.loads(
        wait_for(
            lambda: _lock(ssm) or (not started.running() and "{}"),
            timeout=120,
            what="run.yml to take the lock",
        )
    )
    found["sleeping"] = started.wait()
    found["lock_after_run"] = _lock(ssm)
    # A command that fails still gives the lock back.
    found["failing"] = ansible.run("run-failing-command", _run_args("-e", "command=nosuchcommand"))
    found["lock_after_failure"] = _lock(ssm)

    before = fleet.snapshot()
    found["empty"] = ansible.run("run-empty-command", _run_args("-e", "command="))
    found["missing"] = ansible.run("run-no-command", _run_args())
    planted = _planted_lock(ssm)
    try:
        found["locked"] = ansible.run("run-lock-held", _run_args("-e", "command=showmigrations"))
        found["lock_after_locked"] = _lock(ssm)
    finally:
        ssm.delete_parameter(Name=LOCK_PARAMETER)
    found["planted"] = planted
    found["lock_after_refusals"] = _lock(ssm)
    found["refusals_after"] = fleet.snapshot()
    found["refusals_before"] = before

    # A host whose release is stopped serves none: nginx's link points at a socket nobody listens on.
    host = fleet.names[-1]
    container = _state(fleet, host)["current"]["container"]
    fleet.sh(host, f"docker stop --time 5 {container}")
    try:
        found["no_release_before"] = fleet.containers(host)
        found["no_release"] = ansible.run(
            "run-no-release", _run_args("-e", "command=showmigrations", "--limit", host)
        )
        found["no_release_after"] = fleet.containers(host)
        found["lock_after_no_release"] = _lock(ssm)
    finally:
        fleet.sh(host, f"docker start {container}")
        wait_for(
            lambda: fleet.versions()[host].startswith("v"),
            timeout=90,
            what=f"{host}'s release to answer again",
        )
    found["no_release_host"] = host
    return found


def test_run_executes_the_command_on_the_first_host_and_shows_its_output(command_runs):
    run = command_runs["showmigrations"]
    assert run.returncode == 0, run.tail()
    assert run.hosts_in(RUN_PLAY) == [command_runs["first"]]
    assert "[X] 0001_initial" in run.output
    assert "python manage.py showmigrations releases" in run.output


def test_run_passes_the_command_as_argv_and_runs_as_the_release_user(command_runs):
    run = command_runs["shell"]
    assert run.returncode == 0, run.tail()
    # The image's user, not root; the ';' and the quotes reached Python, no shell read them.
    assert "uid 10001 gid 10001" in run.output


def test_run_masks_the_secrets_a_command_prints(command_runs):
    run = command_runs["diffsettings"]
    assert run.returncode == 0, run.tail()
    assert "SECRET_KEY = '********'" in run.output
    assert "'PASSWORD': '********'" in run.output


def test_no_run_prints_a_secret(command_runs, secret_texts):
    runs = [value for value in command_runs.values() if hasattr(value, "output")]
    assert {run.label: _leaked(run.output, secret_texts) for run in runs} == {run.label: [] for run in runs}


def test_run_holds_the_deploy_lock_and_gives_it_back(command_runs, ansible):
    assert command_runs["sleeping"].returncode == 0, command_runs["sleeping"].tail()
    assert command_runs["lock_while_running"]["holder"] == ansible.actor
    assert command_runs["lock_while_running"]["playbook"] == "Check the command and take the lock"
    assert command_runs["lock_after_run"] is None


def test_a_failing_command_fails_the_run_and_gives_the_lock_back(command_runs):
    run = command_runs["failing"]
    assert run.returncode != 0
    assert "Unknown command: 'nosuchcommand'" in run.output, run.tail()
    assert command_runs["lock_after_failure"] is None


@pytest.mark.parametrize("case", ["empty", "missing"])
def test_run_without_a_command_is_refused_before_anything_runs(command_runs, case):
    run = command_runs[case]
    assert run.returncode != 0
    assert "No command to run" in run.output, run.tail()
    assert run.hosts_in(RUN_PLAY) == []


def test_run_is_refused_while_another_run_holds_the_lock(command_runs):
    run = command_runs["locked"]
    assert run.returncode != 0
    assert "is held by ops-elsewhere" in run.output, run.tail()
    assert run.hosts_in(RUN_PLAY) == []
    assert command_runs["lock_after_locked"] == command_runs["planted"]


def test_refused_runs_change_nothing(command_runs):
    assert command_runs["refusals_after"] == command_runs["refusals_before"]
    assert command_runs["lock_after_refusals"] is None


def test_run_on_a_host_without_a_release_is_refused_before_anything_runs(command_runs):
    run, host = command_runs["no_release"], command_runs["no_release_host"]
    assert run.returncode != 0
    assert f"{host}: no release serves on this host" in run.output, run.tail()
    assert "Nothing was run." in run.output
    assert [failure[0] for failure in run.failures()] == [host]
    assert command_runs["no_release_after"] == command_runs["no_release_before"]
    assert command_runs["lock_after_no_release"] is None
