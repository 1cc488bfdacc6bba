"""The local CodeBuild runner, one CodeBuild rule per test, each on a small buildspec run by real bash.

Parameter Store and Secrets Manager are the moto server stand-in on 127.0.0.1 (a random free port).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from deploykit import codebuild
from deploykit.codebuild import BuildRefused, BuildRequest, BuildResult, Project, Webhook, run_build
from deploykit.system import ROOT

BASE_ENV = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}


@dataclass
class Build:
    result: BuildResult
    output: str

    @property
    def phases(self) -> dict[str, str]:
        return {phase.phase_type: phase.status for phase in self.result.phases}

    def lines(self) -> list[str]:
        return self.output.splitlines()


def run_spec(tmp_path: Path, text: str, **request: object) -> Build:
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    (source / "buildspec.yml").write_text(textwrap.dedent(text))
    out = io.StringIO()
    options = {
        "source_dir": source,
        "builds_dir": tmp_path / "builds",
        "project": Project("proj"),
        "base_environment": BASE_ENV,
        "echo": out,
        **request,
    }
    result = run_build(BuildRequest(**options))
    return Build(result, out.getvalue())


# --- one shell for the whole build -----------------------------------------------------------


def test_exported_variable_persists_across_commands_and_phases(tmp_path: Path):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          install:
            commands:
              - export STAGE=installed
          build:
            commands:
              - echo "stage=$STAGE"
        """,
    )
    assert "stage=installed" in build.lines()


def test_plain_shell_variable_persists_like_the_ecr_sample(tmp_path: Path):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          pre_build:
            commands:
              - TAG=abc123
          build:
            commands:
              - echo "tag=${TAG}"
        """,
    )
    assert "tag=abc123" in build.lines()


def test_working_directory_persists_across_phases(tmp_path: Path):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          install:
            commands:
              - mkdir -p deep/er
              - cd deep
          build:
            commands:
              - cd er
              - echo "cwd=$PWD"
        """,
    )
    assert f"cwd={tmp_path / 'src' / 'deep' / 'er'}" in build.lines()


def test_unset_variable_stays_unset(tmp_path: Path):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        env:
          variables:
            GONE: here
        phases:
          build:
            commands:
              - unset GONE
              - echo "gone=${GONE-unset}"
        """,
    )
    assert "gone=unset" in build.lines()


def test_exit_in_a_command_fails_that_command_only(tmp_path: Path):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands:
              - export KEPT=yes
              - exit 4
          post_build:
            commands:
              - echo "kept=$KEPT"
        """,
    )
    assert "kept=yes" in build.lines()
    assert build.phases["BUILD"] == "FAILED"
    assert "Reason: exit status 4" in build.result.phases[2].message


# --- multi-line commands -----------------------------------------------------------------------


def test_block_status_is_its_last_command_status(tmp_path: Path):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands:
              - |
                false
                echo "after false"
        """,
    )
    assert "after false" in build.lines()
    assert build.result.status == "SUCCEEDED"


def test_set_e_in_a_block_stops_and_fails_it(tmp_path: Path):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands:
              - |
                set -e
                false
                echo "not reached"
        """,
    )
    assert "not reached" not in build.lines()
    assert build.phases["BUILD"] == "FAILED"


# --- phases and their failure transitions --------------------------------------------------


def test_failed_command_skips_rest_of_phase_and_runs_finally(tmp_path: Path):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands:
              - echo first
              - "false"
              - echo skipped-command
            finally:
              - echo "finally ran"
        """,
    )
    assert "first" in build.lines()
    assert "skipped-command" not in build.lines()
    assert "finally ran" in build.lines()


def test_failed_finally_fails_the_phase(tmp_path: Path):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands: [echo ok]
            finally: ["false"]
        """,
    )
    assert build.phases["BUILD"] == "FAILED"
    assert build.result.status == "FAILED"


