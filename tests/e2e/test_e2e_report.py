"""reports/e2e.json (deploykit/e2e_report.py): what a reader of the file relies on. Runs without the
stand-in, with the unit tests."""

from __future__ import annotations

import json

from deploykit.e2e_report import SCENARIOS, E2EReport


def _scenario(report: E2EReport, number: int) -> dict:
    return next(entry for entry in report.as_dict()["scenarios"] if entry["name"].startswith(f"{number} "))


def test_every_scenario_is_in_the_report_even_when_none_ran(tmp_path):
    written = json.loads(E2EReport().write(tmp_path / "e2e.json").read_text())
    assert [(entry["name"], entry["passed"]) for entry in written["scenarios"]] == [
        (f"{number} {name}", False) for number, name in SCENARIOS.items()
    ]


def test_scenario_passes_only_when_every_test_of_it_passed():
    report = E2EReport()
    for test, outcome in (("test_a", "passed"), ("test_b", "failed")):
        for phase in ("setup", "call", "teardown"):
            report.record_phase(3, test, phase, outcome if phase == "call" else "passed", 1.0)
    assert (_scenario(report, 3)["passed"], _scenario(report, 3)["tests"]) == (
        False,
        {"test_a": "passed", "test_b": "failed"},
    )


def test_failed_setup_fails_the_scenario_as_an_error():
    report = E2EReport()
    report.record_phase(5, "test_a", "setup", "failed", 2.0)
    assert (_scenario(report, 5)["passed"], _scenario(report, 5)["tests"]) == (False, {"test_a": "error"})


def test_scenario_counts_requests_and_time():
    report = E2EReport()
    report.record_phase(4, "test_a", "setup", "passed", 30.0)
    report.record_phase(4, "test_a", "call", "passed", 0.5)
    report.add_requests(4, sent=1200, failed=0)
    entry = _scenario(report, 4)
    assert (entry["passed"], entry["requests_sent"], entry["requests_failed"], entry["duration_seconds"]) == (
        True,
        1200,
        0,
        30.5,
    )


def test_each_case_of_a_scenario_has_its_row_after_the_scenario_s():
    report = E2EReport()
    report.declare_case(13, "a host unreachable at the plan")
    report.declare_case(13, "a host's disk nearly full")
    report.declare_case(13, "a host unreachable at the plan")
    report.record_phase(13, "test_a", "call", "passed", 2.0, "a host unreachable at the plan")
    report.record_phase(13, "test_b", "call", "failed", 3.0, "a host's disk nearly full")
    report.add_requests(13, sent=100, failed=0, case="a host unreachable at the plan")
    report.add_requests(13, sent=50, failed=2, case="a host's disk nearly full")
    rows = [row for row in report.as_dict()["scenarios"] if row["name"].startswith("13")]
    assert [(row["name"], row["passed"], row["requests_sent"], row["requests_failed"]) for row in rows] == [
        (f"13 {SCENARIOS[13]}", False, 150, 2),
        ("13.1 a host unreachable at the plan", True, 100, 0),
        ("13.2 a host's disk nearly full", False, 50, 2),
    ]
    assert rows[2]["tests"] == {"test_b": "failed"}
