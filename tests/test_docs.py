"""The docs name real things: README.md and docs/*.md.

1. Every repository path they name exists. What counts as a repository path is kept narrow, so
   that no ordinary word is taken for one:
   - the target of a Markdown link that is not a URL or an anchor, resolved from the document's
     directory;
   - in an inline code span, or in a code block of a programming language (sh, yaml, groovy and
     the like; comments left out), a word that contains "/" and whose first segment is a top-level
     entry of the repository that git does not ignore. So `roles/app_deploy/tasks/swap.yml` is checked;
     `.cache/remote.git` and `reports/bench.json` (made at run time), `/var/lib/...`,
     `.github/workflows/deploy.yml` (a file another system would read) and `deploykit/app:v1` (an
     image) are not. `<placeholder>` and `*` stand for any name, `{a,b}` for each alternative;
   - the module of `python -m deploykit...`.
   Bare file names (`main.yml`) are not checked: without a directory they are ambiguous.
2. Every `make <target>` in code (not prose: "make sure" is not a target) is a Makefile target.
3. The commands they show that are safe to run here, quickly and without AWS, Docker or the
   stand-in, exit 0: validating the buildspec, the runner's deviations, the filter check of the
   deploy branch, `make help`, and `ansible-playbook --syntax-check` without an inventory.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Code blocks whose words may be paths and commands; prose-like blocks (text, mermaid, none) are not.
SHELL_LANGUAGES = {"sh", "bash", "shell", "console", "zsh"}
CODE_LANGUAGES = SHELL_LANGUAGES | {
    *("yaml", "yml", "groovy", "jenkinsfile", "python", "ini", "toml", "dockerfile", "make", "makefile"),
}
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.DOTALL)
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
PATH_WORD = re.compile(r"[A-Za-z0-9_.*<>{},/-]+")
PYTHON_MODULE = re.compile(r"(?<![\w/.-])(?:\S*/)?python3?\s+-m\s+([A-Za-z_][\w.]*)")
MAKE_COMMAND = re.compile(r"(?<![\w.-])make((?:\s+[^\s;&|#)`'\"]+)*)")
MAKE_TARGET = re.compile(r"[A-Za-z0-9][\w.-]*")
MAKEFILE_RULE = re.compile(r"^([A-Za-z0-9][\w.-]*(?:[ \t]+[A-Za-z0-9][\w.-]*)*)[ \t]*:(?!=)", re.MULTILINE)
COMMENT = re.compile(r"(?:^|\s)(?:#|//).*$")
PROMPT = re.compile(r"^\s*\$\s+")

# The commands the docs may show that are safe to run here: no AWS, no Docker, no stand-in, seconds.
SAFE_COMMANDS = [
    re.compile(r"(?:\S*/)?python3? -m deploykit\.codebuild validate(?: [\w./-]+)?"),
    re.compile(r"(?:\S*/)?python3? -m deploykit\.codebuild deviations"),
    re.compile(r"(?:\S*/)?python3? -m deploykit\.git_trigger check refs/heads/main"),
    re.compile(r"make help"),
    # Without -i: an environment's inventory asks AWS for its hosts; the default one needs nothing.
    re.compile(r"(?:\S*/)?ansible-playbook --syntax-check(?: (?!-)[\w./-]+)+"),
]


@dataclass(frozen=True)
class Finding:
    doc: str
    line: int
    text: str
    problem: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: `{self.text}` {self.problem}"


@dataclass(frozen=True)
class Code:
    """A piece of code the doc shows: an inline span, or one line (continuations joined) of a block."""

    line: int
    text: str
    is_command: bool


# ---------------------------------------------------------------------------------------------
# Reading a Markdown document


def split_document(text: str) -> tuple[str, list[Code]]:
    """The prose (code blocks blanked, line numbers kept) and the lines of code blocks."""
    prose: list[str] = []
    blocks: list[Code] = []
    fence: str | None = None
    language = ""
    pending: tuple[int, str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is None:
            opened = FENCE.match(line)
            if opened:
                fence, language = opened.group(1), opened.group(2).lower()
                prose.append("")
            else:
                prose.append(line)
            continue
        prose.append("")
        if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
            fence = None
            continue
        if language not in CODE_LANGUAGES:
            continue
        is_command = language in SHELL_LANGUAGES
        content = PROMPT.sub("", line) if is_command else line
        start, joined = pending if pending else (number, "")
        joined = f"{joined} {content.strip()}".strip()
        if is_command and joined.endswith("\\"):
            pending = (start, joined[:-1])
            continue
        pending = None
        blocks.append(Code(start, COMMENT.sub("", joined).strip(), is_command))
    return "\n".join(prose), blocks


def code_pieces(text: str) -> list[Code]:
    """Inline code spans (a span may wrap over lines) and the lines of code blocks."""
    prose, blocks = split_document(text)
    spans = [
        Code(prose.count("\n", 0, match.start()) + 1, " ".join(match.group(2).split()), is_command=True)
        for match in CODE_SPAN.finditer(prose)
    ]
    return sorted(spans + blocks, key=lambda code: code.line)


def link_targets(text: str) -> Iterator[tuple[int, str]]:
    prose, _ = split_document(text)
    # Links inside code spans are code, not links.
    prose = CODE_SPAN.sub(lambda match: re.sub(r"[^\n]", " ", match.group(0)), prose)
    for pattern in (INLINE_LINK, REFERENCE_LINK):
        for match in pattern.finditer(prose):
            yield prose.count("\n", 0, match.start()) + 1, match.group(1)


# ---------------------------------------------------------------------------------------------
# What is a repository path, and does it exist


def top_level_entries(root: Path) -> frozenset[str]:
    """Names at the repository's root that git does not ignore (runtime output like .cache/ is)."""
    names = [path.name for path in root.iterdir() if path.name != ".git"]
    result = subprocess.run(
        ["git", "-C", str(root), "check-ignore", "--", *names], capture_output=True, text=True, check=False
    )
    if result.returncode in (0, 1):
        ignored = set(result.stdout.split())
    else:  # not a git checkout: the simple entries of .gitignore
        gitignore = root / ".gitignore"
        lines = gitignore.read_text(encoding="utf-8").splitlines() if gitignore.exists() else []
        ignored = {line.strip().strip("/") for line in lines if line.strip() and not line.startswith("#")}
    return frozenset(name for name in names if name not in ignored)


