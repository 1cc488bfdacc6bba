"""Lint every IAM policy document of policies/ with parliament, rendered as roles/aws_iam renders it.

Each `policies/*.json` and `policies/*.json.j2` is linted, so a document added there is linted
without being named anywhere. A template is rendered the way roles/aws_iam's tasks render it: with
the `template_vars` expression of the task that looks it up (by default `aws_iam_policy_vars`),
evaluated by Ansible's own templating over the role's defaults, playbooks/vars/codebuild.yml and
playbooks/vars/provision.yml, with a representative account, region and network; once for each
source type, since a CodeCommit source adds statements.

Two things pass besides a document with no finding, each listed with its reason in .iam-lint.yml:
a statement whose Resource is "*" (every such statement must be listed, by file and Sid), and a
parliament finding accepted by issue, file and statement. An entry that no longer matches
anything is an error too, so the list cannot outlive what it excuses.

CLI: python -m deploykit.iam_lint [--policies DIR] [--config FILE]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploykit.system import ROOT

POLICIES = ROOT / "policies"
CONFIG = ROOT / ".iam-lint.yml"
ROLE_TASKS = ROOT / "roles" / "aws_iam" / "tasks" / "main.yml"
VARS_FILES = (
    ROOT / "playbooks" / "vars" / "codebuild.yml",
    ROOT / "playbooks" / "vars" / "provision.yml",
    ROOT / "roles" / "aws_iam" / "defaults" / "main.yml",
)
# What an environment's inventory and the play's first task give (playbooks/provision.yml); the
# values only need the right shape: the documents are linted, not deployed.
REPRESENTATIVE = {
    "app_env": "production",
    "aws_region": "eu-west-1",
    "deploy_notice_topic": "deploykit-production-deploy-notices",
    "__provision_caller": {"arn": "arn:aws:iam::123456789012:user/deployer", "account": "123456789012"},
    "provision_codebuild_subnet_ids": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"],
    "playbook_dir": str(ROOT / "playbooks"),
}
# The inputs that change which statements a template holds.
SCENARIOS = {
    "GITHUB": {
        "provision_codebuild_source_type": "GITHUB",
        "provision_codebuild_source_location": "https://github.com/example/deploykit.git",
    },
    "CODECOMMIT": {
        "provision_codebuild_source_type": "CODECOMMIT",
        "provision_codebuild_source_location": "https://git-codecommit.eu-west-1.amazonaws.com/v1/repos/deploykit",
    },
}
# `lookup('ansible.builtin.template', aws_iam_policy_dir ~ '/NAME', template_vars=EXPR) | from_json`
_LOOKUP = re.compile(
    r"aws_iam_policy_dir\s*~\s*'/(?P<name>[^']+\.j2)'\s*,\s*template_vars=(?P<vars>.*?)\)\s*\|\s*from_json",
    re.DOTALL,
)
_DEFAULT_VARS = "aws_iam_policy_vars"


@dataclass(frozen=True)
class Rendering:
    """One policy document as one scenario renders it."""

    path: Path
    scenario: str
    text: str

    @property
    def name(self) -> str:
        return self.path.name

    def statements(self) -> list[dict[str, Any]]:
        statements = json.loads(self.text)["Statement"]
        return statements if isinstance(statements, list) else [statements]


@dataclass(frozen=True)
class Problem:
    """A finding nobody accepted, a wildcard nobody justified, or an entry that excuses nothing."""

    file: str
    what: str

    def __str__(self) -> str:
        return f"{self.file}: {self.what}"


def policy_files(directory: Path = POLICIES) -> list[Path]:
    return sorted({*directory.glob("*.json"), *directory.glob("*.json.j2")})


def trusted(value: Any) -> Any:
    """Variables files as Ansible holds them: templates it may render (2.19 trusts no text by default)."""
    from ansible.template import trust_as_template

    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {key: trusted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [trusted(item) for item in value]
    return value


def template_vars_expressions(tasks_file: Path = ROLE_TASKS) -> dict[str, set[str]]:
    """For each template the role looks up, the template_vars expressions its tasks render it with."""
    found: dict[str, set[str]] = {}
    for match in _LOOKUP.finditer(tasks_file.read_text()):
        found.setdefault(match["name"], set()).add(" ".join(match["vars"].split()))
    return found


def render(directory: Path = POLICIES, tasks_file: Path = ROLE_TASKS) -> list[Rendering]:
    """Every policy document of the directory, in every scenario, as the role renders it."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    loader = DataLoader()
    variables: dict[str, Any] = {}
    for path in VARS_FILES:
        variables.update(trusted(yaml.safe_load(path.read_text())))
    variables.update(REPRESENTATIVE)
    expressions = template_vars_expressions(tasks_file)
    renderings: dict[tuple[Path, str], Rendering] = {}
    for scenario, inputs in SCENARIOS.items():
        templar = Templar(loader=loader, variables={**variables, **inputs})
        for path in policy_files(directory):
            if path.suffix != ".j2":
                text = path.read_text()
                renderings.setdefault((path, text), Rendering(path, scenario, text))
                continue
            for expression in sorted(expressions.get(path.name, {_DEFAULT_VARS})):
                template_vars = templar.template(trust_as_template("{{ " + expression + " }}"))
                text = str(
                    Templar(loader=loader, variables={**variables, **inputs, **template_vars}).template(
                        trust_as_template(path.read_text())
                    )
                )
                renderings.setdefault((path, text), Rendering(path, scenario, text))
    return list(renderings.values())


