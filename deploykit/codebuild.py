"""A local AWS CodeBuild: run a buildspec (version 0.2) with CodeBuild's documented semantics.

What it keeps from CodeBuild: phases install → pre_build → build → post_build and their failure
transitions (`finally`, `on-failure`), one shell state for the whole build (variables and the working
directory carry from command to command and phase to phase), the CODEBUILD_* variables, variable
precedence, Parameter Store and Secrets Manager values fetched with boto3 and masked in every log
line, exported variables, JUnit report groups, a build number per project and one log per build.
What it does not do is listed in `DEVIATIONS` and printed by `python -m deploykit.codebuild deviations`.

CLI: python -m deploykit.codebuild run [--buildspec buildspec.yml] [--source-dir DIR] [--env-override K=V]...
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import getpass
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TextIO

import yaml

from deploykit.buildspec import PHASE_NAMES, Buildspec, BuildspecError, Phase, ReportGroup, load_buildspec
from deploykit.system import CACHE, DOCKER, ROOT

PROJECT_VARS = ROOT / "playbooks" / "vars" / "codebuild.yml"
DEPLOY_BUILDSPEC = Path("buildspec-deploy.yml")
BUILDS_DIR = CACHE / "builds"
DEFAULT_REGION = "us-east-1"
# moto's default account: the local stand-in answers for it, and nothing here calls STS for it.
DEFAULT_ACCOUNT_ID = "123456789012"
LOCAL_IMAGE = "deploykit/local-runner"
MASK = "***"
EXIT_FAILED, EXIT_INVALID, EXIT_REFUSED, EXIT_STOPPED = 1, 2, 3, 130
# Variables git sets for a hook; a build started from a hook must not inherit them, or every git
# command inside the build would act on the bare repository instead of the checkout.
GIT_HOOK_VARIABLES = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
    "GIT_PREFIX",
)

# What an operator's shell holds to deploy by hand (deploykit.standin.ssh_environment gives the
# stand-in's): never passed on to a build.
CALLER_SSH_VARIABLES = ("SSH_AUTH_SOCK", "SSH_AGENT_PID", "ANSIBLE_PRIVATE_KEY_FILE", "DEPLOYKIT_KNOWN_HOSTS")

DEVIATIONS = (
    "Commands run on this host as the current user, not in a CodeBuild image: the host's tools are used, "
    "runtime-versions, run-as and git-credential-helper are reported and ignored.",
    "The build inherits the caller's environment (PATH, AWS_ENDPOINT_URL, credentials) beneath the "
    "buildspec's variables, except the caller's SSH agent, key file and known_hosts; a CodeBuild image "
    "starts from its own.",
    "Only bash is run (env.shell /bin/sh and the Windows shells are refused before the build).",
    "Shell state carried between commands: variables (exported or not) and the working directory; "
    "shell options (set -e), functions, aliases and traps are not carried; a command that replaces the "
    "EXIT trap or execs keeps the state from before it.",
    "Phases that did not run are listed as SKIPPED; CodeBuild leaves them out of the build's phase list.",
    "A failing command in a `finally` block skips the rest of that block.",
    "CODEBUILD_BUILD_SUCCEEDING turns 0 as soon as a command fails, so the failing phase's `finally` sees 0.",
    "Reports: JUnit XML is parsed; other formats are listed but not parsed. Nothing is uploaded.",
    "cache.paths and artifacts are validated and reported, but nothing is cached or uploaded.",
    "Background processes started by a command are not stopped at the end of the build.",
    "A second build of the same project is refused while one runs (a project concurrent build limit of 1); "
    "--wait queues it instead.",
)


class BuildRefused(Exception):
    """Another build of the project is running and this one may not wait."""


class VariableFetchError(Exception):
    """A Parameter Store or Secrets Manager value could not be fetched."""


# ---------------------------------------------------------------------------------------------
# Project definition (playbooks/vars/codebuild.yml, shared with the provisioning playbook)


@dataclass(frozen=True)
class Project:
    name: str = "deploykit"
    environment_variables: tuple[dict[str, str], ...] = ()
    timeout_minutes: float = 60
    filter_groups: Any = None
    source: Path | None = None
    # The build project's is read from the pushed source; the deploy project's is fixed in its
    # definition (on AWS the text itself; here the file of the repository the trigger was set up in).
    buildspec: Path = Path("buildspec.yml")


def load_project(path: Path | None = PROJECT_VARS, *, stage: str = "build") -> Project:
    """Read one of the two CodeBuild projects' definitions: the build project (`codebuild_*`, started
    by a push) or the deploy project (`codebuild_deploy_*`, started when a build succeeds); defaults
    when the file is absent."""
    prefix = {"build": "codebuild_", "deploy": "codebuild_deploy_"}[stage]
    if path is None or not path.exists():
        return Project() if stage == "build" else Project(name="deploykit-deploy", buildspec=DEPLOY_BUILDSPEC)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    variables = []
    for item in data.get(f"{prefix}environment_variables") or []:
        kind = str(item.get("type", "PLAINTEXT"))
        if kind not in ("PLAINTEXT", "PARAMETER_STORE", "SECRETS_MANAGER"):
            raise BuildspecError(
                str(path), [f"{prefix}environment_variables.{item.get('name')}: type {kind!r}"]
            )
        variables.append({"name": str(item["name"]), "value": str(item["value"]), "type": kind})
    default_name = "deploykit" if stage == "build" else "deploykit-deploy"
    return Project(
        name=str(data.get(f"{prefix}project_name", default_name)),
        environment_variables=tuple(variables),
        timeout_minutes=float(data.get(f"{prefix}timeout_in_minutes", 60)),
        filter_groups=data.get("codebuild_webhook_filter_groups") if stage == "build" else None,
        source=path,
        buildspec=Path(str(data.get(f"{prefix}buildspec", "buildspec.yml"))),
    )


# ---------------------------------------------------------------------------------------------
# Logging with masking


class Masker:
    """Replaces secret values with *** in any text."""

    def __init__(self) -> None:
        self._secrets: list[str] = []

    def add(self, value: str) -> None:
        # Each line of a multi-line secret is masked on its own: output is masked line by line.
        for piece in (value, *value.splitlines()):
            if piece.strip() and piece not in self._secrets:
                self._secrets.append(piece)
        self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self._secrets)


class BuildLog:
    """Every line the build shows goes through here: masked, to the log file and to the console."""

    def __init__(self, masker: Masker, echo: TextIO | None) -> None:
        self.masker = masker
        self.echo = echo
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    def open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def output(self, text: str) -> None:
        for line in text.split("\n"):
            masked = self.masker(line)
            with self._lock:
                if self._file is not None:
                    self._file.write(masked + "\n")
                    self._file.flush()
                if self.echo is not None:
                    self.echo.write(masked + "\n")
                    self.echo.flush()

    def container(self, message: str) -> None:
        # CodeBuild's own lines start with "[Container] <time>"; keeping the shape keeps logs familiar.
        stamp = datetime.now(UTC).strftime("%Y/%m/%d %H:%M:%S.%f")
        self.output(f"[Container] {stamp} {message}")


# ---------------------------------------------------------------------------------------------
# The build's shell


@dataclass
class CommandResult:
    exit_code: int
    timed_out: bool = False
    error: str | None = None


# Bash's own variables: restoring them would be refused (read-only) or would confuse the new shell.
_BASH_INTERNALS = (
    *("BASH", "BASHOPTS", "BASHPID", "BASH_ALIASES", "BASH_ARGC", "BASH_ARGV", "BASH_ARGV0", "BASH_CMDS"),
    *("BASH_COMMAND", "BASH_EXECUTION_STRING", "BASH_LINENO", "BASH_LOADABLES_PATH", "BASH_REMATCH"),
    *("BASH_SOURCE", "BASH_SUBSHELL", "BASH_VERSINFO", "BASH_VERSION", "COLUMNS", "COMP_WORDBREAKS"),
    *("DIRSTACK", "EPOCHREALTIME", "EPOCHSECONDS", "EUID", "FUNCNAME", "GROUPS", "HISTCMD", "IFS", "LINENO"),
    *("LINES", "OPTERR", "OPTIND", "PIPESTATUS", "PPID", "PS4", "PWD", "RANDOM", "SECONDS", "SHELLOPTS"),
    *("SHLVL", "SRANDOM", "UID", "_"),
)

_SAVE_STATE = r"""
__deploykit_save() {
  __deploykit_status=$?
  set +eu +o pipefail
  { set +x; } 2>/dev/null
  IFS=$' \t\n'
  mapfile -t __deploykit_names < <(compgen -v)
  for __deploykit_name in "${__deploykit_names[@]}"; do
    case "$__deploykit_name" in
      __deploykit_*|INTERNALS) continue ;;
    esac
    [[ ${!__deploykit_name@a} == *r* ]] && continue
    declare -p "$__deploykit_name"
  done > STATE 2>/dev/null
  printf '%s' "$PWD" > CWD
  exit "$__deploykit_status"
}
trap __deploykit_save EXIT
"""


class BuildShell:
    """One shell state for the whole build, as buildspec 0.2 promises.

    Each command runs in a fresh bash that first restores the variables and working directory the
    previous command left, and saves them again from an EXIT trap. A long-lived shell fed command by
    command would die with the first `exit 1` (the project's post_build uses one); CodeBuild fails
    only that command, and so does this.
    """

    def __init__(self, workdir: Path, initial_env: Mapping[str, str], cwd: Path, log: BuildLog) -> None:
        self.workdir = workdir
        self.state = workdir / "state.sh"
        self.cwd_file = workdir / "cwd"
        self.initial_env = dict(initial_env)
        self.cwd = cwd
        self.log = log
        self.bash = shutil.which("bash") or "/bin/bash"
        self._count = 0
        save = _SAVE_STATE.replace("INTERNALS", "|".join(_BASH_INTERNALS))
        self._save = save.replace("STATE", shlex.quote(str(self.state))).replace(
            "CWD", shlex.quote(str(self.cwd_file))
        )

    def _script(self, body: str, exports: Mapping[str, str]) -> Path:
        self._count += 1
        script = self.workdir / f"command-{self._count}.sh"
        lines = []
        if self.state.exists():
            lines.append(f". {shlex.quote(str(self.state))}")
        lines += [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]
        lines.append(self._save)
        lines.append(body)
        script.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return script

    def _environment(self) -> dict[str, str]:
        # After the first command the saved state carries the whole environment, including what a
        # command unset, so the next shell starts from nothing but that state.
        return self.initial_env if not self.state.exists() else {}

    def run(self, command: str, exports: Mapping[str, str], deadline: float | None) -> CommandResult:
        script = self._script(command, exports)
        try:
            process = subprocess.Popen(
                [self.bash, "--noprofile", "--norc", str(script)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self._environment(),
                # Its own process group, so a timeout stops the command and everything it started.
                start_new_session=True,
            )
        except OSError as error:
            return CommandResult(1, error=f"cannot start the command in {self.cwd}: {error.strerror}")
        timed_out = False
        try:
            reader = threading.Thread(target=self._pump, args=(process.stdout,), daemon=True)
            reader.start()
            try:
                process.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                self._stop(process)
        except BaseException:
            # Ctrl-C reaches only the runner (the command has its own session): stop the command too.
            self._stop(process)
            raise
        # A background process may keep the output pipe open; its later lines still reach the log.
        reader.join(timeout=1.0)
        if self.cwd_file.exists():
            self.cwd = Path(self.cwd_file.read_text(encoding="utf-8") or self.cwd)
        code = process.returncode
        return CommandResult(code if code >= 0 else 128 - code, timed_out=timed_out)

    def _pump(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.log.output(raw.decode("utf-8", "replace").rstrip("\r\n"))

    @staticmethod
    def _stop(process: subprocess.Popen[bytes]) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                continue

    def read_variables(self, names: Sequence[str]) -> dict[str, str | None]:
        """The values the build's shell holds now (None: not set)."""
        if not names:
            return {}
        body = "".join(
            f'if [ -n "${{{name}+x}}" ]; then printf "%s=%s\\0" {name} "${name}"; fi\n' for name in names
        )
        restore = f". {shlex.quote(str(self.state))}\n" if self.state.exists() else ""
        result = subprocess.run(
            [self.bash, "--noprofile", "--norc", "-c", restore + body],
            capture_output=True,
            cwd=self.cwd if self.cwd.exists() else self.workdir,
            env=self._environment(),
            check=False,
        )
        values: dict[str, str | None] = dict.fromkeys(names)
        for item in result.stdout.decode("utf-8", "replace").split("\0"):
            if "=" in item:
                name, value = item.split("=", 1)
                values[name] = value
        return values


# ---------------------------------------------------------------------------------------------
# Parameter Store and Secrets Manager


def _aws_client(service: str, region: str) -> Any:
    import boto3
    from botocore.config import Config

    # The endpoint comes from AWS_ENDPOINT_URL (the local moto server) or the default AWS one.
    config = Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 2})
    return boto3.client(service, region_name=region, config=config)


