"""Ansible callback: publish the start, the end and the failure of a deploy or rollback to SNS.

A run that took the deploy lock publishes, to the SNS topic of its environment
(`deploy_notice_topic`, which playbooks/provision.yml makes: roles/aws_notices), one message when
it starts, and one when it ends: succeeded, or failed with the host and the task's message. It is a
callback, not a last task, because a failed play ends the playbook before any later task: the end
of the run is seen here however it ends (the statistics, or the process's exit after an error
that aborts the run or Ctrl-C). Only a killed controller publishes no end, as it releases no lock.

What the callback knows it reads from the results of the run's own tasks, as deploy_lock and
deploy_report do: the lock's holder from the task that took the lock, what the run is from the
`deploy_notice` fact (playbooks/tasks/lock.yml), each host's release before from app_deploy's
`app_deploy_previous_tag` and after from the smoke check's `deploy_host_serves`. A message holds
those names and nothing else: never a value of the environment's settings or secrets.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: deploy_notice
type: aggregate
short_description: Publish the start, end and failure of a deploy or rollback to SNS
description:
  - In a run that took the deploykit deploy lock, publishes to the SNS topic named by the
    environment's deploy_notice_topic when the run starts, and when it ends or fails (with the
    failing host and the task's message). An unset topic turns the notices off with one line; a
    notice that cannot be published is reported once and never fails the run.
requirements:
  - boto3
"""

import atexit
import datetime
import json
import os
import time

from ansible.plugins.callback import CallbackBase

# SNS takes a subject of at most 100 printable ASCII characters.
_SUBJECT_LIMIT = 100
_REASON_LIMIT = 1000
# The protocols whose subscribers get the JSON document; email (and anything else) the text.
_JSON_PROTOCOLS = ("sqs", "lambda", "http", "https", "firehose", "application")


def _plain(value):
    """The value as plain JSON types (Ansible's results may hold tagged strings and lazy lists)."""
    return json.loads(json.dumps(value, default=str))


def _one_line(text: object, limit: int = _REASON_LIMIT) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _tag(image: object) -> str:
    """The image tag of REPOSITORY:TAG (the release name the summary prints)."""
    return str(image or "").rpartition(":")[2]


def subject(message: dict) -> str:
    """The line a human reads in an email's subject."""
    release = message["release"] or "the previous release"
    what = (
        f"rollback of {message['environment']} to {release}"
        if message["action"] == "rollback"
        else f"deploy of {release} to {message['environment']}"
    )
    if message["event"] == "started":
        hosts = len(message["hosts"])
        line = f"{what} started ({hosts} host{'s' if hosts != 1 else ''})"
    elif message["event"] == "succeeded":
        line = f"{what} succeeded in {message['duration_seconds']:.0f} s"
    else:
        line = f"{what} failed on {message['failure']['host']}"
    line = line.encode("ascii", "replace").decode()
    return line if len(line) <= _SUBJECT_LIMIT else line[: _SUBJECT_LIMIT - 3] + "..."


