"""The deploy's controller-side plugins, run by ansible-playbook on the controller alone:
the deploy lock (action plugin and callback) against moto's SSM, and the timeline callback.

moto stands in for SSM here (a server of this module's own, on a free port).
"""

from __future__ import annotations

import contextlib
import datetime
import getpass
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import boto3
import pytest

from deploykit.system import ROOT

BIN = Path(sys.executable).parent
LOCK = "/deploykit/test/deploy-lock"
# moto takes any key; this one is not a secret.
KEY = "testing"


@pytest.fixture(scope="module")
def ssm_endpoint(moto_server, request: pytest.FixtureRequest) -> str:
    return moto_server(request)


@pytest.fixture
def ssm(ssm_endpoint: str):
    client = boto3.client(
        "ssm", endpoint_url=ssm_endpoint, region_name="us-east-1",
        aws_access_key_id=KEY, aws_secret_access_key=KEY,
    )  # fmt: skip
    yield client
    with contextlib.suppress(client.exceptions.ParameterNotFound):
        client.delete_parameter(Name=LOCK)


CONTROLLER_PLAY = (
    "- name: Controller only\n  hosts: localhost\n  connection: local\n  gather_facts: false\n"
    '  vars:\n    ansible_python_interpreter: "{{ ansible_playbook_python }}"\n  tasks:\n'
)


def _playbook(tmp_path: Path, endpoint: str, tasks: str, **env: str) -> subprocess.CompletedProcess[str]:
    return _run(tmp_path, endpoint, CONTROLLER_PLAY + textwrap.indent(textwrap.dedent(tasks), "    "), **env)


