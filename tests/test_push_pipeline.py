"""Pushes to the local deploy remote that must not deploy: another branch, and a commit whose tests fail.

They run after `make demo` has deployed this commit to the stand-in's hosts (the module makes sure
it has), push from a scratch clone, and check what a team relies on: a push that the webhook's
filter groups do not accept starts no build; a build whose tests fail pushes no image, deploys
nothing, leaves every host serving what it served, and says which test failed.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from deploykit import codebuild, demo, postgres, registry, standin
from deploykit.system import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

FAILING_TEST = "test_this_push_must_not_deploy"


def _summaries() -> list[Path]:
    return codebuild.build_summaries(codebuild.load_project().name)


def _serving() -> dict[str, str]:
    return {
        host.name: demo.serving(host) for host in standin.containers().values() if host.state == "running"
    }


def _git(clone: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    identity = ["-c", "user.name=e2e", "-c", "user.email=e2e@deploykit.invalid"]
    return subprocess.run(
        ["git", "-C", str(clone), *identity, *args],
        capture_output=True, text=True, check=False, timeout=1800, env=env,
    )  # fmt: skip


def _push(clone: Path, ref: str) -> subprocess.CompletedProcess[str]:
    # The pusher's environment reaches the build, as `make push` gives it (deploykit.demo.push).
    env = standin.tool_env({**os.environ, "DATABASE_URL": postgres.database_url()})
    return _git(clone, "push", "--force", str(demo.REMOTE), f"HEAD:{ref}", env=env)


@pytest.fixture(scope="module")
def deployed() -> dict[str, str]:
    """The stand-in's hosts serving this commit, deployed by the pipeline (`make demo`)."""
    result = subprocess.run(
        [sys.executable, "-m", "deploykit", "demo"], cwd=ROOT, capture_output=True, text=True, check=False,
        timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    serving = _serving()
    assert set(serving.values()) == {demo.current_commit()[:12]}, serving
    return serving


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("push") / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(path)], check=True, timeout=120)
    return path


# Twice, as a second `make test` in the same checkout pushes again: the local remote outlives a
# run, and a branch it already holds at this commit would take the push without running its hook.
@pytest.fixture(scope="module", params=["first push", "second push"])
def other_branch(request, deployed, clone):
    branch = f"refs/heads/feature/not-deployed-{secrets.token_hex(4)}"
    before = _summaries()
    pushed = _push(clone, branch)
    after = _summaries()
    # Removed in the remote itself: a push that deletes a branch would run the hook again.
    subprocess.run(["git", "--git-dir", str(demo.REMOTE), "update-ref", "-d", branch], check=True, timeout=60)
    return pushed, branch, before, after


def test_push_to_another_branch_starts_no_build(other_branch):
    pushed, branch, before, after = other_branch
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    assert f"no build for {branch}" in pushed.stderr
    assert after == before


def test_push_to_another_branch_changes_no_host(other_branch, deployed):
    assert _serving() == deployed


@pytest.fixture(scope="module")
def failing_tests(deployed, clone):
    tests = clone / "django_app" / "tests" / "test_failing_push.py"
    tests.write_text(
        '"""Written by tests/test_push_pipeline.py: a commit whose tests fail."""\n\n\n'
        f"def {FAILING_TEST}():\n    assert 1 + 1 == 3\n"
    )
    _git(clone, "add", str(tests))
    committed = _git(clone, "commit", "--quiet", "--message", "A test that fails")
    assert committed.returncode == 0, committed.stderr
    commit = _git(clone, "rev-parse", "HEAD").stdout.strip()
    before = _summaries()
    pushed = _push(clone, "refs/heads/main")
    after = _summaries()
    assert len(after) == len(before) + 1, pushed.stderr[-3000:]
    return pushed, commit, json.loads(after[-1].read_text())


def test_build_with_failing_tests_fails(failing_tests):
    pushed, commit, build = failing_tests
    assert build["resolvedSourceVersion"] == commit
    assert build["buildStatus"] == "FAILED"
    phases = {phase["phaseType"]: phase["phaseStatus"] for phase in build["phases"]}
    assert phases["PRE_BUILD"] == "FAILED"
    assert "BUILD FAILED" in pushed.stderr


def test_report_summary_names_the_failing_test(failing_tests):
    pushed, _, build = failing_tests
    [report] = [report for report in build["reports"] if report["name"] == "django-tests"]
    assert report["testSummary"]["failures"] == 1
    assert any(FAILING_TEST in name for name in report["failedTests"]), report
    assert FAILING_TEST in pushed.stderr


def test_no_image_of_the_failing_commit_is_pushed(failing_tests):
    _, commit, _ = failing_tests
    assert commit[:12] not in registry.tags("deploykit/app")


def test_hosts_keep_serving_the_previous_commit(failing_tests, deployed):
    assert _serving() == deployed