def text(message: dict) -> str:
    """The message as an email shows it."""
    lines = [
        subject(message),
        "",
        f"environment: {message['environment']}",
        f"{message['action']}: {message['release'] or 'the previous release'}",
        f"actor: {message['actor']}",
        f"hosts: {', '.join(message['hosts']) or 'none'}",
        f"started at: {message['started_at']}",
    ]
    if message["event"] != "started":
        lines.append(f"duration: {message['duration_seconds']:.1f} s")
        lines.append("release before -> after:")
        lines += [
            f"  {host}: {release['before'] or 'none'} -> {release['after'] or 'none'}"
            for host, release in message["releases"].items()
        ]
    if message["event"] == "failed":
        failure = message["failure"]
        lines += [
            "",
            f"failed on: {failure['host']}",
            f"task: {failure['task']}",
            f"reason: {failure['reason']}",
        ]
    return "\n".join(lines) + "\n"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "deploy_notice"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._started = time.monotonic()
        self._started_at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._lock: dict | None = None
        self._notice: dict | None = None
        self._finished = False
        # host -> release tag, in the order the hosts were read.
        self._before: dict[str, str] = {}
        self._after: dict[str, str] = {}
        # host -> (task, message) of its first failure, in the order they happened.
        self._failures: dict[str, tuple[str, str]] = {}
        self._topic_arn = ""
        self._publish_failed = False
        atexit.register(self._on_exit)

    # -- what the run's tasks say -----------------------------------------------------------------

    def v2_playbook_on_start(self, playbook) -> None:
        self._started = time.monotonic()
        self._started_at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def v2_runner_on_ok(self, result) -> None:
        outcome, host = result._result, result._host.get_name()
        if (
            result._task.action.split(".")[-1] == "deploy_lock"
            and outcome.get("lock_name")
            and outcome.get("lock", {}).get("run_id") == os.environ.get("DEPLOYKIT_RUN_ID")
        ):
            self._lock = _plain(outcome["lock"])
        facts = outcome.get("ansible_facts") or {}
        if "app_deploy_previous_tag" in facts:
            self._before.setdefault(host, str(facts["app_deploy_previous_tag"] or ""))
        # Set by playbooks/tasks/smoke-check.yml once the host answers as the release it switched to.
        if facts.get("deploy_host_finished") and "deploy_host_serves" in facts:
            self._after[host] = _tag((facts["deploy_host_serves"] or {}).get("image"))
        # The canary's bake switched the host back (playbooks/tasks/canary.yml): it serves what it did.
        if facts.get("deploy_host_switched_back"):
            self._after.pop(host, None)
        if "deploy_notice" in facts and self._notice is None and self._lock is not None:
            if facts["deploy_notice"].get("action") not in ("deploy", "rollback"):
                # A one-off command (playbooks/run.yml) holds the lock too, but changes no release:
                # the notices are for deploys and rollbacks.
                self._lock = None
                return
            self._notice = _plain(facts["deploy_notice"])
            if not self._notice.get("topic"):
                environment = self._notice.get("environment")
                self._display.display(
                    f"deploy notices are off: deploy_notice_topic is not set for {environment}"
                )
                return
            self._publish(self._message("started"))

    def v2_runner_on_failed(self, result, ignore_errors: bool = False) -> None:
        if ignore_errors:
            return
        # A no_log task's message is already censored in its result.
        self._failures.setdefault(
            result._host.get_name(),
            (result._task.get_name(), _one_line(result._result.get("msg") or "failed")),
        )

    def v2_runner_on_unreachable(self, result) -> None:
        # A task that may miss a host (the canary's sampling of the baseline) did not stop this one.
        if result._task.ignore_unreachable:
            return
        self._failures.setdefault(
            result._host.get_name(),
            (result._task.get_name(), "unreachable: " + _one_line(result._result.get("msg") or "")),
        )

    def v2_playbook_on_stats(self, stats) -> None:
        failed = [host for host in self._failures if stats.failures.get(host) or stats.dark.get(host)]
        failed += [
            host for host, count in {**stats.failures, **stats.dark}.items() if count and host not in failed
        ]
        self._finish(failed[0] if failed else None)

    def _on_exit(self) -> None:
        # No statistics: an error aborted the run, or it was interrupted.
        host = next(iter(self._failures), None)
        self._finish(host or "", aborted=True)

    # -- the messages -----------------------------------------------------------------------------

    def _finish(self, failed_host: str | None, aborted: bool = False) -> None:
        if self._finished or self._notice is None or not self._notice.get("topic"):
            return
        self._finished = True
        if failed_host is None:
            self._publish(self._message("succeeded"))
            return
        task, reason = self._failures.get(failed_host, ("", ""))
        if aborted:
            reason = ((reason + ". ") if reason else "") + "ansible-playbook stopped before the run finished"
        self._publish(
            self._message(
                "failed",
                {"host": failed_host or "the controller", "task": task, "reason": reason or "failed"},
            )
        )

    def _actor(self) -> str:
        """The lock's holder: the CodeBuild build id, or user@machine for a deploy by hand."""
        lock = self._lock or {}
        holder, user, machine = lock.get("holder") or "", lock.get("user") or "", lock.get("machine") or ""
        if holder and holder != user:
            return holder
        return f"{user or holder or 'unknown'}@{machine or 'unknown'}"

    def _message(self, event: str, failure: dict | None = None) -> dict:
        notice = self._notice or {}
        message = {
            "event": event,
            "action": notice.get("action") or "deploy",
            "environment": notice.get("environment") or "",
            "release": notice.get("release") or "",
            "hosts": list(notice.get("hosts") or []),
            "actor": self._actor(),
            "run_id": (self._lock or {}).get("run_id") or "",
            "started_at": self._started_at,
        }
        if event != "started":
            message["duration_seconds"] = round(time.monotonic() - self._started, 1)
            # A host that did not finish its turn serves what it served before.
            message["releases"] = {
                host: {
                    "before": self._before.get(host, ""),
                    "after": self._after.get(host, self._before.get(host, "")),
                }
                for host in message["hosts"]
            }
        if failure is not None:
            message["failure"] = failure
        return message

    def _client(self, service: str):
        import boto3
        from botocore.config import Config

        # Short timeouts and few retries: a notice may delay a deploy by seconds, never minutes.
        config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
        # The environment's AWS settings (AWS_PROFILE, keys, AWS_ENDPOINT_URL), as amazon.aws uses them.
        return boto3.client(service, region_name=(self._notice or {}).get("region") or None, config=config)

    def _arn(self) -> str:
        """The topic's ARN: deploy_notice_topic is its name, in the environment's region and the
        account of the credentials (asked once; GetCallerIdentity needs no permission)."""
        topic = str(self._notice["topic"])
        if topic.startswith("arn:"):
            return topic
        if not self._topic_arn:
            identity = self._client("sts").get_caller_identity()
            partition = identity["Arn"].split(":")[1]
            region = self._client("sns").meta.region_name
            self._topic_arn = f"arn:{partition}:sns:{region}:{identity['Account']}:{topic}"
        return self._topic_arn

    def _publish(self, message: dict) -> None:
        # A notice is not worth a failed deploy: by the time one is sent, hosts may be switching or
        # switched, and a run failed for a lost notice would read as a failed release (and be
        # retried, or rolled back). A topic that failed once in a run is taken as down for the rest
        # of it, so the run pays its timeout once and its log says so in one line.
        if self._publish_failed:
            return
        body = text(message)
        document = json.dumps(message, indent=2, sort_keys=True)
        try:
            arn = self._arn()
            self._client("sns").publish(
                TopicArn=arn,
                Subject=subject(message),
                MessageStructure="json",
                Message=json.dumps(
                    {"default": body, "email": body, **dict.fromkeys(_JSON_PROTOCOLS, document)}
                ),
                MessageAttributes={
                    name: {"DataType": "String", "StringValue": message[name]}
                    for name in ("event", "action", "environment")
                    if message[name]
                },
            )
        except Exception as error:  # boto3 missing, no credentials, no topic, SNS down: all alike
            self._publish_failed = True
            self._display.warning(
                f"deploy notice not published ({message['event']}) to topic {self._notice.get('topic')}: "
                f"{_one_line(error, 300)}. The run goes on; no further notice of this run is tried."
            )
            return
        self._display.display(f"deploy notice published to {arn}: {subject(message)}")
