"""Ansible callback: when a deploy or a rollback stops, say why, where each host stands, and what next.

A failed play ends the playbook before its summary play, and Ansible's own lines for a host that
stops answering read as something else ("Timeout (5s) waiting for privilege escalation prompt" is
a host that took the SSH connection and then said nothing). At the end of a run that took the deploy
lock and had a failed or unreachable host, this plugin prints one block: each failed host with its
address and the cause in plain words, the hosts that switched to the new release in this run (those
whose smoke check passed), the hosts that keep what they served, and the commands to run next.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: deploy_report
type: aggregate
short_description: Explain a stopped deploy or rollback, host by host
description:
  - At the end of a run that took the deploykit deploy lock and had a failed or unreachable host,
    prints each failed host's address and cause, which hosts switched and which did not, and the
    commands to run next.
"""

import os
import shlex
import sys

from ansible.plugins.callback import CallbackBase

# Ansible's words for a host that does not answer over SSH, and what they mean.
_UNREACHABLE_CAUSES = (
    (
        "waiting for privilege escalation prompt",
        "it took the SSH connection and then did not answer (a hung host, or its network)",
    ),
    (
        "during banner exchange",
        "it took the SSH connection and then did not answer (a hung host, or its network)",
    ),
    ("Connection refused", "nothing listens on its SSH port (sshd down, or the host still booting)"),
    (
        "Connection timed out",
        "no answer to the SSH connection (the host is down, or a firewall or security group drops it)",
    ),
    ("No route to host", "no route to the host (its address, or the network between)"),
    ("Could not resolve hostname", "its address does not resolve"),
    ("Permission denied", "it refused the deploy key"),
    ("Host key verification failed", "its SSH host key is not the one known_hosts holds"),
)


def unreachable_cause(message: str) -> str:
    for words, cause in _UNREACHABLE_CAUSES:
        if words.lower() in message.lower():
            return cause
    return "it does not answer over SSH"


def _one_line(text: object, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "deploy_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._locked = False
        self._play = ""
        # host -> (play, what went wrong), in the order it happened.
        self._stopped: dict[str, tuple[str, str]] = {}
        self._switched: list[str] = []
        # Hosts that the canary's bake switched back to what they served (playbooks/tasks/canary.yml).
        self._switched_back: list[str] = []

    def v2_playbook_on_play_start(self, play) -> None:
        self._play = play.get_name()

    def v2_runner_on_ok(self, result) -> None:
        task, outcome = result._task, result._result
        if task.action.split(".")[-1] == "deploy_lock" and outcome.get("lock_name"):
            self._locked = True
        # Set by playbooks/tasks/smoke-check.yml once the host answers as the new release.
        facts = outcome.get("ansible_facts", {})
        if facts.get("deploy_host_finished"):
            self._switched.append(result._host.get_name())
        if facts.get("deploy_host_switched_back"):
            self._switched_back.append(result._host.get_name())

    def v2_runner_on_unreachable(self, result) -> None:
        # A task that may miss a host (the canary's sampling of the baseline) did not stop this one.
        if result._task.ignore_unreachable:
            return
        host = result._host
        message = _one_line(result._result.get("msg", ""))
        address = host.vars.get("ansible_host") or host.get_name()
        self._stopped.setdefault(
            host.get_name(),
            (self._play, f"unreachable at {address}: {unreachable_cause(message)}. Ansible said: {message}"),
        )

    def v2_runner_on_failed(self, result, ignore_errors: bool = False) -> None:
        if ignore_errors:
            return
        # A no_log task's message is already censored in its result.
        message = _one_line(result._result.get("msg", "failed"))
        self._stopped.setdefault(
            result._host.get_name(), (self._play, f"{result._task.get_name()}: {message}")
        )

    def v2_playbook_on_stats(self, stats) -> None:
        if not (self._locked and self._stopped):
            return
        switched_back = list(dict.fromkeys(self._switched_back))
        switched = [host for host in dict.fromkeys(self._switched) if host not in switched_back]
        lines = ["", "DEPLOY STOPPED"]
        for host, (play, what) in self._stopped.items():
            lines.append(f"  {host} (in '{play}'): {what}")
        if switched_back:
            lines.append("  Switched back by the canary's bake: " + ", ".join(switched_back))
        lines.append(
            "  Switched in this run: "
            + (", ".join(switched) if switched else "none: every host serves what it served before")
        )
        others = [
            host
            for host in stats.processed
            if host != "localhost" and host not in switched and host not in self._stopped
        ]
        if switched and others:
            lines.append("  Serving what they served before: " + ", ".join(others))
        command = (
            shlex.join([os.path.basename(sys.argv[0]), *sys.argv[1:]]) if sys.argv else "the same command"
        )
        lines.append(f"  Next: fix the cause above, then run the same command again: {command}")
        if switched:
            inventory = next(
                (sys.argv[i + 1] for i, arg in enumerate(sys.argv[:-1]) if arg in ("-i", "--inventory")),
                "inventory/<env>",
            )
            lines.append(
                "  Or return the switched hosts to what they served: "
                f"ansible-playbook playbooks/rollback.yml -i {inventory} --limit {','.join(switched)}"
            )
        self._display.display("\n".join(lines), stderr=False)
