"""The deploy's controller-side plugins, run by ansible-playbook on the controller alone:
the deploy lock (action plugin and callback) against moto's SSM, and the timeline callback.

moto stands in for SSM here (a server of this module's own, on a free port).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
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


def _playbook(tmp_path: Path, endpoint: str, tasks: str, **env: str) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(
        "- name: Controller only\n  hosts: localhost\n  connection: local\n  gather_facts: false\n"
        '  vars:\n    ansible_python_interpreter: "{{ ansible_playbook_python }}"\n  tasks:\n'
        + textwrap.indent(textwrap.dedent(tasks), "    ")
    )
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
        [str(BIN / "ansible-playbook"), str(playbook)],
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


def test_lock_is_held_during_the_run_and_released_at_its_end(tmp_path, ssm, ssm_endpoint):
    tasks = (
        TAKE.replace("{{ holder }}", "laptop")
        + f"""
- name: Read the lock while the run holds it
  ansible.builtin.set_fact:
    held: "{{{{ lookup('amazon.aws.ssm_parameter', '{LOCK}', region='us-east-1') | from_json }}}}"
- name: Show it
  ansible.builtin.debug:
    msg: "holder={{{{ held['holder'] }}}} image={{{{ held['image_tag'] }}}}"
"""
    )
    run = _playbook(tmp_path, ssm_endpoint, tasks)
    assert run.returncode == 0, run.stdout[-2000:]
    assert "holder=laptop image=abc" in run.stdout
    assert f"deploy lock {LOCK} released" in run.stdout
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