def fetch_parameters(names: Mapping[str, str], region: str) -> dict[str, str]:
    """Variable name -> decrypted Parameter Store value; VariableFetchError names what is missing."""
    if not names:
        return {}
    from botocore.exceptions import BotoCoreError, ClientError

    client = _aws_client("ssm", region)
    wanted = sorted(set(names.values()))
    found: dict[str, str] = {}
    missing: list[str] = []
    try:
        # GetParameters takes at most 10 names per call.
        for start in range(0, len(wanted), 10):
            answer = client.get_parameters(Names=wanted[start : start + 10], WithDecryption=True)
            found.update({item["Name"]: item["Value"] for item in answer["Parameters"]})
            missing += answer.get("InvalidParameters", [])
    except (BotoCoreError, ClientError) as error:
        raise VariableFetchError(f"parameter-store: cannot read from SSM: {error}") from error
    if missing:
        owners = ", ".join(
            f"{variable} ({parameter})" for variable, parameter in names.items() if parameter in missing
        )
        raise VariableFetchError(f"parameter-store: parameter not found: {owners}")
    return {variable: found[parameter] for variable, parameter in names.items()}


def parse_secret_reference(reference: str) -> tuple[str, str, str, str]:
    """`secret-id:json-key:version-stage:version-id` (secret-id may be an ARN) -> its four parts."""
    parts = reference.split(":")
    # An ARN has seven colon-separated parts of its own: arn:aws:secretsmanager:region:account:secret:name
    cut = 7 if reference.startswith("arn:") else 1
    secret_id, rest = ":".join(parts[:cut]), parts[cut:]
    if not secret_id or len(rest) > 3:
        raise VariableFetchError(
            f"secrets-manager: {reference!r} is not secret-id:json-key:version-stage:version-id"
        )
    json_key, stage, version = [*rest, "", "", ""][:3]
    return secret_id, json_key, stage, version