def test_install_failure_skips_every_later_phase(tmp_path: Path):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          install:
            commands: ["false"]
          pre_build:
            commands: [echo pre]
          build:
            commands: [echo build]
          post_build:
            commands: [echo post]
        """,
    )
    assert build.phases == {
        "INSTALL": "FAILED",
        "PRE_BUILD": "SKIPPED",
        "BUILD": "SKIPPED",
        "POST_BUILD": "SKIPPED",
    }
    assert not {"pre", "build", "post"} & set(build.lines())


def test_pre_build_failure_skips_post_build(tmp_path: Path):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          pre_build:
            commands: ["false"]
          post_build:
            commands: [echo post]
        """,
    )
    assert build.phases["POST_BUILD"] == "SKIPPED"
    assert "post" not in build.lines()


def test_post_build_runs_after_failed_build_with_succeeding_0(tmp_path: Path):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands:
              - echo "during build succeeding=$CODEBUILD_BUILD_SUCCEEDING"
              - "false"
          post_build:
            commands:
              - echo "post succeeding=$CODEBUILD_BUILD_SUCCEEDING"
        """,
    )
    assert "during build succeeding=1" in build.lines()
    assert "post succeeding=0" in build.lines()
    assert build.phases["POST_BUILD"] == "SUCCEEDED"
    assert build.result.status == "FAILED"


def test_on_failure_continue_runs_next_phase_but_build_fails(tmp_path: Path):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          pre_build:
            on-failure: CONTINUE
            commands: ["false"]
          build:
            commands: [echo "build ran"]
        """,
    )
    assert "build ran" in build.lines()
    assert build.phases["BUILD"] == "SUCCEEDED"
    assert build.result.status == "FAILED"


def test_on_failure_abort_in_build_skips_post_build(tmp_path: Path):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            on-failure: ABORT
            commands: ["false"]
          post_build:
            commands: [echo post]
        """,
    )
    assert build.phases["POST_BUILD"] == "SKIPPED"


def test_phases_absent_from_the_buildspec_succeed_empty(tmp_path: Path):
    build = run_spec(tmp_path, "version: 0.2\nphases:\n  build:\n    commands: [echo only]\n")
    assert build.phases == {
        "INSTALL": "SUCCEEDED",
        "PRE_BUILD": "SUCCEEDED",
        "BUILD": "SUCCEEDED",
        "POST_BUILD": "SUCCEEDED",
    }


def test_timeout_stops_the_build(tmp_path: Path):
    started = time.monotonic()
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands: [sleep 30]
          post_build:
            commands: [echo post]
        """,
        timeout_seconds=0.5,
    )
    assert time.monotonic() - started < 10
    assert build.result.status == "TIMED_OUT"
    assert build.phases["BUILD"] == "TIMED_OUT"
    assert build.phases["POST_BUILD"] == "SKIPPED"


# --- environment -------------------------------------------------------------------------------


