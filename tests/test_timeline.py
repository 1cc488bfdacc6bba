"""deploykit.timeline: the phases and per-host times that make bench reads from a recorded rollout."""

from __future__ import annotations

import pytest

from deploykit import timeline


def _event(host: str, play: str, task: str, start: float, end: float, **extra) -> dict:
    return {"host": host, "play": play, "task": task, "start": start, "end": end, "outcome": "ok", **extra}


PULL = timeline.PULL_TASK
TURN = timeline.TURN_TASK
RECORD = "smoke-check | Ask the host's nginx which release it serves"
FIRST = "Note when this host's rollout starts"
PLAN, ROLLOUT = timeline.PLAN_PLAY, timeline.ROLLOUT_PLAY

RECORDED = {
    "started": 100.0,
    "ended": 130.0,
    "tasks": [
        _event("web-1", PLAN, PULL, 101, 104),
        _event("web-2", PLAN, PULL, 102, 105),
        _event("web-1", ROLLOUT, FIRST, 110, 110.1),
        _event(
            "web-1",
            ROLLOUT,
            TURN,
            110.1,
            114.2,
            timings={
                "start": 0.5,
                "gate": 1.0,
                "switch": 0.1,
                "drain": 0.4,
                "stop old": 1.0,
                "record": 0.5,
                "prune": 0.2,
            },
        ),
        _event("web-1", ROLLOUT, RECORD, 114, 115),
        _event("web-2", ROLLOUT, FIRST, 115, 115.1),
        _event("web-2", ROLLOUT, RECORD, 119, 120),
    ],
}


def test_the_turn_is_split_into_the_steps_it_reported_ending_with_the_task():
    found = {(phase.host, phase.name): (phase.start, phase.end) for phase in timeline.phases(RECORDED)}
    assert {name for host, name in found if host == "web-1"} == {"pull", *timeline.TURN_STEPS}
    # 3.7 s of steps before the task's end at 14.2: its first 0.4 s were Ansible's own.
    expected = {
        "start": (10.5, 11.0),
        "gate": (11.0, 12.0),
        "switch": (12.0, 12.1),
        "drain": (12.1, 12.5),
        "stop old": (12.5, 13.5),
        "record": (13.5, 14.0),
        "prune": (14.0, 14.2),
    }
    for step, span in expected.items():
        assert found[("web-1", step)] == pytest.approx(span)


def test_a_failed_turn_has_no_phases():
    failed = dict(RECORDED, tasks=[dict(RECORDED["tasks"][4], outcome="failed")])
    assert timeline.phases(failed) == []


def test_host_seconds_is_the_pull_in_the_plan_plus_the_turn_in_the_rollout():
    seconds = timeline.host_seconds(RECORDED)
    assert round(seconds["web-1"], 3) == 3 + 5  # pull 3; turn 110..115
    assert round(seconds["web-2"], 3) == 3 + 5  # pull 3; turn 115..120


def test_play_spans_run_from_a_plays_first_task_to_its_last_on_any_host():
    spans = timeline.play_spans(RECORDED)
    assert spans == {PLAN: (1, 5), ROLLOUT: (10, 20)}
    assert timeline.PLAY_KEYS[PLAN] == "plan"
    assert timeline.PLAY_KEYS[ROLLOUT] == "rollout"


def test_draw_writes_a_png(tmp_path):
    path = tmp_path / "timeline.png"
    timeline.draw(RECORDED, path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
