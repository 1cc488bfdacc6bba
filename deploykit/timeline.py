"""A rollout's timeline, from what the deploy_timeline callback recorded (DEPLOYKIT_TIMELINE).

`phases()` turns the recorded task times into each host's phases (pull, start, gate, switch,
drain, stop old, record, prune), `host_seconds()` into the time the rollout spent on each host, and `draw()`
into docs/rollout-timeline.png. Nothing here is estimated: every bar is a measured task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLAN_PLAY = "Plan the rollout"
ROLLOUT_PLAY = "Roll out the release"
# Task name (as the callback records it, "role : name") of the pull: one module run that also
# logs in, checks the disk's room and writes the release's environment file.
PULL_TASK = "app_deploy : release | Ensure the release's image and environment file are on the host"
# The host's turn is one task (one module run on the host); it reports how long each of its
# steps took, in this order, and the task's time before them is Ansible's own.
TURN_TASK = "app_deploy : swap | Start, gate and switch to the new release, drain and stop the old one"
TURN_STEPS = ("start", "gate", "switch", "drain", "stop old", "record", "prune")
# The canary analysis' verdict (playbooks/tasks/canary-judge.yml): a failed bake switches the
# canary back right after it.
CANARY_VERDICT_TASK = "canary-judge | Judge the canary against the baseline"
# Short names of the deploy's plays, for the benchmarks' keys.
PLAY_KEYS = {
    "Check the deploy and take the lock": "checks",
    PLAN_PLAY: "plan",
    "Apply the database migrations once, from the new image": "migrations",
    ROLLOUT_PLAY: "rollout",
    "Summarise the deploy": "summary",
}
_PLAY_LABELS = {
    PLAN_PLAY: "plan: every host at once",
    "Apply the database migrations once, from the new image": "migrations",
    ROLLOUT_PLAY: "rolling switch, a batch at a time",
}
COLOURS = {
    "pull": "#4c72b0",
    "start": "#55a868",
    "gate": "#c44e52",
    "switch": "#8172b2",
    "drain": "#ccb974",
    "stop old": "#64b5cd",
    "record": "#8c8c8c",
    "prune": "#dd8452",
}


@dataclass(frozen=True)
class Phase:
    host: str
    name: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def phases(timeline: dict[str, Any]) -> list[Phase]:
    """Each host's measured phases, in seconds since the run started: its pull, and the steps of
    its turn as the turn's module reported them (drawn back to back, ending when the task ended)."""
    origin = timeline["started"]
    found = []
    for event in timeline["tasks"]:
        if event["outcome"] in ("skipped", "failed"):
            continue
        start, end = event["start"] - origin, event["end"] - origin
        if event["task"] == PULL_TASK:
            found.append(Phase(event["host"], "pull", start, end))
        elif event["task"] == TURN_TASK:
            timings = event.get("timings", {})
            steps = [(step, timings[step]) for step in TURN_STEPS if step in timings]
            cut = end - sum(seconds for _, seconds in steps)
            for step, seconds in steps:
                found.append(Phase(event["host"], step, cut, cut + seconds))
                cut += seconds
    return found


def _spans(timeline: dict[str, Any], key: str, play: str | None = None) -> dict[str, tuple[float, float]]:
    """First start and last end of the tasks of each `key` ("play" or "host"), of `play` only if
    given, in seconds since the run started."""
    origin = timeline["started"]
    spans: dict[str, tuple[float, float]] = {}
    for event in timeline["tasks"]:
        if play is not None and event["play"] != play:
            continue
        start, end = event["start"] - origin, event["end"] - origin
        first, last = spans.get(event[key], (start, end))
        spans[event[key]] = (min(first, start), max(last, end))
    return spans


def play_spans(timeline: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """First start and last end of each play's tasks, in seconds since the run started."""
    return _spans(timeline, "play")


def host_spans(timeline: dict[str, Any], play: str = ROLLOUT_PLAY) -> dict[str, tuple[float, float]]:
    """First start and last end of each host's tasks in `play`, in seconds since the run started."""
    return _spans(timeline, "host", play)


def host_seconds(timeline: dict[str, Any]) -> dict[str, float]:
    """What the rollout spent on each host: its login and pull while the plan prepared every host
    at once, plus its whole turn in the rolling play (start to smoke check and record)."""
    pulled: dict[str, float] = {}
    for phase in phases(timeline):
        if phase.name == "pull":
            pulled[phase.host] = pulled.get(phase.host, 0.0) + phase.seconds
    return {host: end - start + pulled.get(host, 0.0) for host, (start, end) in host_spans(timeline).items()}


def draw(timeline: dict[str, Any], path: Path, title: str) -> None:
    """Draw each host's phases over its turn in the rollout, and the plays behind them."""
    import matplotlib

    matplotlib.use("Agg")  # no display here, and none needed
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    measured = phases(timeline)
    spans = host_spans(timeline)
    hosts = sorted(
        {phase.host for phase in measured} | set(spans), key=lambda host: spans.get(host, (0, 0))[0]
    )
    figure, axes = plt.subplots(figsize=(11, 1.2 + 0.7 * len(hosts)), dpi=110)
    plays = play_spans(timeline)
    for index, (play, label) in enumerate(_PLAY_LABELS.items()):
        if play in plays:
            start, end = plays[play]
            axes.axvspan(start, end, color=("#eeeeee", "#f7f7f7")[index % 2], zorder=0)
            axes.text(start, 1.01 + 0.06 * (index % 2), label, fontsize=7, color="#555555",
                      transform=axes.get_xaxis_transform())  # fmt: skip
    for row, host in enumerate(hosts):
        if host in spans:
            start, end = spans[host]
            axes.barh(row, end - start, left=start, height=0.7, color="#dddddd", zorder=1)
        for phase in measured:
            if phase.host == host:
                axes.barh(
                    row, phase.seconds, left=phase.start, height=0.5, color=COLOURS[phase.name], zorder=2
                )
    axes.set_yticks(range(len(hosts)), hosts)
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the deploy started")
    axes.set_title(title, fontsize=9, pad=22)
    legend = [Patch(color=colour, label=name) for name, colour in COLOURS.items()]
    legend.append(Patch(color="#dddddd", label="the host's turn (other tasks)"))
    axes.legend(
        handles=legend,
        fontsize=7,
        ncol=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.5 / (1 + 0.3 * len(hosts))),
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
