"""The deploy notices (plugins/callback/deploy_notice.py) against moto, read back through SQS.

Each run is a small playbook shaped like playbooks/deploy.yml, on two hosts of this machine
(connection local): the real lock tasks (playbooks/tasks/lock.yml, with the playbooks' own
group_vars for the lock's name and holder), app_deploy's reading of what a host served before, and
a rollout a host at a time that notes what each host serves after, as the smoke check does; a
host can be made to fail there. moto is the stand-in for SNS, SQS, STS and SSM: an SQS queue
subscribed to the topic receives what a subscriber of the real topic would.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from deploykit import standin
from deploykit.system import ROOT

BIN = Path(sys.executable).parent
REGION = "us-east-1"
ENV = "unit"
TOPIC = f"deploykit-{ENV}-deploy-notices"
HOSTS = ["web-1", "web-2"]
REASON = "release v2 did not become ready within 20 s"

PLAYBOOK = f"""
- name: Check the deploy and take the lock
  hosts: localhost:role_web
  gather_facts: false
  vars_files:
    - {ROOT}/playbooks/group_vars/all/deploy.yml
    - {ROOT}/playbooks/vars/deploy.yml
  tasks:
    - name: Take the lock
      run_once: true
      block:
        - name: Include the deploy lock
          ansible.builtin.import_tasks: {ROOT}/playbooks/tasks/lock.yml

- name: Plan the rollout
  hosts: role_web
  gather_facts: false
  tasks:
    - name: Note what the host served before, as app_deploy's inspect does
      ansible.builtin.set_fact:
        app_deploy_previous_tag: v1

- name: Roll out the release
  hosts: role_web
  serial: 1
  max_fail_percentage: 0
  gather_facts: false
  tasks:
    - name: Switch the host to the release
      ansible.builtin.fail:
        msg: "{REASON}"
      when: inventory_hostname == fail_host | default('')
    - name: Note the release this host serves, as the smoke check does
      ansible.builtin.set_fact:
        deploy_host_serves:
          image: "registry.example.test/deploykit/app:{{{{ app_deploy_image_tag }}}}"
        deploy_host_finished: true

- name: Summarise the deploy
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Show the end
      ansible.builtin.debug:
        msg: done