def fetch_secrets(references: Mapping[str, str], region: str) -> dict[str, str]:
    """Variable name -> Secrets Manager value (or one JSON key of it)."""
    if not references:
        return {}
    from botocore.exceptions import BotoCoreError, ClientError

    client = _aws_client("secretsmanager", region)
    values = {}
    for variable, reference in references.items():
        secret_id, json_key, stage, version = parse_secret_reference(reference)
        request = {"SecretId": secret_id}
        if stage:
            request["VersionStage"] = stage
        if version:
            request["VersionId"] = version
        try:
            answer = client.get_secret_value(**request)
        except (BotoCoreError, ClientError) as error:
            raise VariableFetchError(f"secrets-manager: {variable} ({secret_id}): {error}") from error
        text = answer.get("SecretString")
        if text is None:
            text = answer["SecretBinary"].decode("utf-8", "replace")
        if json_key:
            try:
                value = json.loads(text)[json_key]
            except (ValueError, KeyError, TypeError) as error:
                raise VariableFetchError(
                    f"secrets-manager: {variable}: secret {secret_id} has no JSON key {json_key!r}"
                ) from error
            text = value if isinstance(value, str) else json.dumps(value)
        values[variable] = text
    return values


# ---------------------------------------------------------------------------------------------
# Reports


@dataclass
class ReportSummary:
    name: str
    report_group: str
    file_format: str
    files: list[str] = field(default_factory=list)
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    failed_tests: list[str] = field(default_factory=list)
    status: str = "SUCCEEDED"
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reportGroup": self.report_group,
            "fileFormat": self.file_format,
            "status": self.status,
            "files": self.files,
            "testSummary": {
                "total": self.tests,
                "failures": self.failures,
                "errors": self.errors,
                "skipped": self.skipped,
            },
            "failedTests": self.failed_tests,
            "message": self.message,
        }

    def line(self) -> str:
        if self.status == "INCOMPLETE":
            return f"{self.name}: {self.message}"
        counts = f"{self.failures} failures, {self.errors} errors, {self.skipped} skipped"
        text = f"{self.name}: {self.tests} tests, {counts}"
        if self.failed_tests:
            text += "; failing: " + ", ".join(self.failed_tests)
        return text


