"""`git push` to the local bare repository starts the build when the filter groups accept the push."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from deploykit.git_trigger import init_remote
from deploykit.system import ROOT

PROJECT = "trigger-test"
MAIN_ONLY = [
    [
        {"type": "EVENT", "pattern": "PUSH", "excludeMatchedPattern": False},
        {"type": "HEAD_REF", "pattern": "^refs/heads/main$", "excludeMatchedPattern": False},
    ]
]
# Writes what the build saw to a marker named after the build number: the checkout itself is removed.
BUILDSPEC = """\
version: 0.2
env:
  variables:
    DEPLOY_ENV: production
phases:
  build:
    commands:
      - test ! -e untracked.txt
      - sleep "${{SLEEP_SECONDS:-0}}"
      - >-
        echo "$(git rev-parse HEAD) $CODEBUILD_WEBHOOK_TRIGGER $CODEBUILD_RESOLVED_SOURCE_VERSION $DEPLOY_ENV"
        > "{markers}/built-$CODEBUILD_BUILD_NUMBER"
"""


@dataclass
class Setup:
    work: Path
    remote: Path
    markers: Path
    builds: Path
    env: dict[str, str]

    def git(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *args],
            cwd=self.work,
            capture_output=True,
            text=True,
            check=False,
            env={**self.env, **extra_env},
        )

    def commit(self, message: str, path: str = "app.txt") -> str:
        target = self.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"{message}\n")
        assert self.git("add", path).returncode == 0
        assert self.git("commit", "--quiet", "-m", message).returncode == 0
        return self.git("rev-parse", "HEAD").stdout.strip()

    def push(self, *refspecs: str, **extra_env: str) -> str:
        result = self.git("push", "--quiet", str(self.remote), *refspecs, **extra_env)
        assert result.returncode == 0, result.stderr
        # A hook's output reaches the pusher on stderr, each line prefixed with "remote: ".
        # git pads each relayed line with spaces.
        return "\n".join(line.removeprefix("remote: ").rstrip() for line in result.stderr.splitlines())

    def markers_written(self) -> list[str]:
        return sorted(path.name for path in self.markers.iterdir())


def make_setup(tmp_path: Path, filter_groups: list) -> Setup:
    markers, builds, work = tmp_path / "markers", tmp_path / "builds", tmp_path / "work"
    markers.mkdir()
    vars_file = tmp_path / "codebuild.yml"
    vars_file.write_text(
        yaml.safe_dump({"codebuild_project_name": PROJECT, "codebuild_webhook_filter_groups": filter_groups})
    )
    remote = tmp_path / "remote.git"
    init_remote(
        remote,
        vars_path=vars_file,
        builds_dir=builds,
        python=Path(sys.executable),
        project_root=ROOT,
        env_overrides={"DEPLOY_ENV": "local"},
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Dev",
        "GIT_AUTHOR_EMAIL": "dev@example.test",
        "GIT_COMMITTER_NAME": "Dev",
        "GIT_COMMITTER_EMAIL": "dev@example.test",
        "DEPLOYKIT_PUSH_ACTOR": "dev@example.test",
    }
    subprocess.run(["git", "init", "--quiet", "--initial-branch=main", str(work)], check=True, env=env)
    (work / "buildspec.yml").write_text(BUILDSPEC.format(markers=markers))
    setup = Setup(work, remote, markers, builds, env)
    setup.git("add", "buildspec.yml")
    return setup


@pytest.fixture
def repo(tmp_path: Path) -> Setup:
    return make_setup(tmp_path, MAIN_ONLY)


def test_hook_runs_the_venv_python_by_absolute_path(repo: Setup):
    hook = repo.remote / "hooks" / "post-receive"
    assert os.access(hook, os.X_OK)
    assert f"exec {sys.executable} -c " in hook.read_text()


def test_push_to_main_builds_the_pushed_commit(repo: Setup):
    sha = repo.commit("first")
    output = repo.push("HEAD:refs/heads/main")
    assert output.splitlines()[-1] == "BUILD SUCCEEDED", output
    assert repo.markers_written() == ["built-1"]
    assert (repo.markers / "built-1").read_text().split() == [sha, "branch/main", sha, "local"]


def test_build_runs_on_a_clean_checkout(repo: Setup):
    repo.commit("first")
    (repo.work / "untracked.txt").write_text("only in the pusher's work tree\n")
    output = repo.push("HEAD:refs/heads/main")
    assert "BUILD SUCCEEDED" in output, output


def test_push_to_another_branch_prints_the_reason_and_builds_nothing(repo: Setup):
    repo.commit("first")
    output = repo.push("HEAD:refs/heads/feature")
    assert output.strip() == (
        "deploykit: no build for refs/heads/feature: no filter group matched: "
        "group 1 HEAD_REF ^refs/heads/main$ did not match refs/heads/feature"
    )
    assert repo.markers_written() == []


def test_deleting_a_branch_builds_nothing(tmp_path: Path):
    every_push = [[{"type": "EVENT", "pattern": "PUSH"}]]
    setup = make_setup(tmp_path, every_push)
    setup.commit("first")
    setup.push("HEAD:refs/heads/feature")
    output = setup.push(":refs/heads/feature")
    assert output.strip() == "deploykit: refs/heads/feature deleted: no build"
    assert setup.markers_written() == ["built-1"]


def test_tag_push_builds_when_a_group_accepts_tags(tmp_path: Path):
    setup = make_setup(
        tmp_path, [[{"type": "EVENT", "pattern": "PUSH"}, {"type": "HEAD_REF", "pattern": "^refs/tags/v"}]]
    )
    sha = setup.commit("release")
    assert setup.git("tag", "-a", "v1", "-m", "v1").returncode == 0
    output = setup.push("refs/tags/v1")
    assert "BUILD SUCCEEDED" in output, output
    assert (setup.markers / "built-1").read_text().split() == [sha, "tag/v1", sha, "local"]


def test_file_path_filter_sees_the_pushed_changes(tmp_path: Path):
    app_only = [[{"type": "EVENT", "pattern": "PUSH"}, {"type": "FILE_PATH", "pattern": "^app/"}]]
    setup = make_setup(tmp_path, app_only)
    setup.commit("docs", path="docs/readme.txt")
    docs_output = setup.push("HEAD:refs/heads/main")
    setup.commit("code", path="app/main.txt")
    app_output = setup.push("HEAD:refs/heads/main")
    assert "FILE_PATH ^app/ did not match 2 changed file(s)" in docs_output
    assert "BUILD SUCCEEDED" in app_output, app_output
    assert setup.markers_written() == ["built-1"]


def test_push_while_a_build_runs_is_refused_naming_it(repo: Setup):
    repo.commit("first")
    first = subprocess.Popen(
        ["git", "push", "--quiet", str(repo.remote), "HEAD:refs/heads/main"],
        cwd=repo.work,
        env={**repo.env, "SLEEP_SECONDS": "3"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = repo.builds / PROJECT / "lock"
    deadline = time.monotonic() + 20
    running = {}
    while time.monotonic() < deadline and "id" not in running:
        time.sleep(0.1)
        try:
            running = json.loads(lock.read_text() or "{}")
        except (OSError, ValueError):
            running = {}
    assert "id" in running, "the first build never started"
    repo.commit("second")
    output = repo.push("HEAD:refs/heads/main")
    first_output = first.communicate(timeout=30)[1]
    assert f"build refused: build {running['id']} (#1" in output
    assert "BUILD SUCCEEDED" in first_output
    assert repo.markers_written() == ["built-1"]


# ---------------------------------------------------------------------------------------------
# The deploy stage: what EventBridge does on AWS when a build succeeds

# The build exports the image and the commit, as buildspec.yml does; FAIL_BUILD makes it fail.
EXPORTING_BUILDSPEC = """\
version: 0.2
env:
  exported-variables:
    - IMAGE_URI
    - SOURCE_COMMIT
