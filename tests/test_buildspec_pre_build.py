"""buildspec.yml's checks in pre_build (linters and tests at once), run verbatim by the local runner.

Each tool is a small script here that says it ran and exits as the test tells it; what this
proves is the command's own behaviour: every check runs, concurrently, every output is printed
whole with its exit status and time, and one failure fails the phase only after all have ended.
"""

from __future__ import annotations

import io
import os
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from deploykit import bench_deploy
from deploykit.codebuild import BuildRequest, Project, run_build
from deploykit.system import ROOT

BUILDSPEC = yaml.safe_load((ROOT / "buildspec.yml").read_text())
CHECKS = [command for command in BUILDSPEC["phases"]["pre_build"]["commands"] if "checks=(" in command]
NAMES = ["yamllint", "ansible-lint", "ruff", "check-deploy", "django-tests"]
TOOLS = {"yamllint": "yamllint", "ansible-lint": "ansible-lint", "ruff": "ruff", "python": "check-deploy",
         "pytest": "django-tests"}  # fmt: skip


def pre_build(tmp_path: Path, **env: str) -> tuple[str, str]:
    """Run the checks command alone; (the PRE_BUILD phase's status, the build's output)."""
    shims = tmp_path / "shims"
    shims.mkdir()
    for tool, name in TOOLS.items():
        variable = name.upper().replace("-", "_")
        script = shims / tool
        script.write_text(
            textwrap.dedent(f"""\
                #!/bin/bash
                touch "$STARTED_DIR/{name}"
                # WAIT_FOR_<NAME>: a check that has to see another one start before it can end.
                if [ -n "${{WAIT_FOR_{variable}:-}}" ]; then
                  for _ in $(seq 100); do [ -e "$STARTED_DIR/$WAIT_FOR_{variable}" ] && break; sleep 0.1; done
                  if [ ! -e "$STARTED_DIR/$WAIT_FOR_{variable}" ]; then
                    echo "{name}: $WAIT_FOR_{variable} never started"
                    exit 3
                  fi
                fi
                echo "{name} ran with: $*"
                exit "${{FAIL_{variable}:-0}}"
            """)
        )
        script.chmod(0o755)
    source = tmp_path / "src"
    (source / ".venv" / "bin").mkdir(parents=True)
    (source / ".venv" / "bin" / "activate").write_text(f'export PATH="{shims}:$PATH"\n')
    spec = {
        "version": 0.2,
        "env": {"shell": "bash"},
        "phases": {"pre_build": {"commands": [". .venv/bin/activate", *CHECKS]}},
    }
    (source / "buildspec.yml").write_text(yaml.safe_dump(spec))
    started = tmp_path / "started"
    started.mkdir()
    base = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmp_path),
        "STARTED_DIR": str(started),
        **env,
    }
    out = io.StringIO()
    result = run_build(
        BuildRequest(
            source_dir=source,
            builds_dir=tmp_path / "builds",
            project=Project("pre-build"),
            base_environment=base,
            echo=out,
        )
    )
    phases = {phase.phase_type: phase.status for phase in result.phases}
    return phases["PRE_BUILD"], out.getvalue()


def test_the_buildspec_has_one_checks_command():
    assert len(CHECKS) == 1


def test_every_check_runs_and_is_reported_in_order_with_its_status_and_time(tmp_path):
    status, output = pre_build(tmp_path)
    assert status == "SUCCEEDED", output
    reported = re.findall(r"^check (\S+): exit (\d+) in \d+\.\d s$", output, re.MULTILINE)
    assert reported == [(name, "0") for name in NAMES]
    # What the build deploys; Molecule's scenarios are linted by `make lint`.
    linted = "deploy.yml playbooks roles inventory collections/requirements.yml"
    assert f"ansible-lint ran with: {linted}\n" in output
    assert "django-tests ran with: django_app/tests --junitxml=reports/junit-django.xml" in output


def test_the_checks_run_at_once(tmp_path):
    # ansible-lint, second in the list, ends only once the Django tests, last, have started: run
    # one after another, it would wait for a check that never starts.
    status, output = pre_build(tmp_path, WAIT_FOR_ANSIBLE_LINT="django-tests")
    assert status == "SUCCEEDED", output
    assert "never started" not in output


@pytest.mark.parametrize("failing", ["yamllint", "ruff", "django-tests"])
def test_one_failed_check_fails_the_phase_after_every_check_has_ended(tmp_path, failing):
    status, output = pre_build(tmp_path, **{f"FAIL_{failing.upper().replace('-', '_')}": "2"})
    assert status == "FAILED", output
    assert f"check {failing}: exit 2 in " in output
    assert f"pre_build checks failed: {failing}" in output
    # The others ran to their end and were printed all the same.
    assert [name for name, code in re.findall(r"^check (\S+): exit (\d+)", output, re.MULTILINE)] == NAMES


def test_the_benchmark_reads_each_checks_time_from_the_build_log(tmp_path):
    _, output = pre_build(tmp_path)
    timings = bench_deploy.pre_build_checks(output)
    assert list(timings) == [f"push_pre_build_{name.replace('-', '_')}_seconds" for name in NAMES]
    assert all(seconds >= 0 for seconds in timings.values())