"""


def _client(service: str, endpoint: str):
    keys = standin.environment()
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture(scope="module")
def moto_endpoint(moto_server, request: pytest.FixtureRequest) -> str:
    return moto_server(request)


@pytest.fixture
def queue(moto_endpoint: str, request: pytest.FixtureRequest):
    """An SQS queue subscribed to the environment's topic (made here as provisioning makes it);
    returns a reader of the notices it received."""
    sns, sqs = _client("sns", moto_endpoint), _client("sqs", moto_endpoint)
    topic_arn = sns.create_topic(Name=TOPIC)["TopicArn"]
    url = sqs.create_queue(QueueName=f"notices-{request.node.name[:60]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    subscription = sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)["SubscriptionArn"]

    def read() -> list[dict[str, Any]]:
        """The notices received, oldest first: SNS's envelope (Subject, MessageAttributes) with
        the JSON document of the message as `notice`."""
        found = []
        while True:
            batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
                "Messages", []
            )
            if not batch:
                break
            for message in batch:
                envelope = json.loads(message["Body"])
                envelope["notice"] = json.loads(envelope["Message"])
                found.append(envelope)
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return sorted(found, key=lambda envelope: envelope["Timestamp"])

    yield read
    sns.unsubscribe(SubscriptionArn=subscription)
    sqs.delete_queue(QueueUrl=url)
    # A test whose run was killed leaves the lock behind: the next test must not be refused by it.
    ssm = _client("ssm", moto_endpoint)
    with contextlib.suppress(ssm.exceptions.ParameterNotFound):
        ssm.delete_parameter(Name=f"/deploykit/{ENV}/deploy-lock")


def _start(
    tmp_path: Path, endpoint: str, *args: str, env: dict[str, str] | None = None, playbook: str = PLAYBOOK
) -> subprocess.Popen[str]:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "vars": {
                        "app_env": ENV,
                        "aws_region": REGION,
                        "deploy_notice_topic": "deploykit-{{ app_env }}-deploy-notices",
                        "ansible_python_interpreter": sys.executable,
                    },
                    "children": {
                        "role_web": {"hosts": {host: {"ansible_connection": "local"} for host in HOSTS}}
                    },
                }
            }
        )
    )
    (tmp_path / "play.yml").write_text(playbook)
    environ = {
        key: value
        for key, value in standin.tool_env().items()
        if not key.startswith(("ANSIBLE_", "DEPLOYKIT_", "CODEBUILD_"))
    }
    environ.update(
        AWS_ENDPOINT_URL=endpoint,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        PYTHONUNBUFFERED="1",
        USER="tester",
        LOGNAME="tester",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        **(env or {}),
    )
    return subprocess.Popen(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(tmp_path / "play.yml"),
         "-e", "app_deploy_image_tag=v2", *args],
        cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _run(tmp_path: Path, endpoint: str, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    process = _start(tmp_path, endpoint, *args, **options)
    try:
        stdout, stderr = process.communicate(timeout=180)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _every_host(before: str, after: str) -> dict[str, dict[str, str]]:
    return {host: {"before": before, "after": after} for host in HOSTS}


def _output(run: subprocess.CompletedProcess[str]) -> str:
    return run.stdout + run.stderr


def test_a_good_run_publishes_its_start_and_its_end(tmp_path, moto_endpoint, queue):
    run = _run(tmp_path, moto_endpoint)
    assert run.returncode == 0, _output(run)[-3000:]
    started, ended = queue()
    assert [started["notice"]["event"], ended["notice"]["event"]] == ["started", "succeeded"]
    actor = f"tester@{socket.gethostname()}"
    for envelope in (started, ended):
        notice = envelope["notice"]
        assert (notice["action"], notice["environment"], notice["release"]) == ("deploy", ENV, "v2")
        assert (notice["hosts"], notice["actor"]) == (HOSTS, actor)
        assert envelope["MessageAttributes"]["environment"]["Value"] == ENV
    assert started["Subject"] == f"deploy of v2 to {ENV} started (2 hosts)"
    assert ended["Subject"].startswith(f"deploy of v2 to {ENV} succeeded in ")
    assert ended["notice"]["releases"] == _every_host("v1", "v2")
    assert ended["notice"]["duration_seconds"] >= 0
    assert "failure" not in ended["notice"]
    assert _output(run).count("deploy notice published to") == 2


def test_a_failed_run_publishes_the_failing_host_and_the_reason(tmp_path, moto_endpoint, queue):
    run = _run(tmp_path, moto_endpoint, "-e", "fail_host=web-1")
    assert run.returncode == 2, _output(run)[-3000:]
    started, failed = queue()
    assert [started["notice"]["event"], failed["notice"]["event"]] == ["started", "failed"]
    assert failed["Subject"] == f"deploy of v2 to {ENV} failed on web-1"
    assert failed["notice"]["failure"] == {
        "host": "web-1",
        "task": "Switch the host to the release",
        "reason": REASON,
    }
    # web-1 failed before it switched, web-2 was never reached: both serve what they served.
    assert failed["notice"]["releases"] == _every_host("v1", "v1")


def test_a_build_s_notices_name_the_build_as_the_actor(tmp_path, moto_endpoint, queue):
    build = "deploykit-unit-deploy:0b7c8a1e-5f1d-4c2e-9a57-6f3e2d1c0b9a"
    run = _run(tmp_path, moto_endpoint, env={"CODEBUILD_BUILD_ID": build})
    assert run.returncode == 0, _output(run)[-3000:]
    assert [envelope["notice"]["actor"] for envelope in queue()] == [build, build]


def test_a_rollback_says_it_is_one(tmp_path, moto_endpoint, queue):
    run = _run(tmp_path, moto_endpoint, "-e", "deploy_notice_action=rollback")
    assert run.returncode == 0, _output(run)[-3000:]
    assert [envelope["Subject"].split(" succeeded")[0].split(" started")[0] for envelope in queue()] == [
        f"rollback of {ENV} to v2"
    ] * 2


def test_a_one_off_command_holding_the_lock_publishes_nothing(tmp_path, moto_endpoint, queue):
    # playbooks/run.yml takes the deploy lock through the same tasks, as deploy_notice_action=run.
    run = _run(tmp_path, moto_endpoint, "-e", "deploy_notice_action=run")
    assert run.returncode == 0, _output(run)[-3000:]
    assert queue() == []
    assert "deploy notice published" not in _output(run)


SWITCHED_BACK = PLAYBOOK.replace(
    """        deploy_host_finished: true