def test_override_beats_project_beats_buildspec(tmp_path: Path):
    project = Project(
        "proj",
        environment_variables=(
            {"name": "FROM_PROJECT", "value": "project", "type": "PLAINTEXT"},
            {"name": "BOTH", "value": "project", "type": "PLAINTEXT"},
        ),
    )
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        env:
          variables:
            FROM_PROJECT: buildspec
            BOTH: buildspec
            ONLY_SPEC: buildspec
        phases:
          build:
            commands:
              - echo "$FROM_PROJECT $BOTH $ONLY_SPEC"
        """,
        project=project,
        env_overrides={"BOTH": "override"},
    )
    assert "project override buildspec" in build.lines()


def test_codebuild_variables_are_set(tmp_path: Path):
    source = tmp_path / "src"
    source.mkdir()
    subprocess.run(["git", "init", "--quiet", str(source)], check=True)
    subprocess.run(
        ["git", "-C", str(source), "-c", "user.email=t@example.test", "-c", "user.name=t",
         "commit", "--quiet", "--allow-empty", "-m", "one"],
        check=True,
    )  # fmt: skip
    sha = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout
    names = [
        *(
            "CODEBUILD_BUILD_ID",
            "CODEBUILD_BUILD_NUMBER",
            "CODEBUILD_BUILD_SUCCEEDING",
            "CODEBUILD_BUILD_ARN",
        ),
        *("CODEBUILD_RESOLVED_SOURCE_VERSION", "CODEBUILD_SOURCE_VERSION", "CODEBUILD_SRC_DIR"),
        *("CODEBUILD_START_TIME", "CODEBUILD_INITIATOR", "AWS_REGION", "AWS_DEFAULT_REGION"),
    ]
    build = run_spec(
        tmp_path,
        "version: 0.2\nphases:\n  build:\n    commands:\n"
        + "".join(f'      - echo "{name}=${name}"\n' for name in names),
        initiator="tester",
    )
    seen = dict(line.split("=", 1) for line in build.lines() if line.split("=", 1)[0] in names)
    assert re.fullmatch(r"proj:[0-9a-f-]{36}", seen["CODEBUILD_BUILD_ID"])
    assert (
        seen["CODEBUILD_BUILD_ARN"]
        == f"arn:aws:codebuild:us-east-1:123456789012:build/{seen['CODEBUILD_BUILD_ID']}"
    )
    assert seen["CODEBUILD_BUILD_NUMBER"] == "1"
    assert seen["CODEBUILD_BUILD_SUCCEEDING"] == "1"
    assert seen["CODEBUILD_RESOLVED_SOURCE_VERSION"] == seen["CODEBUILD_SOURCE_VERSION"] == sha.strip()
    assert seen["CODEBUILD_SRC_DIR"] == str(source)
    assert abs(int(seen["CODEBUILD_START_TIME"]) - time.time() * 1000) < 60_000
    assert seen["AWS_REGION"] == seen["AWS_DEFAULT_REGION"] == "us-east-1"
    assert seen["CODEBUILD_INITIATOR"] == "tester"


def test_build_number_increments_per_project(tmp_path: Path):
    spec = "version: 0.2\nphases:\n  build:\n    commands: [echo n=$CODEBUILD_BUILD_NUMBER]\n"
    numbers = [run_spec(tmp_path, spec).result.build_number for _ in range(3)]
    other = run_spec(tmp_path, spec, project=Project("other")).result.build_number
    assert numbers == [1, 2, 3]
    assert other == 1


@pytest.mark.parametrize(
    ("head_ref", "trigger"), [("refs/heads/main", "branch/main"), ("refs/tags/v1", "tag/v1")]
)
def test_webhook_variables(tmp_path: Path, head_ref: str, trigger: str):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands:
              - echo "$CODEBUILD_WEBHOOK_EVENT $CODEBUILD_WEBHOOK_HEAD_REF $CODEBUILD_WEBHOOK_TRIGGER"
        """,
        webhook=Webhook(head_ref),
    )
    assert f"PUSH {head_ref} {trigger}" in build.lines()


def test_webhook_variables_absent_on_a_manual_build(tmp_path: Path):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands:
              - echo "trigger=${CODEBUILD_WEBHOOK_TRIGGER-none}"
        """,
        base_environment={**BASE_ENV, "CODEBUILD_WEBHOOK_TRIGGER": "branch/stale"},
    )
    assert "trigger=none" in build.lines()


def test_exported_variables_hold_values_from_the_end_of_the_build(tmp_path: Path):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        env:
          exported-variables: [IMAGE_URI, NEVER_SET]
        phases:
          build:
            commands:
              - export IMAGE_URI=registry/app:1
          post_build:
            commands:
              - export IMAGE_URI=registry/app:2
        """,
    )
    assert build.result.exported_variables == {"IMAGE_URI": "registry/app:2", "NEVER_SET": None}
    assert "  exported IMAGE_URI=registry/app:2" in build.lines()


# --- reports, logs, summary, CLI ----------------------------------------------------------------

JUNIT = """<?xml version="1.0"?>
<testsuites><testsuite name="s">
  <testcase classname="app.tests" name="test_ok"/>
  <testcase classname="app.tests" name="test_broken"><failure message="no"/></testcase>
  <testcase classname="app.tests" name="test_crash"><error message="boom"/></testcase>
  <testcase classname="app.tests" name="test_later"><skipped/></testcase>
</testsuite></testsuites>
"""