def _glob_files(base: Path, patterns: Sequence[str]) -> list[Path]:
    found: list[Path] = []
    for pattern in patterns:
        for path in sorted(base.glob(pattern)) if pattern else []:
            if path.is_file() and path not in found:
                found.append(path)
    return found


def summarise_report(group: ReportGroup, src_dir: Path, project: str) -> ReportSummary:
    """Collect a report group's files and count its test cases (JUnit XML)."""
    base = src_dir / group.base_directory if group.base_directory else src_dir
    summary = ReportSummary(group.name, f"{project}-{group.name}", group.file_format)
    files = _glob_files(base, group.files)
    summary.files = [
        str(path.relative_to(src_dir)) if path.is_relative_to(src_dir) else str(path) for path in files
    ]
    if not files:
        summary.status, summary.message = "INCOMPLETE", f"no file matched {', '.join(group.files)} in {base}"
        return summary
    if group.file_format != "JUNITXML":
        summary.status, summary.message = (
            "INCOMPLETE",
            f"{group.file_format} is not parsed by the local runner",
        )
        return summary
    for path in files:
        try:
            # The reports are files this build just wrote, not input from outside.
            root = ElementTree.parse(path).getroot()  # noqa: S314
        except ElementTree.ParseError as error:
            summary.status, summary.message = "INCOMPLETE", f"{path.name} is not valid XML: {error}"
            return summary
        for case in root.iter("testcase"):
            summary.tests += 1
            name = ".".join(part for part in (case.get("classname"), case.get("name")) if part)
            if case.find("failure") is not None:
                summary.failures += 1
                summary.failed_tests.append(name)
            elif case.find("error") is not None:
                summary.errors += 1
                summary.failed_tests.append(name)
            elif case.find("skipped") is not None:
                summary.skipped += 1
    if summary.failures or summary.errors:
        summary.status = "FAILED"
    return summary


# ---------------------------------------------------------------------------------------------
# One build at a time per project, and build numbers


def _read_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return f"build {holder['id']} (#{holder['number']}, pid {holder['pid']}, started {holder['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another build"


@contextmanager
def project_lock(
    project_dir: Path, *, wait: bool, on_wait: Callable[[str], None] | None = None
) -> Iterator[IO[str]]:
    """Hold the project's build lock (fcntl.flock); refuse, or wait, while another build holds it."""
    project_dir.mkdir(parents=True, exist_ok=True)
    path = project_dir / "lock"
    path.touch(exist_ok=True)
    handle = path.open("r+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(path)
            if not wait:
                raise BuildRefused(
                    f"build refused: {holder} of project {project_dir.name} is still running "
                    "(one build at a time; pass --wait to queue behind it)"
                ) from None
            if on_wait is not None:
                on_wait(f"waiting for {holder} of project {project_dir.name} to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield handle
    finally:
        handle.close()


def record_holder(handle: IO[str], holder: Mapping[str, Any]) -> None:
    """Write who holds the lock into the lock file, for the message a refused build prints."""
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(holder))
    handle.flush()


def next_build_number(project_dir: Path) -> int:
    """Increment the project's persisted build number (call with the project lock held)."""
    path = project_dir / "build-number"
    try:
        number = int(path.read_text(encoding="utf-8").strip()) + 1
    except (OSError, ValueError):
        number = 1
    path.write_text(f"{number}\n", encoding="utf-8")
    return number


# ---------------------------------------------------------------------------------------------
# The build


@dataclass
class Webhook:
    """What a webhook-started build knows about the event (CODEBUILD_WEBHOOK_*)."""

    head_ref: str
    event: str = "PUSH"
    base_ref: str = ""
    prev_commit: str = ""
    actor_account_id: str = ""

    @property
    def trigger(self) -> str:
        for prefix, kind in (("refs/heads/", "branch"), ("refs/tags/", "tag")):
            if self.head_ref.startswith(prefix):
                return f"{kind}/{self.head_ref[len(prefix) :]}"
        return self.head_ref


@dataclass
class BuildRequest:
    buildspec: Path = Path("buildspec.yml")
    source_dir: Path = Path()
    project: Project = field(default_factory=Project)
    env_overrides: dict[str, str] = field(default_factory=dict)
    source_version: str | None = None
    resolved_source_version: str | None = None
    source_repo_url: str | None = None
    webhook: Webhook | None = None
    initiator: str | None = None
    builds_dir: Path = BUILDS_DIR
    timeout_seconds: float | None = None
    wait_for_lock: bool = False
    base_environment: Mapping[str, str] | None = None
    echo: TextIO | None = None


@dataclass
class PhaseResult:
    phase_type: str
    status: str = "SKIPPED"
    duration_seconds: float = 0.0
    status_code: str = ""
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "phaseType": self.phase_type,
            "phaseStatus": self.status,
            "durationInSeconds": round(self.duration_seconds, 3),
            "contexts": [{"statusCode": self.status_code, "message": self.message}] if self.message else [],
        }