""",
    """        deploy_host_finished: true
    - name: Switch the canary back, as the canary's bake does when it fails
      ansible.builtin.set_fact:
        deploy_host_finished: false
        deploy_host_switched_back: true
      when: inventory_hostname == 'web-1'
    - name: Stop the deploy after the failed bake
      ansible.builtin.fail:
        msg: The canary failed its bake
      when: inventory_hostname == 'web-1'
""",
)


def test_a_canary_switched_back_is_published_as_serving_its_release_before(tmp_path, moto_endpoint, queue):
    run = _run(tmp_path, moto_endpoint, playbook=SWITCHED_BACK)
    assert run.returncode == 2, _output(run)[-3000:]
    _, failed = queue()
    assert failed["notice"]["failure"]["host"] == "web-1"
    assert failed["notice"]["releases"] == _every_host("v1", "v1")


def test_an_interrupted_run_still_publishes_its_failure(tmp_path, moto_endpoint, queue):
    # Ctrl-C stops ansible-playbook with no end-of-run statistics: the failure is published as the
    # process exits. The interrupt comes once the start was published, while web-1 switches: once
    # its task runs (the marker), not while ansible-playbook forks the worker for it, where
    # Python's logging swallows a KeyboardInterrupt and the run goes on as if no Ctrl-C came.
    marker = tmp_path / "switching"
    playbook = PLAYBOOK.replace(
        "      when: inventory_hostname == fail_host | default('')\n",
        "      when: inventory_hostname == fail_host | default('')\n"
        "    - name: Wait for the interrupt\n"
        f"      ansible.builtin.command: sh -c 'touch {marker} && sleep 120'\n"
        "      changed_when: false\n",
    )
    run = _start(tmp_path, moto_endpoint, playbook=playbook)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    output = stdout + stderr
    assert run.returncode != 0, output[-3000:]
    assert "PLAY RECAP" not in output
    started, failed = queue()
    assert (started["notice"]["event"], failed["notice"]["event"]) == ("started", "failed")
    assert failed["Subject"] == f"deploy of v2 to {ENV} failed on the controller"
    assert failed["notice"]["failure"]["reason"] == "ansible-playbook stopped before the run finished"
    assert failed["notice"]["releases"] == _every_host("v1", "v1")


def test_notices_are_off_with_one_line_when_the_environment_names_no_topic(tmp_path, moto_endpoint, queue):
    run = _run(tmp_path, moto_endpoint, "-e", "deploy_notice_topic=")
    assert run.returncode == 0, _output(run)[-3000:]
    assert _output(run).count(f"deploy notices are off: deploy_notice_topic is not set for {ENV}") == 1
    assert queue() == []


def test_a_run_refused_by_the_lock_publishes_nothing(tmp_path, moto_endpoint, queue):
    # Another deploy holds the lock: this run never started, and that deploy's notices are its own.
    ssm = _client("ssm", moto_endpoint)
    held = {"holder": "someone-else", "user": "someone-else", "machine": "elsewhere", "run_id": "other"}
    ssm.put_parameter(Name=f"/deploykit/{ENV}/deploy-lock", Value=json.dumps(held), Type="String")
    try:
        run = _run(tmp_path, moto_endpoint)
    finally:
        ssm.delete_parameter(Name=f"/deploykit/{ENV}/deploy-lock")
    assert run.returncode == 2, _output(run)[-3000:]
    assert "is held by someone-else" in _output(run)
    assert queue() == []


def test_a_subscription_can_ask_for_failures_only(tmp_path, moto_endpoint, queue):
    # docs/aws.md's filter policy on the message attribute `event`.
    sns, sqs = _client("sns", moto_endpoint), _client("sqs", moto_endpoint)
    topic_arn = sns.create_topic(Name=TOPIC)["TopicArn"]
    url = sqs.create_queue(QueueName="notices-failures-only")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"FilterPolicy": json.dumps({"event": ["failed"]})},
    )
    assert _run(tmp_path, moto_endpoint).returncode == 0
    assert _run(tmp_path, moto_endpoint, "-e", "fail_host=web-2").returncode == 2
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    assert [json.loads(json.loads(m["Body"])["Message"])["event"] for m in received] == ["failed"]
    assert [envelope["notice"]["event"] for envelope in queue()] == [
        "started",
        "succeeded",
        "started",
        "failed",
    ]


def test_an_email_reads_the_failure_as_text():
    spec = importlib.util.spec_from_file_location(
        "deploy_notice", ROOT / "plugins" / "callback" / "deploy_notice.py"
    )
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    message = {
        "event": "failed",
        "action": "deploy",
        "environment": "production",
        "release": "3f2c1e9d8b7a",
        "hosts": HOSTS,
        "actor": "deploykit-deploy:0b7c",
        "run_id": "r",
        "started_at": "2026-12-08T00:40:12Z",
        "duration_seconds": 41.26,
        "releases": {"web-1": {"before": "1a2b", "after": "1a2b"}, "web-2": {"before": "", "after": ""}},
        "failure": {"host": "web-1", "task": "app_deploy : Wait", "reason": REASON},
    }
    assert plugin.text(message).splitlines() == [
        "deploy of 3f2c1e9d8b7a to production failed on web-1",
        "",
        "environment: production",
        "deploy: 3f2c1e9d8b7a",
        "actor: deploykit-deploy:0b7c",
        "hosts: web-1, web-2",
        "started at: 2026-12-08T00:40:12Z",
        "duration: 41.3 s",
        "release before -> after:",
        "  web-1: 1a2b -> 1a2b",
        "  web-2: none -> none",
        "",
        "failed on: web-1",
        "task: app_deploy : Wait",
        f"reason: {REASON}",
    ]
    # SNS refuses a subject over 100 characters.
    assert len(plugin.subject({**message, "release": "t" * 128})) == 100


def test_a_check_run_publishes_nothing(tmp_path, moto_endpoint, queue):
    run = _run(tmp_path, moto_endpoint, "--check")
    assert run.returncode == 0, _output(run)[-3000:]
    assert queue() == []


@pytest.mark.parametrize("fault", ["SNS down", "no such topic"])
def test_a_notice_that_cannot_be_published_does_not_fail_the_run(tmp_path, moto_endpoint, queue, fault):
    if fault == "SNS down":
        with socket.socket() as probe:  # a port nothing listens on: connections are refused
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()[1]
        run = _run(
            tmp_path,
            moto_endpoint,
            "-e",
            "fail_host=web-2",
            env={"AWS_ENDPOINT_URL_SNS": f"http://127.0.0.1:{closed}"},
        )
    else:
        run = _run(
            tmp_path, moto_endpoint, "-e", "fail_host=web-2", "-e", "deploy_notice_topic=deploykit-nowhere"
        )
    output = _output(run)
    # The run's own outcome: web-1 switched, web-2 failed as it was told to, and nothing else.
    assert run.returncode == 2, output[-3000:]
    assert "web-2" in output.rpartition("PLAY RECAP")[2]
    assert output.count("deploy notice not published (started)") == 1
    assert "no further notice of this run is tried" in output
    assert "deploy notice published" not in output
    assert queue() == []
    # The lock was still given back.
    assert "deploy lock /deploykit/unit/deploy-lock released" in output


def test_the_stand_in_makes_the_topic_the_local_inventory_names():
    environment = yaml.safe_load(
        (ROOT / "inventory" / "local" / "group_vars" / "all" / "environment.yml").read_text()
    )
    assert (
        environment["deploy_notice_topic"].replace("{{ app_env }}", environment["app_env"])
        == standin.NOTICE_TOPIC
    )


def test_every_environment_names_its_own_topic():
    for env in ("production", "staging", "local"):
        path = ROOT / "inventory" / env / "group_vars" / "all" / "environment.yml"
        assert (
            yaml.safe_load(path.read_text())["deploy_notice_topic"]
            == "deploykit-{{ app_env }}-deploy-notices"
        )