def test_junit_report_is_summarised(tmp_path: Path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "fixture.xml").write_text(JUNIT)
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        phases:
          build:
            commands:
              - mkdir -p out/reports && cp fixture.xml out/reports/junit.xml
        reports:
          unit:
            base-directory: out
            files:
              - 'reports/*.xml'
        """,
    )
    (report,) = build.result.reports
    assert report.files == ["out/reports/junit.xml"]
    assert (report.tests, report.failures, report.errors, report.skipped) == (4, 1, 1, 1)
    assert report.failed_tests == ["app.tests.test_broken", "app.tests.test_crash"]
    assert report.status == "FAILED"
    expected = "  report unit: 4 tests, 1 failures, 1 errors, 1 skipped; failing: app.tests.test_broken, "
    assert expected + "app.tests.test_crash" in build.lines()


def test_report_without_files_is_incomplete(tmp_path: Path):
    build = run_spec(
        tmp_path,
        "version: 0.2\nphases:\n  build:\n    commands: [echo]\nreports:\n  unit:\n    files: [no.xml]\n",
    )
    assert build.result.reports[0].status == "INCOMPLETE"


def test_log_file_summary_and_final_line(tmp_path: Path):
    build = run_spec(tmp_path, "version: 0.2\nphases:\n  build:\n    commands: [echo hello-log]\n")
    assert build.lines()[-1] == "BUILD SUCCEEDED"
    log = tmp_path / "builds" / "proj" / "1.log"
    assert build.result.log_file == log
    assert "hello-log" in log.read_text().splitlines()
    summary = json.loads((tmp_path / "builds" / "proj" / "1.json").read_text())
    assert summary["buildStatus"] == "SUCCEEDED"
    assert [phase["phaseStatus"] for phase in summary["phases"]] == ["SUCCEEDED"] * 4


def test_build_summaries_are_listed_in_build_number_order(tmp_path: Path):
    run_spec(tmp_path, "version: 0.2\nphases:\n  build:\n    commands: [echo]\n")
    project_dir = tmp_path / "builds" / "proj"
    for number in (10, 2):
        (project_dir / f"{number}.json").write_text("{}")
    listed = codebuild.build_summaries("proj", tmp_path / "builds")
    assert listed == [project_dir / "1.json", project_dir / "2.json", project_dir / "10.json"]


def test_cli_fails_with_summary_json_and_final_line(tmp_path: Path):
    (tmp_path / "buildspec.yml").write_text("version: 0.2\nphases:\n  build:\n    commands: ['false']\n")
    summary = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "deploykit.codebuild", "run", "--source-dir", str(tmp_path),
         "--builds-dir", str(tmp_path / "builds"), "--project-vars", str(tmp_path / "none.yml"),
         "--summary-json", str(summary)],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == "BUILD FAILED"
    build_phase = json.loads(summary.read_text())["phases"][2]
    assert (build_phase["phaseType"], build_phase["phaseStatus"]) == ("BUILD", "FAILED")
    assert build_phase["contexts"] == [
        {
            "statusCode": "COMMAND_EXECUTION_ERROR",
            "message": "Error while executing command: false. Reason: exit status 1",
        }
    ]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_the_runner_stops_the_running_command(tmp_path: Path, stop: signal.Signals):
    pid_file = tmp_path / "command.pid"
    (tmp_path / "buildspec.yml").write_text(
        f"version: 0.2\nphases:\n  build:\n    commands:\n      - echo $$ > {pid_file} && exec sleep 60\n"
    )
    runner = subprocess.Popen(
        [sys.executable, "-m", "deploykit.codebuild", "run", "--source-dir", str(tmp_path),
         "--builds-dir", str(tmp_path / "builds"), "--project-vars", str(tmp_path / "none.yml")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    runner.send_signal(stop)
    output, _ = runner.communicate(timeout=15)
    assert runner.returncode == 130
    assert output.splitlines()[-1] == "BUILD STOPPED"
    assert re.search(r"^  BUILD +STOPPED ", output, re.MULTILINE)
    command = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{command}").exists() and "Z" not in _process_state(command):
        assert time.monotonic() < deadline, "the build's command outlived the runner"
        time.sleep(0.05)


def _process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "gone"


def test_cache_paths_are_reported_as_not_cached(tmp_path: Path):
    build = run_spec(
        tmp_path,
        "version: 0.2\nphases:\n  build:\n    commands: [echo]\ncache:\n  paths: ['/root/.cache/pip/**/*']\n",
    )
    assert build.result.cache_paths == ("/root/.cache/pip/**/*",)
    assert "  cache (not cached locally): /root/.cache/pip/**/*" in build.lines()


# --- one build at a time -------------------------------------------------------------------------

SPEC = "version: 0.2\nphases:\n  build:\n    commands: [echo ran]\n"


def hold_lock(builds_dir: Path, project: str, released: threading.Event, held: threading.Event) -> None:
    with codebuild.project_lock(builds_dir / project, wait=False) as handle:
        codebuild.record_holder(handle, {"id": f"{project}:running", "number": 7, "pid": 1, "started": "now"})
        held.set()
        released.wait(10)


def test_second_build_is_refused_naming_the_running_build(tmp_path: Path):
    released, held = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_lock, args=(tmp_path / "builds", "proj", released, held))
    holder.start()
    held.wait(5)
    try:
        with pytest.raises(BuildRefused, match=r"build proj:running \(#7, pid 1"):
            run_spec(tmp_path, SPEC)
    finally:
        released.set()
        holder.join()


def test_second_build_waits_when_asked(tmp_path: Path):
    released, held = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_lock, args=(tmp_path / "builds", "proj", released, held))
    holder.start()
    held.wait(5)
    threading.Timer(0.5, released.set).start()
    build = run_spec(tmp_path, SPEC, wait_for_lock=True)
    holder.join()
    assert any("waiting for build proj:running (#7" in line for line in build.lines())
    assert build.result.status == "SUCCEEDED"


# --- Parameter Store and Secrets Manager (moto server on 127.0.0.1) ----------------------------


@pytest.fixture(scope="module")
def moto_endpoint(moto_server, request: pytest.FixtureRequest) -> str:
    return moto_server(request)


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_endpoint


def test_parameter_store_value_reaches_the_build_masked(tmp_path: Path, aws: str):
    name, secret = f"/deploykit/test/{uuid.uuid4().hex}", f"s3cr3t-{uuid.uuid4().hex}"
    boto3.client("ssm").put_parameter(Name=name, Value=secret, Type="SecureString")
    build = run_spec(
        tmp_path,
        f"""
        version: 0.2
        env:
          parameter-store:
            DJANGO_SECRET_KEY: {name}
          exported-variables: [LEAK]
        phases:
          build:
            commands:
              - test "$DJANGO_SECRET_KEY" = "{secret}"
              - echo "key is $DJANGO_SECRET_KEY"
              - export LEAK="$DJANGO_SECRET_KEY"
        """,
    )
    assert build.result.status == "SUCCEEDED"
    assert "key is ***" in build.lines()
    assert secret not in build.output
    assert secret not in build.result.log_file.read_text()
    assert secret not in (tmp_path / "builds" / "proj" / "1.json").read_text()


def test_secrets_manager_json_key_reaches_the_build_masked(tmp_path: Path, aws: str):
    name, password = f"deploykit/test/{uuid.uuid4().hex}", f"pw-{uuid.uuid4().hex}"
    boto3.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps({"password": password}))
    build = run_spec(
        tmp_path,
        f"""
        version: 0.2
        env:
          secrets-manager:
            DB_PASSWORD: {name}:password
        phases:
          build:
            commands:
              - test "$DB_PASSWORD" = "{password}"
              - echo "password is $DB_PASSWORD"
        """,
    )
    assert build.result.status == "SUCCEEDED"
    assert "password is ***" in build.lines()
    assert password not in build.output
    assert password not in build.result.log_file.read_text()


def test_missing_parameter_fails_the_build_before_install(tmp_path: Path, aws: str):
    build = run_spec(
        tmp_path,
        """
        version: 0.2
        env:
          parameter-store:
            NOPE: /deploykit/test/does-not-exist
        phases:
          install:
            commands: [echo install-ran]
        """,
    )
    assert build.result.status == "FAILED"
    assert "NOPE (/deploykit/test/does-not-exist)" in build.result.error
    assert "install-ran" not in build.lines()
    assert set(build.phases.values()) == {"SKIPPED"}
