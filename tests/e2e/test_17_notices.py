"""Scenario 17: every deploy and rollback publishes its start and its end or failure to SNS.

The stand-in makes the local environment's topic (inventory/local's deploy_notice_topic) as
provisioning makes it on AWS; this module subscribes an SQS queue of moto's to it, as an operator
subscribes an email address or a chat webhook, and reads back what a good deploy, the rollback
that undoes it and a failed deploy published. The fleet serves what it served when the module
started: the good deploy is rolled back, and the failed one never switched a host.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from deploykit import standin

pytestmark = pytest.mark.e2e

Notices = Callable[[], list[dict[str, Any]]]


@pytest.fixture(scope="module")
def notices(fleet) -> Iterator[Notices]:
    """An SQS queue subscribed to the environment's topic; returns a reader of the notices received
    since the last read (SNS's envelope, with the message's JSON document as `notice`)."""
    sns, sqs = standin.client("sns"), standin.client("sqs")
    (topic_arn,) = [
        topic["TopicArn"]
        for topic in sns.list_topics()["Topics"]
        if topic["TopicArn"].rsplit(":", 1)[-1] == standin.NOTICE_TOPIC
    ]
    url = sqs.create_queue(QueueName="e2e-deploy-notices")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    subscription = sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)["SubscriptionArn"]

    def read() -> list[dict[str, Any]]:
        found = []
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for message in batch:
                envelope = json.loads(message["Body"])
                envelope["notice"] = json.loads(envelope["Message"])
                found.append(envelope)
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return sorted(found, key=lambda envelope: envelope["Timestamp"])

    try:
        yield read
    finally:
        sns.unsubscribe(SubscriptionArn=subscription)
        sqs.delete_queue(QueueUrl=url)


def _serving(fleet) -> dict[str, str]:
    """The image tag each host serves, as its nginx answers."""
    return {name: fleet.release(name)["image"].rpartition(":")[2] for name in fleet.names}


@pytest.fixture(scope="module")
def good_deploy_and_rollback(ansible, fleet, releases, notices):
    before = _serving(fleet)
    notices()  # nothing published before this module counts
    # A release no host serves, so that every host switches, and the rollback returns each to its own.
    target = next(r for r in (releases.v1, releases.v2, releases.large) if r.tag not in before.values())
    deploy = ansible.deploy("notices-good", target.tag)
    deploy_notices = notices()
    during = _serving(fleet)
    rollback = ansible.rollback("notices-rollback")
    return before, target, deploy, deploy_notices, during, rollback, notices(), _serving(fleet)


@pytest.fixture(scope="module")
def failed_deploy(ansible, fleet, releases, notices, good_deploy_and_rollback):
    before = _serving(fleet)
    # This release never passes the readiness gate; a shorter gate (as in scenario 4) saves time.
    run = ansible.deploy("notices-unready", releases.unready.tag, "-e", "app_deploy_readiness_retries=10")
    return before, run, notices(), _serving(fleet)


def _check_common(
    envelopes: list[dict[str, Any]], fleet, ansible, action: str, release: str, events: list[str]
) -> None:
    assert [envelope["notice"]["event"] for envelope in envelopes] == events
    # The lock's holder: the user who ran it, on this machine (a build would be its build id).
    actor = f"{ansible.actor}@{socket.gethostname()}"
    for envelope in envelopes:
        notice = envelope["notice"]
        assert (notice["action"], notice["environment"], notice["release"]) == (action, "local", release)
        assert sorted(notice["hosts"]) == sorted(fleet.names)
        assert notice["actor"] == actor
        assert envelope["MessageAttributes"]["event"]["Value"] == notice["event"]


def test_a_good_deploy_publishes_its_start_and_its_end(good_deploy_and_rollback, fleet, ansible):
    before, target, deploy, envelopes, during, *_ = good_deploy_and_rollback
    assert deploy.returncode == 0, deploy.tail()
    assert during == dict.fromkeys(fleet.names, target.tag)
    _check_common(envelopes, fleet, ansible, "deploy", target.tag, ["started", "succeeded"])
    started, ended = envelopes
    assert started["Subject"] == f"deploy of {target.tag} to local started ({len(fleet.names)} hosts)"
    assert ended["Subject"].startswith(f"deploy of {target.tag} to local succeeded in ")
    assert ended["notice"]["releases"] == {
        name: {"before": before[name], "after": target.tag} for name in fleet.names
    }
    assert 0 < ended["notice"]["duration_seconds"] <= deploy.seconds
    assert "deploy notice published to" in deploy.output


def test_the_rollback_publishes_its_start_and_its_end(good_deploy_and_rollback, fleet, ansible):
    before, target, _, _, _, rollback, envelopes, after = good_deploy_and_rollback
    assert rollback.returncode == 0, rollback.tail()
    assert after == before
    _check_common(envelopes, fleet, ansible, "rollback", "", ["started", "succeeded"])
    assert (
        envelopes[0]["Subject"]
        == f"rollback of local to the previous release started ({len(fleet.names)} hosts)"
    )
    assert envelopes[1]["notice"]["releases"] == {
        name: {"before": target.tag, "after": before[name]} for name in fleet.names
    }


def test_a_failed_deploy_publishes_the_failing_host_and_the_reason(failed_deploy, fleet, releases, ansible):
    before, run, envelopes, after = failed_deploy
    first = fleet.rollout_order()[0]
    assert run.returncode != 0, run.tail()
    _check_common(envelopes, fleet, ansible, "deploy", releases.unready.tag, ["started", "failed"])
    failed = envelopes[1]
    assert failed["Subject"] == f"deploy of {releases.unready.tag} to local failed on {first}"
    assert failed["notice"]["failure"]["host"] == first
    assert "did not become ready" in failed["notice"]["failure"]["reason"]
    # No host switched: each still serves what it served, and the notice says so.
    assert after == before
    assert failed["notice"]["releases"] == {
        name: {"before": before[name], "after": before[name]} for name in fleet.names
    }


def test_no_notice_holds_a_secret_of_the_environment(good_deploy_and_rollback, failed_deploy, ssm):
    secrets = [
        ssm.get_parameter(Name=f"/deploykit/local/{name}", WithDecryption=True)["Parameter"]["Value"]
        for name in ("DJANGO_SECRET_KEY", "DATABASE_URL")
    ]
    password = re.match(r"^\w+://[^:/@]+:([^@]+)@", secrets[1])
    assert password, "DATABASE_URL in SSM holds no password"
    published = [
        json.dumps(envelope)
        for envelopes in (good_deploy_and_rollback[3], good_deploy_and_rollback[6], failed_deploy[2])
        for envelope in envelopes
    ]
    assert len(published) == 6
    assert [
        value for value in [*secrets, password.group(1)] if any(value in text for text in published)
    ] == []
