"""Load a CodeBuild buildspec (version 0.2) and validate it into typed objects before anything runs.

Every problem is reported with the path of the offending key (`phases.build.commands[2]: expected a
string`), all problems at once, so a broken buildspec is refused without running a single command.
The accepted keys and values follow CodeBuild's buildspec reference.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PHASE_NAMES = ("install", "pre_build", "build", "post_build")
TOP_LEVEL_KEYS = ("version", "run-as", "env", "proxy", "batch", "phases", "reports", "artifacts", "cache")
ENV_KEYS = (
    "shell",
    "variables",
    "parameter-store",
    "exported-variables",
    "secrets-manager",
    "git-credential-helper",
)
PHASE_KEYS = ("run-as", "on-failure", "runtime-versions", "commands", "finally")
ON_FAILURE_VALUES = ("ABORT", "CONTINUE")
# Linux and Windows shell tags from the reference; the local runner itself runs only bash.
SHELLS = ("bash", "/bin/sh", "powershell.exe", "cmd.exe")
REPORT_KEYS = ("files", "base-directory", "discard-paths", "file-format")
REPORT_FORMATS = (
    "CUCUMBERJSON",
    "JUNITXML",
    "NUNITXML",
    "NUNIT3XML",
    "TESTNGXML",
    "VISUALSTUDIOTRX",
    "CLOVERXML",
    "COBERTURAXML",
    "JACOCOXML",
    "SIMPLECOV",
)
ARTIFACT_KEYS = (
    "files",
    "name",
    "discard-paths",
    "base-directory",
    "exclude-paths",
    "enable-symlinks",
    "s3-prefix",
    "secondary-artifacts",
)
YES_NO = ("yes", "no")
RESERVED_PREFIX = "CODEBUILD_"
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class BuildspecError(Exception):
    """The buildspec is refused; `problems` lists each one as `path: what is wrong`."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"{source} is not a valid buildspec ({len(problems)} problem(s)):\n{listing}")


@dataclass(frozen=True)
class Env:
    shell: str = "bash"
    variables: dict[str, str] = field(default_factory=dict)
    parameter_store: dict[str, str] = field(default_factory=dict)
    secrets_manager: dict[str, str] = field(default_factory=dict)
    exported_variables: tuple[str, ...] = ()
    git_credential_helper: bool = False


@dataclass(frozen=True)
class Phase:
    name: str
    commands: tuple[str, ...] = ()
    finally_commands: tuple[str, ...] = ()
    # None means "not given": the failure then follows CodeBuild's phase transitions.
    on_failure: str | None = None
    run_as: str | None = None
    runtime_versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportGroup:
    name: str
    files: tuple[str, ...]
    base_directory: str | None = None
    discard_paths: bool = False
    file_format: str = "JUNITXML"


@dataclass(frozen=True)
class Artifacts:
    files: tuple[str, ...]
    base_directory: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Buildspec:
    version: str
    env: Env
    phases: dict[str, Phase]
    reports: tuple[ReportGroup, ...] = ()
    artifacts: Artifacts | None = None
    cache_paths: tuple[str, ...] = ()
    run_as: str | None = None
    ignored_keys: tuple[str, ...] = ()

    def phase(self, name: str) -> Phase | None:
        return self.phases.get(name)


class _StringLoader(yaml.SafeLoader):
    """SafeLoader that keeps every scalar a string (nulls stay None).

    CodeBuild hands commands and variable values to the shell as text: `PORT: 08` must stay "08", not
    become 8, and `version: 0.2` is compared as written.
    """


_StringLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag.endswith((":null", ":merge"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value!r}"


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(path or "(top level)", f"expected a mapping, got {_describe(value)}")
            return {}
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                self.fail(path, f"key {key!r} is not a string")
                continue
            if allowed is not None and key not in allowed:
                self.fail(f"{path}.{key}" if path else key, f"unknown key (allowed: {', '.join(allowed)})")
                continue
            result[key] = item
        return result

    def string(self, value: Any, path: str) -> str | None:
        if isinstance(value, str):
            return value
        hint = " (quote commands that contain ': ')" if isinstance(value, Mapping) else ""
        self.fail(path, f"expected a string, got {_describe(value)}{hint}")
        return None

    def strings(self, value: Any, path: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            self.fail(path, f"expected a list of strings, got {_describe(value)}")
            return ()
        checked = [self.string(item, f"{path}[{index}]") for index, item in enumerate(value)]
        return tuple(item for item in checked if item is not None)

    def choice(
        self, value: Any, path: str, allowed: tuple[str, ...], *, fold_case: bool = False
    ) -> str | None:
        text = self.string(value, path)
        if text is None:
            return None
        candidate = text.upper() if fold_case else text
        if candidate not in allowed:
            self.fail(path, f"expected one of {', '.join(allowed)}, got {text!r}")
            return None
        return candidate

    def variables(self, value: Any, path: str) -> dict[str, str]:
        result = {}
        for name, item in self.mapping(value, path).items():
            if not _VARIABLE_NAME.match(name):
                self.fail(f"{path}.{name}", "not a valid environment variable name")
                continue
            if name.startswith(RESERVED_PREFIX):
                self.fail(f"{path}.{name}", f"the {RESERVED_PREFIX} prefix is reserved for CodeBuild")
                continue
            text = self.string(item, f"{path}.{name}")
            if text is not None:
                result[name] = text
        return result


def _check_version(checker: _Checker, raw: Any) -> str:
    if raw is None:
        checker.fail("version", "required (use 0.2)")
        return ""
    text = checker.string(raw, "version")
    if text is None:
        return ""
    if text.strip() == "0.1":
        checker.fail("version", "0.1 runs every command in its own shell; the local runner supports 0.2 only")
    elif text.strip() not in ("0.2", "0.20"):
        checker.fail("version", f"expected 0.2, got {text!r}")
    return text.strip()


def _check_env(checker: _Checker, raw: Any) -> Env:
    if raw is None:
        return Env()
    env = checker.mapping(raw, "env", ENV_KEYS)
    shell = "bash"
    if "shell" in env:
        shell = checker.choice(env["shell"], "env.shell", SHELLS) or "bash"
    exported: tuple[str, ...] = ()
    if "exported-variables" in env:
        exported = checker.strings(env["exported-variables"], "env.exported-variables")
        for index, name in enumerate(exported):
            if not _VARIABLE_NAME.match(name):
                checker.fail(f"env.exported-variables[{index}]", f"{name!r} is not a valid variable name")
    helper = False
    if "git-credential-helper" in env:
        helper = checker.choice(env["git-credential-helper"], "env.git-credential-helper", YES_NO) == "yes"
    return Env(
        shell=shell,
        variables=checker.variables(env["variables"], "env.variables") if "variables" in env else {},
        parameter_store=(
            checker.variables(env["parameter-store"], "env.parameter-store")
            if "parameter-store" in env
            else {}
        ),
        secrets_manager=(
            checker.variables(env["secrets-manager"], "env.secrets-manager")
            if "secrets-manager" in env
            else {}
        ),
        exported_variables=exported,
        git_credential_helper=helper,
    )


def _check_phase(checker: _Checker, name: str, raw: Any) -> Phase | None:
    path = f"phases.{name}"
    if raw is None:
        checker.fail(path, "expected a mapping with `commands`, got nothing (null)")
        return None
    allowed = (
        PHASE_KEYS if name == "install" else tuple(key for key in PHASE_KEYS if key != "runtime-versions")
    )
    phase = checker.mapping(raw, path, allowed)
    if not phase and not isinstance(raw, Mapping):
        return None
    runtimes: dict[str, str] = {}
    if "runtime-versions" in phase:
        for runtime, version in checker.mapping(
            phase["runtime-versions"], f"{path}.runtime-versions"
        ).items():
            text = checker.string(version, f"{path}.runtime-versions.{runtime}")
            if text is not None:
                runtimes[runtime] = text
    # The reference makes `commands` required in every phase but install, where runtime-versions
    # alone is a valid phase.
    if "commands" not in phase and not (name == "install" and "runtime-versions" in phase):
        checker.fail(f"{path}.commands", "required: a list of commands")
    on_failure = None
    if "on-failure" in phase:
        on_failure = checker.choice(phase["on-failure"], f"{path}.on-failure", ON_FAILURE_VALUES)
    run_as = checker.string(phase["run-as"], f"{path}.run-as") if "run-as" in phase else None
    return Phase(
        name=name,
        commands=checker.strings(phase["commands"], f"{path}.commands") if "commands" in phase else (),
        finally_commands=checker.strings(phase["finally"], f"{path}.finally") if "finally" in phase else (),
        on_failure=on_failure,
        run_as=run_as,
        runtime_versions=runtimes,
    )


def _check_reports(checker: _Checker, raw: Any) -> tuple[ReportGroup, ...]:
    groups = []
    for name, value in checker.mapping(raw, "reports").items():
        path = f"reports.{name}"
        group = checker.mapping(value, path, REPORT_KEYS)
        if "files" not in group:
            checker.fail(f"{path}.files", "required: a list of file paths or globs")
        base = (
            checker.string(group["base-directory"], f"{path}.base-directory")
            if "base-directory" in group
            else None
        )
        discard = False
        if "discard-paths" in group:
            discard = checker.choice(group["discard-paths"], f"{path}.discard-paths", YES_NO) == "yes"
        file_format = "JUNITXML"
        if "file-format" in group:
            file_format = (
                checker.choice(group["file-format"], f"{path}.file-format", REPORT_FORMATS, fold_case=True)
                or ""
            )
        groups.append(
            ReportGroup(
                name=name,
                files=checker.strings(group["files"], f"{path}.files") if "files" in group else (),
                base_directory=base,
                discard_paths=discard,
                file_format=file_format,
            )
        )
    return tuple(groups)


def _check_artifacts(checker: _Checker, raw: Any) -> Artifacts | None:
    artifacts = checker.mapping(raw, "artifacts", ARTIFACT_KEYS)
    if not artifacts:
        return None
    if "files" not in artifacts:
        checker.fail("artifacts.files", "required: a list of file paths or globs")
    for key in ("discard-paths", "enable-symlinks"):
        if key in artifacts:
            checker.choice(artifacts[key], f"artifacts.{key}", YES_NO)
    if "exclude-paths" in artifacts:
        checker.strings(artifacts["exclude-paths"], "artifacts.exclude-paths")
    if "secondary-artifacts" in artifacts:
        for identifier, value in checker.mapping(
            artifacts["secondary-artifacts"], "artifacts.secondary-artifacts"
        ).items():
            secondary = checker.mapping(value, f"artifacts.secondary-artifacts.{identifier}", ARTIFACT_KEYS)
            if "files" in secondary:
                checker.strings(secondary["files"], f"artifacts.secondary-artifacts.{identifier}.files")
    return Artifacts(
        files=checker.strings(artifacts["files"], "artifacts.files") if "files" in artifacts else (),
        base_directory=(
            checker.string(artifacts["base-directory"], "artifacts.base-directory")
            if "base-directory" in artifacts
            else None
        ),
        name=checker.string(artifacts["name"], "artifacts.name") if "name" in artifacts else None,
    )


def parse_buildspec(document: Any, source: str = "buildspec") -> Buildspec:
    """Validate an already loaded buildspec document; raise BuildspecError listing every problem."""
    checker = _Checker()
    top = checker.mapping(document, "", TOP_LEVEL_KEYS)
    if not isinstance(document, Mapping):
        raise BuildspecError(source, checker.problems)
    version = _check_version(checker, top.get("version"))
    env = _check_env(checker, top.get("env"))
    phases: dict[str, Phase] = {}
    if "phases" not in top:
        checker.fail("phases", "required: at least one of " + ", ".join(PHASE_NAMES))
    else:
        for name, raw in checker.mapping(top["phases"], "phases").items():
            if name not in PHASE_NAMES:
                checker.fail(f"phases.{name}", f"unknown phase (allowed: {', '.join(PHASE_NAMES)})")
                continue
            phase = _check_phase(checker, name, raw)
            if phase is not None:
                phases[name] = phase
    reports = _check_reports(checker, top["reports"]) if "reports" in top else ()
    artifacts = _check_artifacts(checker, top["artifacts"]) if "artifacts" in top else None
    cache_paths: tuple[str, ...] = ()
    if "cache" in top:
        cache = checker.mapping(top["cache"], "cache", ("paths", "key", "fallback-keys", "action"))
        if "paths" in cache:
            cache_paths = checker.strings(cache["paths"], "cache.paths")
    run_as = checker.string(top["run-as"], "run-as") if "run-as" in top else None
    for key in ("proxy", "batch"):
        if key in top:
            checker.mapping(top[key], key)
    if checker.problems:
        raise BuildspecError(source, checker.problems)
    return Buildspec(
        version=version,
        env=env,
        phases=phases,
        reports=reports,
        artifacts=artifacts,
        cache_paths=cache_paths,
        run_as=run_as,
        ignored_keys=tuple(key for key in ("proxy", "batch") if key in top),
    )


def load_buildspec(path: Path) -> Buildspec:
    """Read and validate a buildspec file; raise BuildspecError if it is missing, not YAML or invalid."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise BuildspecError(str(path), [f"(file): cannot be read: {error.strerror}"]) from error
    return loads_buildspec(text, str(path))


def loads_buildspec(text: str, source: str = "buildspec") -> Buildspec:
    """Validate buildspec YAML given as text."""
    try:
        # _StringLoader is a SafeLoader: no arbitrary objects are built from the YAML.
        document = yaml.load(text, Loader=_StringLoader)  # noqa: S506
    except yaml.YAMLError as error:
        raise BuildspecError(source, [f"(YAML): {error}".replace("\n", " ")]) from error
    return parse_buildspec(document, source)