phases:
  build:
    commands:
      - test -z "${FAIL_BUILD:-}"
      - export IMAGE_URI="registry.test/deploykit/app:${CODEBUILD_RESOLVED_SOURCE_VERSION:0:12}"
      - export SOURCE_COMMIT="$CODEBUILD_RESOLVED_SOURCE_VERSION"
"""
# The deploy project's buildspec, fixed in the trigger's definition: it records what it was given.
DEPLOY_BUILDSPEC = """\
version: 0.2
phases:
  build:
    commands:
      - >-
        echo "fixed $(git rev-parse HEAD) $IMAGE_URI $DEPLOY_ENV"
        "${SSH_AUTH_SOCK:-no-agent} $CODEBUILD_INITIATOR" > "MARKERS/deployed-$CODEBUILD_BUILD_NUMBER"
"""


@pytest.fixture
def staged(tmp_path: Path) -> Setup:
    """A trigger with a deploy stage whose buildspec lives outside the pushed repository."""
    setup = make_setup(tmp_path, MAIN_ONLY)
    (setup.work / "buildspec.yml").write_text(EXPORTING_BUILDSPEC)
    setup.git("add", "buildspec.yml")
    # What the pushed commit says the deploy should run: it must not be what runs.
    (setup.work / "buildspec-deploy.yml").write_text(
        DEPLOY_BUILDSPEC.replace("fixed", "pushed").replace("MARKERS", str(setup.markers))
    )
    setup.git("add", "buildspec-deploy.yml")
    fixed = tmp_path / "deploy-project" / "buildspec-deploy.yml"
    fixed.parent.mkdir()
    fixed.write_text(DEPLOY_BUILDSPEC.replace("MARKERS", str(setup.markers)))
    init_remote(
        setup.remote,
        vars_path=tmp_path / "codebuild.yml",
        builds_dir=setup.builds,
        python=Path(sys.executable),
        project_root=ROOT,
        deploy_buildspec=fixed,
        deploy_env_overrides={"DEPLOY_ENV": "local"},
    )
    return setup


def test_a_build_that_succeeds_starts_the_deploy_with_its_image_and_commit(staged: Setup):
    sha = staged.commit("first")
    output = staged.push("HEAD:refs/heads/main", SSH_AUTH_SOCK="/tmp/pusher-agent.sock")
    assert f"succeeded: deploying registry.test/deploykit/app:{sha[:12]} (deploykit-deploy)" in output, output
    (marker,) = [name for name in staged.markers_written() if name.startswith("deployed-")]
    words = (staged.markers / marker).read_text().split()
    # The trigger's own buildspec ran (not the pushed one), on the exported commit, with the image,
    # the deploy project's variables, and none of the pusher's SSH material.
    assert words == ["fixed", sha, f"registry.test/deploykit/app:{sha[:12]}", "local", "no-agent",
                     "rule/deploykit-deploy-on-build-succeeded"]  # fmt: skip
    # One summary per project: the build's and the deploy's.
    assert sorted(path.parent.name for path in staged.builds.glob("*/1.json")) == [
        "deploykit-deploy",
        PROJECT,
    ]


def test_a_build_that_fails_starts_no_deploy(staged: Setup):
    staged.commit("first")
    output = staged.push("HEAD:refs/heads/main", FAIL_BUILD="1")
    assert "BUILD FAILED" in output, output
    assert "deploying" not in output
    assert [name for name in staged.markers_written() if name.startswith("deployed-")] == []
