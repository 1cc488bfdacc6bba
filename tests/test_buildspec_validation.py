"""A malformed buildspec is refused before anything runs, naming the path of the offending key."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deploykit.buildspec import BuildspecError, load_buildspec, loads_buildspec
from deploykit.codebuild import BuildRequest, Project, run_build
from deploykit.system import ROOT

VALID_PHASES = """
phases:
  build:
    commands:
      - echo ok
"""


def problems(text: str) -> list[str]:
    with pytest.raises(BuildspecError) as raised:
        loads_buildspec(textwrap.dedent(text))
    return raised.value.problems


def test_the_project_buildspec_is_valid():
    spec = load_buildspec(ROOT / "buildspec.yml")
    assert list(spec.phases) == ["install", "pre_build", "build", "post_build"]
    assert spec.env.exported_variables == ("IMAGE_URI", "SOURCE_COMMIT")


def test_the_deploy_buildspec_is_valid():
    spec = load_buildspec(ROOT / "buildspec-deploy.yml")
    assert list(spec.phases) == ["install", "pre_build", "build"]
    assert spec.env.exported_variables == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("version: 0.3\n" + VALID_PHASES, "version: expected 0.2, got '0.3'", id="wrong-version"),
        pytest.param("version: 0.1\n" + VALID_PHASES, "version: 0.1 runs every command", id="version-0.1"),
        pytest.param(VALID_PHASES, "version: required", id="missing-version"),
        pytest.param(
            "version: 0.2\nphases:\n  biuld:\n    commands: [make]\n",
            "phases.biuld: unknown phase (allowed: install, pre_build, build, post_build)",
            id="unknown-phase",
        ),
        pytest.param(
            "version: 0.2\nsteps: []\n" + VALID_PHASES,
            "steps: unknown key (allowed: version,",
            id="unknown-top-key",
        ),
        pytest.param(
            "version: 0.2\nphases:\n  build:\n    commands: make\n",
            "phases.build.commands: expected a list of strings, got 'make'",
            id="commands-not-a-list",
        ),
        pytest.param(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - make\n      - [a]\n      - echo a: b\n",
            "phases.build.commands[2]: expected a string, got a mapping (quote commands that contain ': ')",
            id="command-not-a-string",
        ),
        pytest.param(
            "version: 0.2\nphases:\n  build:\n    finally: [echo]\n",
            "phases.build.commands: required: a list of commands",
            id="phase-without-commands",
        ),
        pytest.param(
            "version: 0.2\nphases:\n  build:\n",
            "phases.build: expected a mapping with `commands`",
            id="empty-phase",
        ),
        pytest.param(
            "version: 0.2\nphases:\n  build:\n    on-failure: IGNORE\n    commands: [make]\n",
            "phases.build.on-failure: expected one of ABORT, CONTINUE, got 'IGNORE'",
            id="bad-on-failure",
        ),
        pytest.param(
            "version: 0.2\nphases:\n  build:\n    runtime-versions: {python: 3.11}\n    commands: [make]\n",
            "phases.build.runtime-versions: unknown key",
            id="runtime-versions-outside-install",
        ),
        pytest.param(
            "version: 0.2\nenv:\n  variables:\n    CODEBUILD_X: a\n" + VALID_PHASES,
            "env.variables.CODEBUILD_X: the CODEBUILD_ prefix is reserved",
            id="reserved-variable",
        ),
        pytest.param(
            "version: 0.2\nenv:\n  variables:\n    EMPTY:\n" + VALID_PHASES,
            "env.variables.EMPTY: expected a string, got nothing (null)",
            id="null-variable",
        ),
        pytest.param(
            "version: 0.2\nenv:\n  exported-variables: [OK, 'A;B']\n" + VALID_PHASES,
            "env.exported-variables[1]: 'A;B' is not a valid variable name",
            id="bad-exported-name",
        ),
        pytest.param(
            "version: 0.2\nenv:\n  shell: zsh\n" + VALID_PHASES,
            "env.shell: expected one of bash, /bin/sh, powershell.exe, cmd.exe",
            id="unknown-shell",
        ),
        pytest.param(
            "version: 0.2\nreports:\n  unit:\n    base-directory: reports\n" + VALID_PHASES,
            "reports.unit.files: required",
            id="report-without-files",
        ),
        pytest.param(
            "version: 0.2\nphases: [build]\n",
            "phases: expected a mapping, got a list",
            id="phases-not-a-mapping",
        ),
        pytest.param("version: 0.2\nphases:\n  build: {commands: [a]\n", "(YAML):", id="not-yaml"),
    ],
)
def test_malformed_buildspec_names_the_offending_key(text: str, expected: str):
    assert any(problem.startswith(expected) for problem in problems(text)), problems(text)


def test_every_problem_is_reported_at_once():
    found = problems(
        """
        version: 0.3
        phases:
          build:
            on-failure: STOP
            commands: [make, 3]
        """
    )
    assert [problem.split(":")[0] for problem in found] == ["version", "phases.build.on-failure"]


def test_scalars_stay_text_as_written():
    spec = loads_buildspec(
        "version: 0.2\nenv:\n  variables:\n    PORT: 08\n    DEBUG: no\n    RATIO: 1.50\n" + VALID_PHASES
    )
    assert spec.env.variables == {"PORT": "08", "DEBUG": "no", "RATIO": "1.50"}


def test_install_may_have_only_runtime_versions():
    spec = loads_buildspec("version: 0.2\nphases:\n  install:\n    runtime-versions:\n      python: 3.11\n")
    assert spec.phases["install"].runtime_versions == {"python": "3.11"}


def test_malformed_buildspec_runs_no_command(tmp_path: Path):
    marker = tmp_path / "ran"
    (tmp_path / "buildspec.yml").write_text(
        f"version: 0.2\nphases:\n  install:\n    commands: ['touch {marker}']\n  build:\n    commands: make\n"
    )
    request = BuildRequest(
        source_dir=tmp_path, builds_dir=tmp_path / "builds", project=Project("p"), echo=io.StringIO()
    )
    with pytest.raises(BuildspecError, match=r"phases\.build\.commands: expected a list"):
        run_build(request)
    assert not marker.exists()
    assert not (tmp_path / "builds").exists(), "a refused buildspec must not take a build number"


def test_sh_shell_is_refused_by_the_local_runner(tmp_path: Path):
    (tmp_path / "buildspec.yml").write_text("version: 0.2\nenv:\n  shell: /bin/sh\n" + VALID_PHASES)
    request = BuildRequest(
        source_dir=tmp_path, builds_dir=tmp_path / "builds", project=Project("p"), echo=io.StringIO()
    )
    with pytest.raises(BuildspecError, match="runs bash only"):
        run_build(request)


def test_cli_refuses_with_the_key_path_and_exit_status_2(tmp_path: Path):
    (tmp_path / "buildspec.yml").write_text("version: 0.2\nphases:\n  build:\n    commands: [make, {a: b}]\n")
    result = subprocess.run(
        [sys.executable, "-m", "deploykit.codebuild", "run", "--source-dir", str(tmp_path),
         "--builds-dir", str(tmp_path / "builds")],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2
    assert "phases.build.commands[1]: expected a string" in result.stderr
    assert "BUILD" not in result.stdout


def test_cli_validate_accepts_the_project_buildspec():
    result = subprocess.run(
        [sys.executable, "-m", "deploykit.codebuild", "validate", str(ROOT / "buildspec.yml")],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "valid buildspec 0.2" in result.stdout