def registry_names(root: Path) -> frozenset[str]:
    """Names that look like paths but name an image repository (buildspec.yml's ECR_REPOSITORY)."""
    buildspec = root / "buildspec.yml"
    if not buildspec.exists():
        return frozenset()
    spec = yaml.safe_load(buildspec.read_text(encoding="utf-8")) or {}
    variables = spec.get("env", {}).get("variables", {})
    return frozenset({str(variables["ECR_REPOSITORY"])} if "ECR_REPOSITORY" in variables else set())


def expand_braces(word: str) -> list[str]:
    match = re.search(r"\{([^{}]*,[^{}]*)\}", word)
    if not match:
        return [word]
    return [
        expanded
        for choice in match.group(1).split(",")
        for expanded in expand_braces(word[: match.start()] + choice + word[match.end() :])
    ]


def repository_path(word: str, top_level: frozenset[str], not_paths: frozenset[str]) -> str | None:
    """The word as a repository path, or None when it is not one."""
    word = word.strip("\"'(),;:[]").removeprefix("./")
    if "{{" in word or "}}" in word:  # a Jinja expression, not a path
        return None
    if "/" not in word or not PATH_WORD.fullmatch(word) or word.startswith("/") or word in not_paths:
        return None
    if ".." in word.split("/") or word.split("/")[0] not in top_level:
        return None
    return word


def path_exists(root: Path, path: str) -> bool:
    for choice in expand_braces(path):
        pattern = re.sub(r"<[^<>/]*>", "*", choice)
        wants_directory = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        if any(char in pattern for char in "*?["):
            matches = list(root.glob(pattern))
        else:
            matches = [root / pattern] if (root / pattern).exists() else []
        if wants_directory:
            matches = [match for match in matches if match.is_dir()]
        if not matches:
            return False
    return True


def module_exists(root: Path, module: str) -> bool:
    base = root.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()


def missing_paths(doc: Path, root: Path) -> list[Finding]:
    text = doc.read_text(encoding="utf-8")
    name = doc.relative_to(root).as_posix()
    top_level, not_paths = top_level_entries(root), registry_names(root)
    findings = []
    for line, target in link_targets(text):
        if URL_SCHEME.match(target) or target.startswith("#"):
            continue
        path = unquote(target.split("#", 1)[0].split("?", 1)[0])
        if path and not (doc.parent / path).exists():
            findings.append(Finding(name, line, target, f"is a link to {path}, which does not exist"))
    for code in code_pieces(text):
        for word in code.text.split():
            path = repository_path(word, top_level, not_paths)
            if path and not path_exists(root, path):
                findings.append(Finding(name, code.line, code.text, f"names {path}, which does not exist"))
        for module in PYTHON_MODULE.findall(code.text):
            if module.split(".")[0] in top_level and not module_exists(root, module):
                problem = f"runs module {module}, which does not exist"
                findings.append(Finding(name, code.line, code.text, problem))
    return findings