@dataclass
class BuildResult:
    build_id: str
    build_number: int
    project: str
    status: str = "IN_PROGRESS"
    phases: list[PhaseResult] = field(default_factory=list)
    exported_variables: dict[str, str | None] = field(default_factory=dict)
    reports: list[ReportSummary] = field(default_factory=list)
    cache_paths: tuple[str, ...] = ()
    artifact_files: list[str] = field(default_factory=list)
    log_file: Path | None = None
    start_time: float = 0.0
    end_time: float = 0.0
    environment: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    def to_dict(self, masker: Masker | None = None) -> dict[str, Any]:
        mask = masker or (lambda text: text)
        region = self.environment.get("AWS_REGION", DEFAULT_REGION)
        return {
            "id": self.build_id,
            "arn": self.environment.get("CODEBUILD_BUILD_ARN", ""),
            "buildNumber": self.build_number,
            "projectName": self.project,
            "buildStatus": self.status,
            "startTime": datetime.fromtimestamp(self.start_time, UTC).isoformat(),
            "endTime": datetime.fromtimestamp(self.end_time, UTC).isoformat(),
            "durationInSeconds": round(self.end_time - self.start_time, 3),
            "region": region,
            "sourceVersion": self.environment.get("CODEBUILD_SOURCE_VERSION", ""),
            "resolvedSourceVersion": self.environment.get("CODEBUILD_RESOLVED_SOURCE_VERSION", ""),
            "initiator": self.environment.get("CODEBUILD_INITIATOR", ""),
            "sourceDirectory": self.environment.get("CODEBUILD_SRC_DIR", ""),
            "webhookTrigger": self.environment.get("CODEBUILD_WEBHOOK_TRIGGER", ""),
            "phases": [phase.to_dict() for phase in self.phases],
            "exportedEnvironmentVariables": [
                {"name": name, "value": None if value is None else mask(value)}
                for name, value in self.exported_variables.items()
            ],
            "reports": [report.to_dict() for report in self.reports],
            "cache": {"paths": list(self.cache_paths), "note": "not cached by the local runner"},
            "artifacts": {"files": self.artifact_files, "note": "not uploaded by the local runner"},
            "logFile": str(self.log_file) if self.log_file else "",
            "notes": [mask(note) for note in self.notes],
            "error": mask(self.error),
        }


def without_caller_ssh(environment: Mapping[str, str]) -> dict[str, str]:
    """A copy of the environment without the caller's SSH material: a CodeBuild container starts with
    no agent, no deploy key and no known_hosts of an operator's, so a local build must not have
    them either, or a deploy stage that failed to load its own would still reach the hosts."""
    return {name: value for name, value in environment.items() if name not in CALLER_SSH_VARIABLES}


def without_git_hook_variables(environment: Mapping[str, str]) -> dict[str, str]:
    """A copy of the environment without the variables git sets for hooks."""
    return {
        name: value
        for name, value in environment.items()
        if name not in GIT_HOOK_VARIABLES and not name.startswith("GIT_PUSH_OPTION")
    }


