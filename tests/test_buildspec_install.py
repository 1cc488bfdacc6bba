"""The install phases of buildspec.yml and buildspec-deploy.yml, run verbatim by the local runner.

`python` is a small script here: it names an interpreter and makes "virtualenvs" whose pip only
records what it was asked to install, so what this proves is the command's own behaviour, not
pip's: each stage installs from the files it should, keeps its virtualenv while those files do not
change, and makes a new one when any of them does (a pin bumped in a file that another includes
must not leave a build on the old version). The pins themselves: each package has one home.
"""

from __future__ import annotations

import io
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from deploykit.codebuild import BuildRequest, Project, run_build
from deploykit.system import ROOT

PYTHON = r"""#!/bin/bash
if [ "$1" = "-c" ]; then echo "/usr/bin/python3.11 3.11.7"; exit 0; fi
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin"
  printf '#!/bin/bash\necho "$0 $*" >> "%s"\n' "$PIP_LOG" > "$3/bin/pip"
  chmod +x "$3/bin/pip"
  exit 0
fi
echo "python shim: unexpected arguments: $*" >&2
exit 2
"""

BUILD_FILES = ["requirements.txt", "requirements-deploy.txt", "django_app/requirements.txt"]
INCLUDE = re.compile(r"^\s*(?:-r|--requirement)[\s=]+(\S+)")
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(\S.*)?$")


def _venv_command(buildspec: str) -> str:
    commands = yaml.safe_load((ROOT / buildspec).read_text())["phases"]["install"]["commands"]
    (command,) = [command for command in commands if "deploykit-venv" in command]
    return command


@dataclass
class Install:
    source: Path
    tmp_path: Path
    buildspec: str
    runs: int = 0

    def run(self) -> tuple[str, list[str]]:
        """Run the virtualenv command once more; (the build's output, the pip calls so far)."""
        self.runs += 1
        spec = {
            "version": 0.2,
            "env": {"shell": "bash"},
            "phases": {"install": {"commands": [_venv_command(self.buildspec)]}},
        }
        (self.source / "buildspec.yml").write_text(yaml.safe_dump(spec))
        out = io.StringIO()
        result = run_build(
            BuildRequest(
                source_dir=self.source,
                builds_dir=self.tmp_path / "builds",
                project=Project(f"install-{Path(self.buildspec).stem}"),
                base_environment={
                    "PATH": f"{self.tmp_path / 'shims'}:/usr/bin:/bin",
                    "HOME": str(self.tmp_path),
                    "LANG": "C.UTF-8",
                    "TMPDIR": str(self.tmp_path),
                    "PIP_LOG": str(self.tmp_path / "pip.log"),
                },
                echo=out,
            )
        )
        assert result.status == "SUCCEEDED", out.getvalue()
        return out.getvalue(), (self.tmp_path / "pip.log").read_text().splitlines()

    def change(self, name: str) -> None:
        with (self.source / name).open("a") as file:
            file.write(f"# changed before run {self.runs + 1}\n")


def install(tmp_path: Path, buildspec: str, files: list[str] = BUILD_FILES) -> Install:
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "python").write_text(PYTHON)
    (shims / "python").chmod(0o755)
    source = tmp_path / "src"
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    (tmp_path / "pip.log").touch()
    return Install(source, tmp_path, buildspec)


def _installed_from(call: str) -> list[str]:
    return re.findall(r"--requirement (\S+)", call)


def _included(name: str) -> list[str]:
    """The requirements file and, depth first, every file it includes."""
    path = ROOT / name
    found = [name]
    for line in path.read_text().splitlines():
        if match := INCLUDE.match(line):
            found += _included(str((path.parent / match[1]).relative_to(ROOT)))
    return found


# ---------------------------------------------------------------------------------------------
# The build's virtualenv


def test_the_build_installs_the_tools_and_the_apps_requirements_once(tmp_path):
    build = install(tmp_path, "buildspec.yml")
    _, calls = build.run()
    assert [_installed_from(call) for call in calls] == [["requirements.txt", "django_app/requirements.txt"]]
    output, calls = build.run()
    assert len(calls) == 1
    assert "requirements unchanged: reusing the virtualenv" in output


def test_the_build_installs_from_every_file_named_here():
    installed = [*_included("requirements.txt"), *_included("django_app/requirements.txt")]
    assert sorted(installed) == sorted(BUILD_FILES)


@pytest.mark.parametrize("changed", BUILD_FILES)
def test_a_change_to_any_file_the_build_installs_from_makes_a_new_virtualenv(tmp_path, changed):
    build = install(tmp_path, "buildspec.yml")
    build.run()
    build.change(changed)
    _, calls = build.run()
    assert len(calls) == 2, f"{changed} changed and the virtualenv was reused"
    assert calls[0].split()[0] != calls[1].split()[0]


# ---------------------------------------------------------------------------------------------
# The deploy's virtualenv


def test_the_deploy_installs_its_own_requirements_only(tmp_path):
    deploy = install(tmp_path, "buildspec-deploy.yml")
    _, calls = deploy.run()
    assert [_installed_from(call) for call in calls] == [["requirements-deploy.txt"]]
    assert "/deploykit-venv/deploy-" in calls[0]
    # What it installs is all in that file: it includes no other.
    assert _included("requirements-deploy.txt") == ["requirements-deploy.txt"]


def test_the_deploy_keeps_its_virtualenv_when_only_the_build_tools_change(tmp_path):
    deploy = install(tmp_path, "buildspec-deploy.yml")
    deploy.run()
    deploy.change("requirements.txt")
    deploy.change("django_app/requirements.txt")
    output, calls = deploy.run()
    assert len(calls) == 1
    assert "requirements unchanged: reusing the virtualenv" in output
    deploy.change("requirements-deploy.txt")
    _, calls = deploy.run()
    assert len(calls) == 2


def test_a_commit_from_before_the_deploy_file_deploys_with_all_of_requirements_txt(tmp_path):
    deploy = install(tmp_path, "buildspec-deploy.yml", files=["requirements.txt"])
    _, calls = deploy.run()
    assert [_installed_from(call) for call in calls] == [["requirements.txt"]]


# ---------------------------------------------------------------------------------------------
# The pins


def test_every_package_is_pinned_once():
    homes: dict[str, list[str]] = {}
    for name in BUILD_FILES:
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if not line or INCLUDE.match(line):
                continue
            match = REQUIREMENT.match(line)
            assert match, f"{name}: {line!r} is not a requirement"
            package, _, version = match.groups()
            assert re.fullmatch(r"==[\w.]+", version or ""), f"{name}: {line!r} is not pinned with =="
            homes.setdefault(package.lower().replace("_", "-"), []).append(name)
    assert {package: files for package, files in homes.items() if len(files) > 1} == {}
    assert {"ansible-core", "ansible", "boto3", "botocore"} <= {
        package for package, files in homes.items() if files == ["requirements-deploy.txt"]
    }


def test_the_deploy_file_holds_no_linter_test_tool_or_app_dependency():
    deploy = (ROOT / "requirements-deploy.txt").read_text().lower()
    for package in ("ansible-lint", "molecule", "pytest", "ruff", "yamllint", "moto", "django", "matplotlib"):
        assert not re.search(rf"^{re.escape(package)}\b", deploy, re.MULTILINE), package
