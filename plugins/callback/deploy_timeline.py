"""Ansible callback: when each task started and ended on each host, written as JSON.

A rollout's time goes to a few tasks per host (the pull, the start of the new release, its
readiness gate, the switch, the drain). profile_tasks sums tasks over hosts; this plugin keeps
them apart, so `make bench` can compare each host's rollout with its floor and draw the timeline
(docs/rollout-timeline.png). It writes nothing unless DEPLOYKIT_TIMELINE names a file.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: deploy_timeline
type: aggregate
short_description: Write each host's task start and end times to a JSON file
description:
  - Records, for every task result of every host, the play, the task name, the start and end
    times (seconds since the epoch) and the outcome, and writes them to a file when the run ends.
  - A task whose output has lines of the form C(<name>: <seconds> s) (app_deploy's switch prints
    C(drain: 0.120 s)) gets them as C(timings); no other output is recorded.
options:
  path:
    description: The file to write; nothing is recorded when it is empty.
    default: ""
    env:
      - name: DEPLOYKIT_TIMELINE
"""

import json
import os
import re
import time

from ansible.plugins.callback import CallbackBase

_TIMING = re.compile(r"^([a-z][a-z ]*): (\d+(?:\.\d+)?) s$")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "deploy_timeline"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._play = ""
        self._started: dict[tuple[str, str], float] = {}
        self._events: list[dict[str, object]] = []
        self._run_started = time.time()

    def _path(self) -> str:
        return self.get_option("path") if self._plugin_options is not None else ""

    def v2_playbook_on_play_start(self, play) -> None:
        self._play = play.get_name()

    def v2_runner_on_start(self, host, task) -> None:
        self._started[(host.get_name(), task._uuid)] = time.time()

    def _record(self, result, outcome: str) -> None:
        host, task = result._host.get_name(), result._task
        ended = time.time()
        started = self._started.pop((host, task._uuid), ended)
        event = {
            "host": host,
            "play": self._play,
            "task": task.get_name(),
            "start": round(started, 3),
            "end": round(ended, 3),
            "outcome": outcome,
        }
        # A no_log result holds no output at all, only "censored".
        lines = result._result.get("stdout_lines")
        matches = map(_TIMING.match, lines if isinstance(lines, list) else [])
        timings = {match[1]: float(match[2]) for match in matches if match}
        if timings:
            event["timings"] = timings
        self._events.append(event)

    def v2_runner_on_ok(self, result) -> None:
        self._record(result, "changed" if result._result.get("changed") else "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._record(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result) -> None:
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result) -> None:
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats) -> None:
        path = self._path()
        if not path:
            return
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as file:
            json.dump({"started": round(self._run_started, 3), "ended": round(time.time(), 3),
                       "tasks": self._events}, file, indent=1)  # fmt: skip