def _statement_spans(text: str) -> list[tuple[int, int]]:
    """(first line, last line) of each statement of the document's Statement list, in order."""
    start = text.find('"Statement"')
    spans: list[tuple[int, int]] = []
    depth = 0
    in_string = escaped = False
    opened = 0
    for index in range(text.index("[", start), len(text)):
        char = text[index]
        if in_string:
            escaped = char == "\\" and not escaped
            in_string = not (char == '"' and not escaped)
            continue
        if char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth == 2 and char == "{":
                opened = text.count("\n", 0, index) + 1
        elif char in "]}":
            if depth == 2 and char == "}":
                spans.append((opened, text.count("\n", 0, index) + 1))
            depth -= 1
            if depth == 0:
                break
    return spans


def _sid_at(rendering: Rendering, line: int | None) -> str | None:
    if line is None:
        return None
    for (first, last), statement in zip(
        _statement_spans(rendering.text), rendering.statements(), strict=True
    ):
        if first <= line <= last:
            return statement.get("Sid")
    return None


def _wildcards(rendering: Rendering) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, statement in enumerate(rendering.statements()):
        resources = statement.get("Resource", [])
        if "*" in ([resources] if isinstance(resources, str) else resources):
            yield number, statement


def load_config(path: Path = CONFIG) -> dict[str, Any]:
    config = yaml.safe_load(path.read_text()) or {}
    for entry in config.get("accepted_findings", []):
        if not str(entry.get("reason", "")).strip():
            raise ValueError(f"{path.name}: accepted finding {entry} gives no reason")
    for file, sids in (config.get("resource_star") or {}).items():
        for sid, reason in sids.items():
            if not str(reason or "").strip():
                raise ValueError(f'{path.name}: resource_star {file} {sid} gives no reason for Resource "*"')
    return config


def unjustified_wildcards(renderings: Iterable[Rendering], config: dict[str, Any]) -> list[Problem]:
    """Statements with Resource "*" that .iam-lint.yml does not justify, and justifications of nothing."""
    justified = config.get("resource_star") or {}
    problems: list[Problem] = []
    used: set[tuple[str, str]] = set()
    seen_files = set()
    for rendering in renderings:
        seen_files.add(rendering.name)
        for number, statement in _wildcards(rendering):
            sid = statement.get("Sid")
            if sid and sid in justified.get(rendering.name, {}):
                used.add((rendering.name, sid))
                continue
            problems.append(
                Problem(
                    rendering.name,
                    f'statement {sid or f"#{number + 1} (no Sid)"} has Resource "*" and no reason for it '
                    f"under resource_star in {CONFIG.name}: scope it, or say why AWS allows nothing narrower",
                )
            )
    for file, sids in justified.items():
        for sid in sids:
            if (file, sid) not in used:
                problems.append(
                    Problem(
                        file, f'resource_star entry {sid} matches no statement with Resource "*": remove it'
                    )
                )
    return sorted(set(problems), key=str)


def _accepts(entry: dict[str, Any], rendering: Rendering, issue: str, sid: str | None, detail: str) -> bool:
    return (
        entry["issue"] == issue
        and fnmatch.fnmatch(rendering.name, entry["file"])
        and entry.get("sid", sid) == sid
        and entry.get("detail", detail) in detail
    )


def findings(renderings: Iterable[Rendering], config: dict[str, Any]) -> tuple[list[Problem], int]:
    """parliament's findings that no entry accepts, stale entries, and how many findings were accepted."""
    import parliament

    entries = config.get("accepted_findings", [])
    used: set[int] = set()
    problems: set[Problem] = set()
    accepted = 0
    for rendering in renderings:
        policy = parliament.analyze_policy_string(rendering.text, rendering.name)
        for finding in policy.findings:
            finding = parliament.enhance_finding(finding)
            location = finding.location if isinstance(finding.location, dict) else {}
            sid = _sid_at(rendering, location.get("line"))
            detail = finding.detail if isinstance(finding.detail, str) else json.dumps(finding.detail)
            matches = [
                n for n, entry in enumerate(entries) if _accepts(entry, rendering, finding.issue, sid, detail)
            ]
            if matches:
                used.update(matches)
                accepted += 1
                continue
            problems.add(
                Problem(
                    rendering.name,
                    f"{finding.severity} {finding.issue} ({finding.title.strip()}) in statement {sid or '?'} "
                    f"[{rendering.scenario} source]: {detail}",
                )
            )
    for number, entry in enumerate(entries):
        if number not in used:
            problems.add(
                Problem(entry["file"], f"accepted finding {entry['issue']} matches nothing now: remove it")
            )
    return sorted(problems, key=str), accepted


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploykit.iam_lint", description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=Path, default=POLICIES, help="the directory of policy documents")
    parser.add_argument("--config", type=Path, default=CONFIG, help="what is accepted, with the reasons")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    renderings = render(args.policies)
    problems, accepted = findings(renderings, config)
    problems += unjustified_wildcards(renderings, config)
    for problem in problems:
        print(f"iam-lint: {problem}", file=sys.stderr)
    files = len({rendering.path for rendering in renderings})
    if problems:
        print(f"iam-lint: {len(problems)} problem(s) in {files} policy documents", file=sys.stderr)
        return 1
    wildcards = sum(1 for rendering in renderings for _ in _wildcards(rendering))
    print(
        f"iam-lint: {files} policy documents ({len(renderings)} renderings), no finding; "
        f'{accepted} finding(s) and {wildcards} Resource "*" accepted with their reasons ({args.config.name})'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
