"""reports/e2e.json: one entry per end-to-end scenario, whatever happened to its tests.

tests/e2e/conftest.py feeds it from pytest's reports: a scenario passed when every test of it ran
and passed; a scenario none of whose tests ran is in the report too, as not passed, so that a
reader of the file never mistakes a scenario that was left out for one that passed.

A scenario made of cases (each injected fault of scenario 13, each bad input of scenario 10) also
has one row per case, after its own: `13.2 the deploy killed ...`, with the case's tests and the
requests sent while it ran. The cases are declared when the tests are collected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The scenarios of tests/e2e, in the order they run; the numbers are the test modules' prefixes.
SCENARIOS = {
    1: "v1 to three hosts",
    2: "the same deploy again changes nothing",
    3: "v2 under a constant request stream, to each host and through the load balancer",
    4: "a release that never becomes ready",
    5: "a failing migration",
    6: "rollback without pulling",
    7: "two deploys at once",
    8: "instances that stop or stop answering, seen through the load balancer",
    9: "secrets from SSM",
    10: "bad input is refused",
    11: "the app page at the public address in a browser",
    12: "production's own configuration behind the load balancer",
    13: "faults injected by hand, each followed by a re-run that completes",
    14: "the canary analysis: a ready but failing release rolled back, a good one baked",
    15: "day-2 commands: status, logs and a one-off manage.py run",
    16: "maintenance mode under a request stream: the page, the probes, a deploy refused",
    17: "deploy notices: a good deploy, its rollback and a failed deploy, read back from SNS",
}


def outcome_of(phases: dict[str, str]) -> str:
    """A test's outcome from its phases' ones: a failed setup or teardown is an error."""
    if any(phases.get(phase) == "failed" for phase in ("setup", "teardown")):
        return "error"
    return phases.get("call") or phases.get("setup") or "not run"


@dataclass
class Scenario:
    number: int | str
    name: str
    phases: dict[str, dict[str, str]] = field(default_factory=dict)
    seconds: float = 0.0
    requests_sent: int = 0
    requests_failed: int = 0
    cases: dict[str, Scenario] = field(default_factory=dict)

    @property
    def outcomes(self) -> dict[str, str]:
        return {test: outcome_of(phases) for test, phases in self.phases.items()}

    @property
    def passed(self) -> bool:
        outcomes = self.outcomes.values()
        return bool(outcomes) and all(outcome == "passed" for outcome in outcomes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": f"{self.number} {self.name}",
            "passed": self.passed,
            "requests_sent": self.requests_sent,
            "requests_failed": self.requests_failed,
            "duration_seconds": round(self.seconds, 1),
            "tests": self.outcomes,
        }


class E2EReport:
    """Collects test outcomes, durations and request counts per scenario; writes the JSON file."""

    def __init__(self) -> None:
        self.scenarios = {number: Scenario(number, name) for number, name in SCENARIOS.items()}
        # The session's own setup (stand-in up, images) and teardown (stand-in down).
        self.setup_seconds = 0.0
        self.teardown_seconds = 0.0

    def declare_case(self, number: int, case: str) -> None:
        """A case of a scenario, in the order its tests run; declared once."""
        cases = self.scenarios[number].cases
        if case not in cases:
            cases[case] = Scenario(f"{number}.{len(cases) + 1}", case)

    def _rows(self, number: int, case: str | None) -> list[Scenario]:
        scenario = self.scenarios[number]
        return [scenario] if case is None else [scenario, scenario.cases[case]]

    def record_phase(
        self, number: int, test: str, phase: str, outcome: str, seconds: float, case: str | None = None
    ) -> None:
        """One phase (setup, call, teardown) of one test, as pytest reports it."""
        for row in self._rows(number, case):
            row.seconds += max(seconds, 0.0)
            row.phases.setdefault(test, {})[phase] = outcome

    def add_requests(self, number: int, sent: int, failed: int, case: str | None = None) -> None:
        for row in self._rows(number, case):
            row.requests_sent += sent
            row.requests_failed += failed

    def as_dict(self) -> dict[str, Any]:
        rows = []
        for scenario in self.scenarios.values():
            rows += [scenario.as_dict(), *(case.as_dict() for case in scenario.cases.values())]
        return {
            "setup_seconds": round(self.setup_seconds, 1),
            "teardown_seconds": round(self.teardown_seconds, 1),
            "scenarios": rows,
        }

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        return path