# ---------------------------------------------------------------------------------------------
# make targets


def makefile_targets(makefile: Path) -> frozenset[str]:
    text = makefile.read_text(encoding="utf-8")
    return frozenset(target for rule in MAKEFILE_RULE.findall(text) for target in rule.split())


def make_targets(text: str) -> Iterator[tuple[int, str, str]]:
    for code in code_pieces(text):
        for match in MAKE_COMMAND.finditer(code.text):
            words = match.group(1).split()
            if words and words[0].startswith("-"):
                continue  # options before the targets: not worth guessing
            for word in words:
                if "=" not in word and MAKE_TARGET.fullmatch(word):
                    yield code.line, code.text, word


def unknown_make_targets(doc: Path, root: Path) -> list[Finding]:
    targets = makefile_targets(root / "Makefile")
    name = doc.relative_to(root).as_posix()
    return [
        Finding(name, line, text, f"runs make target {target!r}, which the Makefile does not have")
        for line, text, target in make_targets(doc.read_text(encoding="utf-8"))
        if target not in targets
    ]


# ---------------------------------------------------------------------------------------------
# Commands safe to run


def shell_commands(text: str) -> Iterator[tuple[int, str]]:
    for code in code_pieces(text):
        if code.is_command:
            for command in re.split(r"\s*(?:&&|\|\||;)\s*", code.text):
                yield code.line, " ".join(command.split())


def safe_commands(docs: Iterable[Path], root: Path = ROOT) -> list[tuple[str, str]]:
    """(command, where the docs show it first), each command once."""
    found: dict[str, str] = {}
    for doc in docs:
        for line, command in shell_commands(doc.read_text(encoding="utf-8")):
            if any(pattern.fullmatch(command) for pattern in SAFE_COMMANDS):
                found.setdefault(command, f"{doc.relative_to(root).as_posix()}:{line}")
    return sorted(found.items())


def runnable(command: str) -> list[str]:
    """The command with the project's own tools: the virtualenv's Python and ansible-playbook."""
    argv = shlex.split(command)
    program = Path(argv[0]).name
    if program.startswith("python"):
        argv[0] = sys.executable
    elif program == "ansible-playbook":
        argv[0] = str(Path(sys.executable).parent / "ansible-playbook")
    elif program == "make":
        argv[0] = shutil.which("make") or "make"
    return argv


# ---------------------------------------------------------------------------------------------
# The tests of this repository's docs


def _doc_id(doc: Path) -> str:
    return doc.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_every_repository_path_the_doc_names_exists(doc: Path):
    findings = missing_paths(doc, ROOT)
    assert not findings, "\n".join(map(str, findings))


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_every_make_target_the_doc_names_is_in_the_makefile(doc: Path):
    findings = unknown_make_targets(doc, ROOT)
    assert not findings, "\n".join(map(str, findings))


COMMANDS = safe_commands(DOCS)


def test_the_docs_show_commands_that_can_be_checked_here():
    assert COMMANDS, f"none of the docs shows a command matching {[p.pattern for p in SAFE_COMMANDS]}"