def _resolve_source_version(source_dir: Path) -> str:
    result = subprocess.run(
        ["git", "-C", str(source_dir), "rev-parse", "--verify", "--quiet", "HEAD"],
        capture_output=True,
        text=True,
        env=without_git_hook_variables(os.environ),
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def _source_repo_url(source_dir: Path) -> str:
    result = subprocess.run(
        ["git", "-C", str(source_dir), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
        env=without_git_hook_variables(os.environ),
        check=False,
    )
    return result.stdout.strip() or source_dir.resolve().as_uri()


def _region(request: BuildRequest, base: Mapping[str, str]) -> str:
    return (
        request.env_overrides.get("AWS_REGION")
        or base.get("AWS_REGION")
        or base.get("AWS_DEFAULT_REGION")
        or DEFAULT_REGION
    )


class _Runner:
    def __init__(self, request: BuildRequest, spec: Buildspec, result: BuildResult, log: BuildLog) -> None:
        self.request = request
        self.spec = spec
        self.result = result
        self.log = log
        self.succeeding = True
        self.deadline = (
            None if request.timeout_seconds is None else time.monotonic() + request.timeout_seconds
        )

    def run_phases(self, shell: BuildShell) -> None:
        self.result.phases = [PhaseResult(name.upper()) for name in PHASE_NAMES]
        stop = False
        for phase_result, name in zip(self.result.phases, PHASE_NAMES, strict=True):
            if stop:
                self.log.container(f"Skipping phase {phase_result.phase_type}")
                continue
            phase = self.spec.phase(name)
            started = time.monotonic()
            self.log.container(f"Entering phase {phase_result.phase_type}")
            try:
                failed, timed_out = self._run_phase(shell, phase, phase_result)
            except KeyboardInterrupt:
                phase_result.status = "STOPPED"
                phase_result.duration_seconds = time.monotonic() - started
                raise
            phase_result.duration_seconds = time.monotonic() - started
            phase_result.status = "TIMED_OUT" if timed_out else "FAILED" if failed else "SUCCEEDED"
            self.log.container(f"Phase complete: {phase_result.phase_type} State: {phase_result.status}")
            self.log.container(
                f"Phase context status code: {phase_result.status_code} Message: {phase_result.message}"
            )
            if timed_out:
                self.result.status = "TIMED_OUT"
                stop = True
            elif failed:
                self.succeeding = False
                stop = self._stops_after_failure(name, phase.on_failure if phase else None)

    def _run_phase(
        self, shell: BuildShell, phase: Phase | None, phase_result: PhaseResult
    ) -> tuple[bool, bool]:
        """Run a phase's commands, then its `finally` block; (failed, timed out)."""
        if phase is None:
            return False, False
        self._note_ignored(phase)
        failed, timed_out = self._run_commands(shell, phase.commands, phase_result)
        if phase.finally_commands and not timed_out:
            finally_failed, timed_out = self._run_commands(shell, phase.finally_commands, phase_result)
            failed = failed or finally_failed
        return failed, timed_out

    @staticmethod
    def _stops_after_failure(name: str, on_failure: str | None) -> bool:
        if on_failure == "CONTINUE":
            return False
        if on_failure == "ABORT":
            return True
        # CodeBuild's phase transitions: a failed install or pre_build goes straight to the end,
        # a failed build still runs post_build.
        return name != "build"

    def _note_ignored(self, phase: Phase) -> None:
        if phase.runtime_versions:
            wanted = ", ".join(f"{runtime} {version}" for runtime, version in phase.runtime_versions.items())
            self.log.container(
                f"runtime-versions not installed locally ({wanted}): the host's tools are used"
            )
        if phase.run_as:
            self.log.container(f"run-as {phase.run_as} ignored: commands run as {getpass.getuser()}")

    def _run_commands(
        self, shell: BuildShell, commands: Sequence[str], phase_result: PhaseResult
    ) -> tuple[bool, bool]:
        """Run commands until one fails; (failed, timed out)."""
        for command in commands:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                phase_result.status_code, phase_result.message = "BUILD_TIMED_OUT", "Build has timed out."
                return False, True
            self.log.container(f"Running command {command.rstrip()}")
            exports = {"CODEBUILD_BUILD_SUCCEEDING": "1" if self.succeeding else "0"}
            outcome = shell.run(command, exports, self.deadline)
            if outcome.error:
                self.log.container(outcome.error)
            if outcome.timed_out:
                phase_result.status_code = "BUILD_TIMED_OUT"
                phase_result.message = f"Build has timed out while running: {command.strip()}"
                self.log.container(phase_result.message)
                return False, True
            if outcome.exit_code != 0:
                text = command.strip()
                self.log.container(
                    f"Command did not exit successfully {text} exit status {outcome.exit_code}"
                )
                if not phase_result.message:
                    # The first failure of the phase is its context, as CodeBuild shows it.
                    phase_result.status_code = "COMMAND_EXECUTION_ERROR"
                    reason = f"exit status {outcome.exit_code}"
                    phase_result.message = f"Error while executing command: {text}. Reason: {reason}"
                # CODEBUILD_BUILD_SUCCEEDING is 0 from the next command on, `finally` included.
                self.succeeding = False
                return True, False
        return False, False


def _build_image_tools(path: str) -> Path | None:
    """A directory to put first on the build's PATH, holding the docker client to use, or None.

    CodeBuild's images carry a docker client that builds with BuildKit. Where the first `docker`
    on this machine's PATH cannot (PLATFORM.md: a newer client without the buildx plugin), the
    build gets the client the project's tooling uses (deploykit.system.DOCKER) instead.
    """
    first = shutil.which("docker", path=path)
    if first is None or shutil.which(DOCKER) is None or Path(first).resolve() == Path(DOCKER).resolve():
        return None
    tools = CACHE / "build-tools"
    tools.mkdir(parents=True, exist_ok=True)
    link = tools / "docker"
    if not link.is_symlink() or os.readlink(link) != DOCKER:
        link.unlink(missing_ok=True)
        link.symlink_to(DOCKER)
    return tools


def _initial_environment(
    request: BuildRequest, spec: Buildspec, result: BuildResult, masker: Masker
) -> dict[str, str]:
    caller = request.base_environment if request.base_environment is not None else os.environ
    base = without_caller_ssh(caller)
    region = _region(request, base)
    environment = dict(base)
    # Lowest to highest precedence: buildspec, project definition, start-build overrides.
    environment.update(spec.env.variables)
    for values in (
        fetch_parameters(spec.env.parameter_store, region),
        fetch_secrets(spec.env.secrets_manager, region),
    ):
        for value in values.values():
            masker.add(value)
        environment.update(values)
    project_vars = request.project.environment_variables
    plain = {item["name"]: item["value"] for item in project_vars if item["type"] == "PLAINTEXT"}
    stored = fetch_parameters(
        {i["name"]: i["value"] for i in project_vars if i["type"] == "PARAMETER_STORE"}, region
    )
    secret = fetch_secrets(
        {i["name"]: i["value"] for i in project_vars if i["type"] == "SECRETS_MANAGER"}, region
    )
    for value in (*stored.values(), *secret.values()):
        masker.add(value)
    for item in project_vars:
        name = item["name"]
        environment[name] = plain.get(name, stored.get(name, secret.get(name, "")))
    environment.update(request.env_overrides)

    src_dir = request.source_dir.resolve()
    resolved = (
        request.resolved_source_version or _resolve_source_version(src_dir) or request.source_version or ""
    )
    account = base.get("AWS_ACCOUNT_ID", DEFAULT_ACCOUNT_ID)
    codebuild = {
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "CODEBUILD_BUILD_ID": result.build_id,
        "CODEBUILD_BUILD_ARN": f"arn:aws:codebuild:{region}:{account}:build/{result.build_id}",
        "CODEBUILD_PROJECT_ARN": f"arn:aws:codebuild:{region}:{account}:project/{request.project.name}",
        "CODEBUILD_BUILD_NUMBER": str(result.build_number),
        "CODEBUILD_BUILD_SUCCEEDING": "1",
        "CODEBUILD_BUILD_IMAGE": LOCAL_IMAGE,
        "CODEBUILD_CI": "true",
        "CODEBUILD_INITIATOR": request.initiator or getpass.getuser(),
        "CODEBUILD_LOG_PATH": str(result.log_file or ""),
        "CODEBUILD_RESOLVED_SOURCE_VERSION": resolved,
        "CODEBUILD_SOURCE_VERSION": request.source_version or resolved,
        "CODEBUILD_SOURCE_REPO_URL": request.source_repo_url or _source_repo_url(src_dir),
        "CODEBUILD_SRC_DIR": str(src_dir),
        "CODEBUILD_START_TIME": str(int(result.start_time * 1000)),
    }
    if request.webhook is not None:
        hook = request.webhook
        codebuild |= {
            "CODEBUILD_WEBHOOK_EVENT": hook.event,
            "CODEBUILD_WEBHOOK_HEAD_REF": hook.head_ref,
            "CODEBUILD_WEBHOOK_BASE_REF": hook.base_ref,
            "CODEBUILD_WEBHOOK_TRIGGER": hook.trigger,
            "CODEBUILD_WEBHOOK_PREV_COMMIT": hook.prev_commit,
            "CODEBUILD_WEBHOOK_ACTOR_ACCOUNT_ID": hook.actor_account_id,
        }
    else:
        # Not started by a webhook: none of the webhook variables may leak in from the caller.
        for name in [name for name in environment if name.startswith("CODEBUILD_WEBHOOK_")]:
            del environment[name]
    environment.update(codebuild)
    tools = _build_image_tools(environment.get("PATH", os.defpath))
    if tools is not None:
        environment["PATH"] = f"{tools}{os.pathsep}{environment.get('PATH', os.defpath)}"
    return environment


def _notes(spec: Buildspec) -> list[str]:
    notes = []
    if spec.cache_paths:
        notes.append("cache.paths accepted, not cached locally: " + ", ".join(spec.cache_paths))
    if spec.run_as:
        notes.append(f"run-as {spec.run_as} ignored: commands run as {getpass.getuser()}")
    if spec.env.git_credential_helper:
        notes.append("git-credential-helper ignored: the host's git credentials are used")
    notes += [f"{key} accepted and ignored by the local runner" for key in spec.ignored_keys]
    return notes


def run_build(request: BuildRequest) -> BuildResult:
    """Run one build; raise BuildspecError before anything runs, BuildRefused if another build runs."""
    buildspec_path = (
        request.buildspec if request.buildspec.is_absolute() else request.source_dir / request.buildspec
    )
    spec = load_buildspec(buildspec_path)
    if spec.env.shell != "bash":
        raise BuildspecError(
            str(buildspec_path),
            [f"env.shell: {spec.env.shell} is valid for CodeBuild, but the local runner runs bash only"],
        )
    masker = Masker()
    log = BuildLog(masker, request.echo)
    project_dir = request.builds_dir / request.project.name
    with project_lock(project_dir, wait=request.wait_for_lock, on_wait=log.container) as lock:
        number = next_build_number(project_dir)
        result = BuildResult(f"{request.project.name}:{uuid.uuid4()}", number, request.project.name)
        result.start_time = time.time()
        result.log_file = project_dir / f"{number}.log"
        result.cache_paths = spec.cache_paths
        record_holder(
            lock,
            {
                "id": result.build_id,
                "number": number,
                "pid": os.getpid(),
                "started": datetime.fromtimestamp(result.start_time, UTC).isoformat(timespec="seconds"),
            },
        )
        log.open(result.log_file)
        try:
            _run(request, spec, result, masker, log)
        except KeyboardInterrupt:
            result.status, result.error = "STOPPED", "stopped by the user"
            _finish(result, log)
            raise
        except Exception as error:
            # A fault of the runner, not of the build: say so, keep the traceback in the log.
            result.status, result.error = "FAULT", f"local runner fault: {error!r}"
            log.output(traceback.format_exc())
            _finish(result, log)
        finally:
            result.end_time = time.time()
            _write_summary(result, masker, project_dir / f"{number}.json")
            log.close()
            record_holder(lock, {})
    return result


def _run(request: BuildRequest, spec: Buildspec, result: BuildResult, masker: Masker, log: BuildLog) -> None:
    log.container(
        f"Build {result.build_id} (#{result.build_number}) on the local runner, not in a CodeBuild image"
    )
    log.container("Processing environment variables")
    result.notes = _notes(spec)
    for note in result.notes:
        log.container(note)
    try:
        environment = _initial_environment(request, spec, result, masker)
    except VariableFetchError as error:
        result.error = str(error)
        result.status = "FAILED"
        result.phases = [PhaseResult(name.upper()) for name in PHASE_NAMES]
        log.container(f"Phase context status code: Decrypted Variables Error Message: {error}")
        _finish(result, log)
        return
    result.environment = {name: value for name, value in environment.items() if name.startswith("CODEBUILD_")}
    result.environment |= {"AWS_REGION": environment["AWS_REGION"]}
    with tempfile.TemporaryDirectory(prefix="deploykit-shell-") as workdir:
        shell = BuildShell(Path(workdir), environment, request.source_dir.resolve(), log)
        runner = _Runner(request, spec, result, log)
        runner.run_phases(shell)
        if result.status != "TIMED_OUT":
            result.status = "SUCCEEDED" if runner.succeeding else "FAILED"
        _export_variables(spec, shell, result, log)
    src_dir = request.source_dir.resolve()
    for group in spec.reports:
        report = summarise_report(group, src_dir, request.project.name)
        result.reports.append(report)
        log.container(f"Report {report.line()}")
    if spec.artifacts is not None:
        base = src_dir / spec.artifacts.base_directory if spec.artifacts.base_directory else src_dir
        result.artifact_files = [
            str(path.relative_to(base)) for path in _glob_files(base, spec.artifacts.files)
        ]
    _finish(result, log)


def _export_variables(spec: Buildspec, shell: BuildShell, result: BuildResult, log: BuildLog) -> None:
    # CodeBuild does not export variables whose names start with AWS_.
    names = [name for name in spec.env.exported_variables if not name.startswith("AWS_")]
    for name in spec.env.exported_variables:
        if name.startswith("AWS_"):
            log.container(f"exported-variables: {name} not exported (AWS_ variables cannot be exported)")
    result.exported_variables = shell.read_variables(names)


def _finish(result: BuildResult, log: BuildLog) -> None:
    result.end_time = time.time()
    log.output("")
    log.output(f"Build {result.build_id} (#{result.build_number}) of project {result.project}")
    if result.error:
        log.output(f"  error: {result.error}")
    for phase in result.phases:
        log.output(f"  {phase.phase_type:<11} {phase.status:<10} {phase.duration_seconds:8.2f}s")
    for report in result.reports:
        log.output(f"  report {report.line()}")
    for name, value in result.exported_variables.items():
        log.output(f"  exported {name}={'(not set)' if value is None else value}")
    if result.cache_paths:
        log.output("  cache (not cached locally): " + ", ".join(result.cache_paths))
    log.output(f"  log: {result.log_file}")
    log.output(f"BUILD {result.status}")


def _write_summary(result: BuildResult, masker: Masker, path: Path) -> None:
    path.write_text(json.dumps(result.to_dict(masker), indent=2) + "\n", encoding="utf-8")


def build_summaries(project: str, builds_dir: Path = BUILDS_DIR) -> list[Path]:
    """The summary files of `project`'s builds (<builds_dir>/<project>/<number>.json), oldest first."""
    return sorted((builds_dir / project).glob("*.json"), key=lambda path: int(path.stem))


# ---------------------------------------------------------------------------------------------
# CLI


def stop_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C: the running command is stopped and the build ends STOPPED."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def parse_override(text: str) -> tuple[str, str]:
    """`NAME=VALUE` from the command line, as an environment override (argparse type)."""
    name, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    if name.startswith("CODEBUILD_"):
        raise argparse.ArgumentTypeError(f"{name}: the CODEBUILD_ prefix is reserved for CodeBuild")
    return name, value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploykit.codebuild", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a build of the buildspec")
    run.add_argument("--buildspec", type=Path, default=Path("buildspec.yml"), help="relative to --source-dir")
    run.add_argument("--source-dir", type=Path, default=Path(), help="CODEBUILD_SRC_DIR (default: .)")
    run.add_argument("--project-vars", type=Path, default=PROJECT_VARS, help="CodeBuild project definition")
    run.add_argument("--project", help="project name (default: codebuild_project_name)")
    run.add_argument(
        "--env-override", type=parse_override, action="append", default=[], metavar="K=V",
        help="start-build environment override (highest precedence); repeatable",
    )  # fmt: skip
    run.add_argument("--source-version", help="CODEBUILD_SOURCE_VERSION (default: the resolved commit)")
    run.add_argument("--source-repo-url", help="CODEBUILD_SOURCE_REPO_URL (default: remote.origin.url)")
    run.add_argument(
        "--webhook-head-ref", help="make it a webhook build for this ref (refs/heads/x, refs/tags/y)"
    )
    run.add_argument("--webhook-event", default="PUSH")
    run.add_argument("--webhook-base-ref", default="")
    run.add_argument("--webhook-prev-commit", default="")
    run.add_argument("--webhook-actor-account-id", default="")
    run.add_argument("--initiator", help="CODEBUILD_INITIATOR (default: the user's name)")
    run.add_argument(
        "--builds-dir", type=Path, default=BUILDS_DIR, help="logs, summaries, build numbers, lock"
    )
    run.add_argument(
        "--timeout-minutes", type=float, help="build timeout (default: codebuild_timeout_in_minutes)"
    )
    run.add_argument(
        "--wait", action="store_true", help="queue behind a running build instead of being refused"
    )
    run.add_argument("--summary-json", type=Path, help="also write the build summary (JSON) here")
    validate = commands.add_parser("validate", help="validate a buildspec without running it")
    validate.add_argument("buildspec", type=Path, nargs="?", default=Path("buildspec.yml"))
    commands.add_parser("deviations", help="list what the local runner does differently from CodeBuild")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    stop_on_sigterm()
    if args.command == "deviations":
        print("\n".join(f"- {item}" for item in DEVIATIONS))
        return 0
    try:
        if args.command == "validate":
            spec = load_buildspec(args.buildspec)
            print(f"{args.buildspec}: valid buildspec {spec.version} (phases: {', '.join(spec.phases)})")
            return 0
        project = load_project(args.project_vars)
        if args.project:
            project = dataclasses.replace(project, name=args.project)
        timeout = args.timeout_minutes if args.timeout_minutes is not None else project.timeout_minutes
        request = BuildRequest(
            buildspec=args.buildspec,
            source_dir=args.source_dir,
            project=project,
            env_overrides=dict(args.env_override),
            source_version=args.source_version,
            source_repo_url=args.source_repo_url,
            webhook=(
                Webhook(
                    args.webhook_head_ref,
                    args.webhook_event,
                    args.webhook_base_ref,
                    args.webhook_prev_commit,
                    args.webhook_actor_account_id,
                )
                if args.webhook_head_ref
                else None
            ),
            initiator=args.initiator,
            builds_dir=args.builds_dir,
            timeout_seconds=timeout * 60,
            wait_for_lock=args.wait,
            echo=sys.stdout,
        )
        result = run_build(request)
    except BuildspecError as error:
        print(f"deploykit: error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except BuildRefused as error:
        print(f"deploykit: {error}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return EXIT_STOPPED
    if args.summary_json:
        summary = (args.builds_dir / result.project / f"{result.build_number}.json").read_text(
            encoding="utf-8"
        )
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(summary, encoding="utf-8")
    return 0 if result.succeeded else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