def _run(
    tmp_path: Path, endpoint: str, text: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(text)
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ANSIBLE_", "AWS_", "DEPLOYKIT_"))
    }
    environment.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID=KEY,
        AWS_SECRET_ACCESS_KEY=KEY,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        NO_PROXY="127.0.0.1,localhost",
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        **env,
    )
    return subprocess.run(
        [str(BIN / "ansible-playbook"), *args, str(playbook)],
        cwd=ROOT, env=environment, capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip


TAKE = f"""
- name: Take the lock
  deploy_lock:
    name: {LOCK}
    run_id: "{{{{ lookup('ansible.builtin.env', 'DEPLOYKIT_RUN_ID') }}}}"
    holder: "{{{{ holder }}}}"
    region: us-east-1
    details:
      image_tag: abc
"""


def test_lock_is_refused_while_another_run_holds_it_and_names_the_holder(tmp_path, ssm, ssm_endpoint):
    ssm.put_parameter(
        Name=LOCK, Type="String",
        Value=json.dumps({"holder": "codebuild:1234", "started_at": "2026-12-01T10:00:00Z",
                          "run_id": "other"}),
    )  # fmt: skip
    run = _playbook(tmp_path, ssm_endpoint, TAKE.replace("{{ holder }}", "laptop"))
    assert run.returncode != 0
    assert "held by codebuild:1234 since 2026-12-01T10:00:00Z" in run.stdout
    assert "deploy_lock_force=true" in run.stdout
    # Refused: the other run's lock is left as it was.
    assert json.loads(ssm.get_parameter(Name=LOCK)["Parameter"]["Value"])["run_id"] == "other"


def _held_by(ssm, **lock: object) -> None:
    ssm.put_parameter(Name=LOCK, Type="String", Value=json.dumps({"holder": "ci", "run_id": "other", **lock}))


def test_lock_held_by_a_live_process_is_not_called_stale(tmp_path, ssm, ssm_endpoint):
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # This test's own process: it runs, on this machine.
    _held_by(ssm, started_at=now, user="ci", machine=socket.gethostname(), pid=os.getpid(), image_tag="v7")
    run = _playbook(tmp_path, ssm_endpoint, TAKE.replace("{{ holder }}", "laptop"))
    assert run.returncode != 0
    holder = f"ci (user ci, on {socket.gethostname()}, process {os.getpid()})"
    assert f"held by {holder} since {now}, run other, deploying v7." in run.stdout, run.stdout
    assert "Wait for that deploy to finish" in run.stdout
    assert "It is stale" not in run.stdout


def test_lock_whose_process_is_gone_from_this_machine_is_stale_with_the_override_command(
    tmp_path, ssm, ssm_endpoint
):
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    gone = _a_pid_that_is_gone()
    _held_by(ssm, started_at=now, user="ci", machine=socket.gethostname(), pid=gone)
    run = _playbook(tmp_path, ssm_endpoint, TAKE.replace("{{ holder }}", "laptop"))
    assert run.returncode != 0
    assert f"It is stale: process {gone} no longer runs on {socket.gethostname()}" in run.stdout, run.stdout
    # The command this run was started with, and the override.
    command = f"ansible-playbook {tmp_path / 'playbook.yml'} -e deploy_lock_force=true"
    assert f"Take it over with: {command}" in run.stdout
    assert json.loads(ssm.get_parameter(Name=LOCK)["Parameter"]["Value"])["run_id"] == "other"


def test_lock_older_than_the_timeout_is_stale(tmp_path, ssm, ssm_endpoint):
    # Another machine's process cannot be looked for: only the lock's age tells.
    _held_by(ssm, started_at="2026-11-30T10:00:00Z", user="ci", machine="elsewhere", pid=1)
    run = _playbook(tmp_path, ssm_endpoint, TAKE.replace("{{ holder }}", "laptop"))
    assert run.returncode != 0
    assert "It is stale: it was taken" in run.stdout, run.stdout
    assert "more than the 90 min a deploy may take" in run.stdout


def _a_pid_that_is_gone() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_lock_is_held_during_the_run_and_released_at_its_end(tmp_path, ssm, ssm_endpoint):
    tasks = (
        TAKE.replace("{{ holder }}", "laptop")
        + f"""
- name: Read the lock while the run holds it
  ansible.builtin.set_fact:
    held: "{{{{ lookup('amazon.aws.ssm_parameter', '{LOCK}', region='us-east-1') | from_json }}}}"
- name: Show it
  ansible.builtin.debug:
    msg: >-
      holder={{{{ held['holder'] }}}} image={{{{ held['image_tag'] }}}}
      where={{{{ held['user'] }}}}@{{{{ held['machine'] }}}}:{{{{ held['pid'] }}}}
"""
    )
    left_before = set(Path(tempfile.gettempdir()).glob("deploykit-lock-*"))
    run = _playbook(tmp_path, ssm_endpoint, tasks)
    assert run.returncode == 0, run.stdout[-2000:]
    assert f"holder=laptop image=abc where={getpass.getuser()}@{socket.gethostname()}:" in run.stdout
    assert f"deploy lock {LOCK} released" in run.stdout
    # Where the lock is, the callback learnt from the task's result: nothing on disk.
    assert set(Path(tempfile.gettempdir()).glob("deploykit-lock-*")) == left_before
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.get_parameter(Name=LOCK)


def test_lock_is_released_when_the_run_fails(tmp_path, ssm, ssm_endpoint):
    tasks = (
        TAKE.replace("{{ holder }}", "laptop")
        + """
- name: Fail
  ansible.builtin.fail:
    msg: a host did not become ready
"""
    )
    run = _playbook(tmp_path, ssm_endpoint, tasks)
    assert run.returncode != 0
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.get_parameter(Name=LOCK)


def test_lock_is_released_when_an_error_aborts_the_run(tmp_path, ssm, ssm_endpoint):
    """A task file that does not parse ends ansible-playbook without its end-of-run statistics."""
    (tmp_path / "broken.yml").write_text("- name: Broken\n  ansible.builtin.debug:\n    msg: [unclosed\n")
    tasks = (
        TAKE.replace("{{ holder }}", "laptop")
        + f"""
- name: Include a task file that does not parse
  ansible.builtin.include_tasks: {tmp_path / "broken.yml"}
"""
    )
    run = _playbook(tmp_path, ssm_endpoint, tasks)
    assert run.returncode != 0
    assert "changed: [localhost]" in run.stdout  # the lock was taken before the error
    assert "broken.yml" in run.stdout + run.stderr
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.get_parameter(Name=LOCK)


def test_stale_lock_is_taken_over_with_force(tmp_path, ssm, ssm_endpoint):
    ssm.put_parameter(
        Name=LOCK, Type="String",
        Value=json.dumps({"holder": "gone", "started_at": "2026-11-30T10:00:00Z", "run_id": "stale"}),
    )  # fmt: skip
    tasks = TAKE.replace("{{ holder }}", "laptop").replace(
        "    region: us-east-1\n", "    region: us-east-1\n    force: true\n"
    )
    run = _playbook(tmp_path, ssm_endpoint, tasks)
    assert run.returncode == 0, run.stdout[-2000:]


# The deploy_report callback: a run that took the lock and lost a host says so, host by host.
STOPPED_DEPLOY = (
    CONTROLLER_PLAY
    + textwrap.indent(textwrap.dedent(TAKE.replace("{{ holder }}", "laptop")), "    ")
    + """
- name: A host's turn
  hosts: web
  gather_facts: false
  tasks:
    - name: Reach the host
      ansible.builtin.ping:
    - name: Say the host's turn is over, as the smoke check does
      ansible.builtin.set_fact:
        deploy_host_serves: {version: v2}
        deploy_host_finished: true
"""
)


def test_a_stopped_deploy_names_the_lost_host_its_address_and_what_switched(tmp_path, ssm, ssm_endpoint):
    (tmp_path / "hosts.ini").write_text(
        "[web]\nweb-1 ansible_connection=local\n"
        "web-2 ansible_host=127.0.0.1 ansible_port=1 ansible_connection=ssh\n"
        '[web:vars]\nansible_python_interpreter="{{ ansible_playbook_python }}"\n'
    )
    run = _run(tmp_path, ssm_endpoint, STOPPED_DEPLOY, "-i", str(tmp_path / "hosts.ini"))
    assert run.returncode != 0
    report = run.stdout.partition("DEPLOY STOPPED")[2]
    assert (
        "web-2 (in 'A host's turn'): unreachable at 127.0.0.1: nothing listens on its SSH port" in report
    ), run.stdout[-3000:]
    assert "Switched in this run: web-1" in report
    assert f"run the same command again: ansible-playbook -i {tmp_path / 'hosts.ini'}" in report
    assert "ansible-playbook playbooks/rollback.yml -i " in report
    assert "--limit web-1" in report


SWITCHED_BACK = (
    STOPPED_DEPLOY
    + """
    - name: Switch the canary back, as the canary's bake does when it fails
      ansible.builtin.set_fact:
        deploy_host_finished: false
        deploy_host_switched_back: true
      when: inventory_hostname == 'web-1'
    - name: Stop the deploy
      ansible.builtin.fail:
        msg: The canary failed its bake
      when: inventory_hostname == 'web-1'
"""
)


def test_a_canary_switched_back_is_not_reported_as_switched(tmp_path, ssm, ssm_endpoint):
    (tmp_path / "hosts.ini").write_text(
        "[web]\nweb-1 ansible_connection=local\n"
        '[web:vars]\nansible_python_interpreter="{{ ansible_playbook_python }}"\n'
    )
    run = _run(tmp_path, ssm_endpoint, SWITCHED_BACK, "-i", str(tmp_path / "hosts.ini"))
    assert run.returncode != 0
    report = run.stdout.partition("DEPLOY STOPPED")[2]
    assert "Switched back by the canary's bake: web-1" in report, run.stdout[-3000:]
    assert "Switched in this run: none: every host serves what it served before" in report
    assert "playbooks/rollback.yml" not in report


IGNORED_UNREACHABLE = STOPPED_DEPLOY.replace(
    """    - name: Reach the host
      ansible.builtin.ping:
""",
    """    - name: Ask a host that may not answer, as the canary's sampling asks the baseline
      ansible.builtin.ping:
      delegate_to: web-2
      ignore_unreachable: true
      when: inventory_hostname == 'web-1'
    - name: Stop the deploy on the host that answers
      ansible.builtin.fail:
        msg: stopped on purpose
      when: inventory_hostname == 'web-1'
""",
)


def test_a_host_a_task_may_miss_is_not_reported_as_lost(tmp_path, ssm, ssm_endpoint):
    (tmp_path / "hosts.ini").write_text(
        "[web]\nweb-1 ansible_connection=local\n"
        "web-2 ansible_host=127.0.0.1 ansible_port=1 ansible_connection=ssh\n"
        '[web:vars]\nansible_python_interpreter="{{ ansible_playbook_python }}"\n'
    )
    run = _run(tmp_path, ssm_endpoint, IGNORED_UNREACHABLE, "-i", str(tmp_path / "hosts.ini"))
    assert run.returncode != 0
    report = run.stdout.partition("DEPLOY STOPPED")[2]
    assert (
        "web-1 (in 'A host's turn'): Stop the deploy on the host that answers: stopped on purpose" in report
    ), run.stdout[-3000:]
    assert "unreachable" not in report


def test_a_run_that_took_no_lock_reports_nothing(tmp_path, ssm_endpoint):
    run = _playbook(tmp_path, ssm_endpoint, "- name: Fail\n  ansible.builtin.fail:\n    msg: no\n")
    assert run.returncode != 0
    assert "DEPLOY STOPPED" not in run.stdout


def test_timeline_records_each_task_and_only_timing_lines(tmp_path, ssm_endpoint):
    timeline_file = tmp_path / "timeline.json"
    tasks = """
- name: Print a timing line and something else
  ansible.builtin.command:
    argv: [printf, "other output\\ndrain: 0.250 s\\n"]
  changed_when: false
- name: Print a secret
  ansible.builtin.command:
    argv: [echo, "drain: 9.000 s"]
  changed_when: false
  no_log: true
"""
    run = _playbook(tmp_path, ssm_endpoint, tasks, DEPLOYKIT_TIMELINE=str(timeline_file))
    assert run.returncode == 0, run.stdout[-2000:]
    recorded = json.loads(timeline_file.read_text())
    by_task = {event["task"]: event for event in recorded["tasks"]}
    timed = by_task["Print a timing line and something else"]
    assert timed["timings"] == {"drain": 0.25}
    assert recorded["started"] <= timed["start"] <= timed["end"] <= recorded["ended"]
    assert "other output" not in timeline_file.read_text()
    assert "timings" not in by_task["Print a secret"]