@pytest.mark.parametrize(("command", "where"), COMMANDS, ids=[command for command, _ in COMMANDS])
def test_safe_command_the_docs_show_succeeds(command: str, where: str):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
    }
    result = subprocess.run(
        runnable(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, (
        f"{where}: `{command}` exited {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    )


# ---------------------------------------------------------------------------------------------
# The checks themselves: they find what is wrong, and nothing else


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    files = (
        "roles/app_deploy/tasks/swap.yml",
        "inventory/production/aws_ec2.yml",
        "inventory/local/aws_ec2.yml",
    )
    for path in (*files, "docs/other.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x\n")
    (tmp_path / "deploykit").mkdir()
    (tmp_path / "deploykit" / "codebuild.py").write_text("")
    (tmp_path / "reports").mkdir()
    (tmp_path / ".gitignore").write_text("reports/\n")
    (tmp_path / "buildspec.yml").write_text("env:\n  variables:\n    ECR_REPOSITORY: deploykit/app\n")
    (tmp_path / "Makefile").write_text(
        "VENV := .venv\n.PHONY: help lint\nhelp: ## List\n\t@true\nlint unit: $(VENV)/.installed\n\ttrue\n"
    )
    return tmp_path


def _doc(repo: Path, text: str) -> Path:
    doc = repo / "docs" / "page.md"
    doc.write_text(text)
    return doc


def test_missing_path_is_reported_with_the_doc_and_line(repo: Path):
    text = "Intro.\n\nSee `roles/app_deploy/tasks/swap.yml` and\n`roles/app_deploy/tasks/nope.yml`.\n"
    doc = _doc(repo, text)
    assert [str(finding) for finding in missing_paths(doc, repo)] == [
        "docs/page.md:4: `roles/app_deploy/tasks/nope.yml` names roles/app_deploy/tasks/nope.yml, "
        "which does not exist"
    ]


def test_placeholders_globs_braces_and_directories(repo: Path):
    good = (
        "`inventory/<env>/aws_ec2.yml` `roles/*/tasks/` `inventory/{production,local}/aws_ec2.yml` `roles/`\n"
    )
    bad = (
        "`inventory/<env>/nope.yml` `inventory/{production,staging}/aws_ec2.yml`\n"
        "`roles/app_deploy/tasks/swap.yml/`\n"
    )
    assert missing_paths(_doc(repo, good), repo) == []
    assert len(missing_paths(_doc(repo, bad), repo)) == 3


def test_words_that_are_not_repository_paths_are_left_alone(repo: Path):
    text = (
        "Prose roles/nope.yml is not code. `and/or` `CI/CD` `reports/bench.json` `/var/lib/deploykit/x`\n"
        "`deploykit/python:3.11` `deploykit/app` `.github/workflows/deploy.yml` `https://x.test/roles/y`\n"
        "```text\nroles/nope.yml\n```\n"
        "```yaml\n# inventory/production/group_vars/all/nope.yml\nkey: value\n```\n"
    )
    assert missing_paths(_doc(repo, text), repo) == []


def test_paths_in_commands_and_shell_blocks_are_checked(repo: Path):
    text = (
        "`ansible-playbook x.yml -i inventory/production` and\n\n"
        "```sh\n$ ansible-playbook y.yml \\\n  -i inventory/staging  # a comment naming roles/nope.yml\n```\n"
    )
    assert [finding.line for finding in missing_paths(_doc(repo, text), repo)] == [4]


def test_links_resolve_from_the_doc_and_urls_are_not_followed(repo: Path):
    text = (
        "[a](other.md) [b](../inventory/production/aws_ec2.yml#x)\n"
        "[c](https://x.test) [d](#top) [e](gone.md)\n"
    )
    findings = missing_paths(_doc(repo, text), repo)
    assert [finding.text for finding in findings] == ["gone.md"]


def test_python_modules_of_the_project_must_exist(repo: Path):
    text = "`python -m deploykit.codebuild run` `python -m venv .venv` `.venv/bin/python -m deploykit.nope`\n"
    findings = missing_paths(_doc(repo, text), repo)
    assert [finding.problem for finding in findings] == ["runs module deploykit.nope, which does not exist"]


def test_make_targets_come_from_code_only(repo: Path):
    text = (
        "Make sure to make coffee. `make help` `make lint unit STANDIN_HOSTS=5` `make nope`\n"
        "```yaml\n# make sure\nrun: make help && make other\n```\n"
    )
    findings = unknown_make_targets(_doc(repo, text), repo)
    found = [(finding.line, finding.problem.split("'")[1]) for finding in findings]
    assert found == [(1, "nope"), (4, "other")]


def test_only_safe_commands_are_run(repo: Path):
    text = (
        "`python -m deploykit.codebuild validate buildspec.yml` `make help` `make demo`\n"
        "`python -m deploykit.codebuild run`\n"
        "`ansible-playbook --syntax-check deploy.yml -i inventory/production`\n"
        "```sh\nansible-playbook --syntax-check deploy.yml \\\n  playbooks/rollback.yml\n```\n"
    )
    assert [command for command, _ in safe_commands([_doc(repo, text)], repo)] == [
        "ansible-playbook --syntax-check deploy.yml playbooks/rollback.yml",
        "make help",
        "python -m deploykit.codebuild validate buildspec.yml",
    ]
