"""The local stand-in for CodeBuild's webhook: `git push` to a local bare repository starts the build.

`init` makes the bare repository (default `.cache/remote.git`) and writes its post-receive hook. For
each pushed ref the hook builds the push event (EVENT=PUSH, HEAD_REF, changed files, head commit
message, actor), applies the project's webhook filter groups from `playbooks/vars/codebuild.yml`, and
on a match runs the buildspec of the pushed commit with the local runner, in a clean checkout of that
commit, streaming the build's output back to the pusher. No match prints one line with the reason.
Deleting a branch or tag starts nothing. Builds of one project never overlap: the runner's lock
refuses a second one (or queues it, with `init --wait`). With `init --deploy-buildspec`, a build that
succeeds starts the deploy project, as its EventBridge rule does on AWS: a fresh checkout of the
commit the build exported, the deploy buildspec of the repository the trigger was set up in, and
the image the build pushed in IMAGE_URI.

The builds it starts get the environment of the push (AWS_ENDPOINT_URL and the like) and, above the
buildspec's variables, the start-build overrides given to `init --env-override K=V`: what a local build
needs to differ in (DEPLOY_ENV=local) lives there, not in the shared project definition.

CLI: python -m deploykit.git_trigger init [--remote PATH] [--vars FILE] [--add-remote NAME] [--wait]
                                          [--env-override K=V]...
     python -m deploykit.git_trigger check REF [--changed-file PATH]... [--commit-message TEXT]
"""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from deploykit import codebuild
from deploykit.buildspec import BuildspecError
from deploykit.system import CACHE, ROOT
from deploykit.webhook_filter import FilterGroupsError, PushEvent, evaluate, parse_filter_groups

DEFAULT_REMOTE = CACHE / "remote.git"
ZERO_SHA = "0" * 40
ACTOR_VARIABLE = "DEPLOYKIT_PUSH_ACTOR"


@dataclass(frozen=True)
class RefUpdate:
    """One line of post-receive's input: `<old-sha> <new-sha> <ref>`."""

    old: str
    new: str
    ref: str

    @property
    def deleted(self) -> bool:
        return set(self.new) == {"0"}

    @property
    def created(self) -> bool:
        return set(self.old) == {"0"}


def read_updates(lines: Sequence[str]) -> list[RefUpdate]:
    """Parse post-receive's standard input."""
    updates = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            updates.append(RefUpdate(*parts))
    return updates


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def changed_files(repo: Path, update: RefUpdate, commit: str) -> tuple[str, ...]:
    """Paths changed by the pushed commits (what a push webhook's commits list names)."""
    if update.created:
        # A new ref brings the commits no other branch or tag already had. Not `--all`: it takes
        # HEAD too, which may be the very ref just created.
        listing = _git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags")
        others = [line.split()[1] for line in listing.splitlines() if line.split()[0] != update.ref]
        revisions = [commit, "--not", *others]
    else:
        revisions = [f"{update.old}..{commit}"]
    output = _git(repo, "log", "--no-renames", "--format=", "--name-only", *revisions)
    return tuple(dict.fromkeys(line for line in output.splitlines() if line))


def push_actor() -> str:
    """Who pushed: $DEPLOYKIT_PUSH_ACTOR, else git's user.email, else the login name."""
    if os.environ.get(ACTOR_VARIABLE):
        return os.environ[ACTOR_VARIABLE]
    result = subprocess.run(["git", "config", "user.email"], capture_output=True, text=True, check=False)
    return result.stdout.strip() or getpass.getuser()


def push_event(repo: Path, update: RefUpdate, actor: str) -> tuple[PushEvent, str]:
    """The webhook event CodeBuild would get for this ref update, and the commit it points at."""
    # An annotated tag points at a tag object; builds and messages are about its commit.
    commit = _git(repo, "rev-parse", f"{update.new}^{{commit}}").strip()
    message = _git(repo, "log", "-1", "--format=%B", commit).rstrip("\n")
    event = PushEvent(
        head_ref=update.ref,
        event="PUSH",
        changed_files=changed_files(repo, update, commit),
        commit_message=message,
        actor_account_id=actor,
    )
    return event, commit


@contextmanager
def clean_checkout(repo: Path, commit: str) -> Iterator[Path]:
    """A fresh clone of the bare repository at `commit` (detached), removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="deploykit-src-"))
    source = workdir / "src"
    env = codebuild.without_git_hook_variables(os.environ)
    try:
        # --shared borrows the bare repository's objects: no copy, and the checkout is still clean.
        _git(workdir, "clone", "--quiet", "--shared", "--no-checkout", str(repo), str(source), env=env)
        _git(source, "checkout", "--quiet", "--detach", commit, env=env)
        yield source
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _say(out: TextIO, message: str) -> None:
    out.write(f"deploykit: {message}\n")
    out.flush()


@dataclass(frozen=True)
class DeployStage:
    """The deploy project, as EventBridge starts it on AWS when a build of the build project succeeds:
    its buildspec is fixed (a file of the repository the trigger was set up in, never the pushed
    one), its source is the commit the build exported, and its one input is the image it pushed."""

    project: codebuild.Project
    buildspec: Path
    env_overrides: dict[str, str]


# What the build project exports for the deploy stage, in the order of buildspec.yml's
# exported-variables (EventBridge's rule reads them by position on AWS).
DEPLOY_INPUTS = ("IMAGE_URI", "SOURCE_COMMIT")


def run_deploy_stage(
    repo: Path, build: codebuild.BuildResult, stage: DeployStage, *, builds_dir: Path, wait: bool, out: TextIO
) -> codebuild.BuildResult | None:
    """Start the deploy project for a build that succeeded, as its EventBridge rule does on AWS."""
    image, commit = (build.exported_variables.get(name) for name in DEPLOY_INPUTS)
    if not image or not commit:
        missing = " and ".join(name for name in DEPLOY_INPUTS if not build.exported_variables.get(name))
        _say(out, f"no deploy: build {build.build_id} exported no {missing}")
        return None
    _say(out, f"build {build.build_id} succeeded: deploying {image} ({stage.project.name})")
    request = codebuild.BuildRequest(
        buildspec=stage.buildspec.resolve(),
        project=stage.project,
        env_overrides={**stage.env_overrides, "IMAGE_URI": image},
        source_version=commit,
        resolved_source_version=commit,
        source_repo_url=repo.resolve().as_uri(),
        initiator=f"rule/{stage.project.name}-on-build-succeeded",
        builds_dir=builds_dir,
        timeout_seconds=stage.project.timeout_minutes * 60,
        wait_for_lock=wait,
        base_environment=codebuild.without_git_hook_variables(os.environ),
        echo=out,
    )
    with clean_checkout(repo, commit) as source:
        request.source_dir = source
        return codebuild.run_build(request)


def handle_push(
    repo: Path,
    updates: Sequence[RefUpdate],
    *,
    project: codebuild.Project,
    buildspec: Path,
    builds_dir: Path,
    wait: bool,
    out: TextIO,
    env_overrides: dict[str, str] | None = None,
    deploy: DeployStage | None = None,
) -> list[codebuild.BuildResult]:
    """Apply the filter groups to each pushed ref and run a build for each accepted one, then the
    deploy stage for each build that succeeded (when there is one)."""
    groups = parse_filter_groups(project.filter_groups)
    actor = push_actor()
    results = []
    for update in updates:
        if update.deleted:
            _say(out, f"{update.ref} deleted: no build")
            continue
        event, commit = push_event(repo, update, actor)
        decision = evaluate(groups, event)
        if not decision.accepted:
            _say(out, f"no build for {update.ref}: {decision.reason}")
            continue
        _say(out, f"building {update.ref} at {commit[:12]} ({decision.reason})")
        request = codebuild.BuildRequest(
            buildspec=buildspec,
            project=project,
            env_overrides=dict(env_overrides or {}),
            source_version=commit,
            resolved_source_version=commit,
            source_repo_url=repo.resolve().as_uri(),
            webhook=codebuild.Webhook(update.ref, "PUSH", prev_commit=update.old, actor_account_id=actor),
            initiator=f"deploykit-git-hook/{actor}",
            builds_dir=builds_dir,
            timeout_seconds=project.timeout_minutes * 60,
            wait_for_lock=wait,
            base_environment=codebuild.without_git_hook_variables(os.environ),
            echo=out,
        )
        with clean_checkout(repo, commit) as source:
            request.source_dir = source
            try:
                build = codebuild.run_build(request)
            except (BuildspecError, codebuild.BuildRefused) as error:
                _say(out, f"no build for {update.ref}: {error}")
                continue
        results.append(build)
        if deploy is None or not build.succeeded:
            continue
        try:
            deployed = run_deploy_stage(repo, build, deploy, builds_dir=builds_dir, wait=wait, out=out)
        except (BuildspecError, codebuild.BuildRefused) as error:
            _say(out, f"no deploy of {update.ref}: {error}")
            continue
        if deployed is not None:
            results.append(deployed)
    return results


def _hook_script(python: Path, project_root: Path, arguments: Sequence[str]) -> str:
    bootstrap = (
        "import sys; sys.path.insert(0, sys.argv.pop(1)); "
        "from deploykit.git_trigger import main; sys.exit(main(['hook', *sys.argv[1:]]))"
    )
    command = shlex.join([str(python), "-c", bootstrap, str(project_root), *arguments])
    return (
        "#!/bin/sh\n"
        "# deploykit push trigger, written by `python -m deploykit.git_trigger init` (run it again to\n"
        "# change this). A hook has neither the project's venv nor its directory, hence the absolute\n"
        "# paths; sys.path comes from the command line, not PYTHONPATH, so nothing leaks into the build.\n"
        f"exec {command}\n"
    )


def init_remote(
    remote: Path,
    *,
    vars_path: Path,
    builds_dir: Path,
    buildspec: Path = Path("buildspec.yml"),
    python: Path | None = None,
    project_root: Path = ROOT,
    wait: bool = False,
    env_overrides: dict[str, str] | None = None,
    deploy_buildspec: Path | None = None,
    deploy_env_overrides: dict[str, str] | None = None,
) -> Path:
    """Create (or update) the bare repository and its post-receive hook; return the hook's path.
    With `deploy_buildspec`, a build that succeeds starts the deploy project with it."""
    remote = remote.resolve()
    # Fail now, not at the first push, if the filter groups are not valid.
    parse_filter_groups(codebuild.load_project(vars_path).filter_groups)
    if not (remote / "HEAD").exists():
        remote.parent.mkdir(parents=True, exist_ok=True)
        _git(remote.parent, "init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    venv_python = project_root / ".venv" / "bin" / "python"
    python = python or (venv_python if venv_python.exists() else Path(sys.executable))
    arguments = ["--vars", str(vars_path.resolve()), "--builds-dir", str(builds_dir.resolve())]
    arguments += ["--buildspec", str(buildspec)] + (["--wait"] if wait else [])
    for name, value in (env_overrides or {}).items():
        arguments += ["--env-override", f"{name}={value}"]
    if deploy_buildspec is not None:
        arguments += ["--deploy-buildspec", str(deploy_buildspec.resolve())]
        for name, value in (deploy_env_overrides or {}).items():
            arguments += ["--deploy-env-override", f"{name}={value}"]
    hook = remote / "hooks" / "post-receive"
    # absolute(), not resolve(): a venv's python is a symlink, and following it would leave the venv.
    hook.write_text(_hook_script(python.absolute(), project_root.resolve(), arguments), encoding="utf-8")
    hook.chmod(0o755)
    return hook


def add_git_remote(name: str, remote: Path) -> None:
    existing = subprocess.run(["git", "-C", str(ROOT), "remote"], capture_output=True, text=True, check=True)
    verb = "set-url" if name in existing.stdout.split() else "add"
    subprocess.run(["git", "-C", str(ROOT), "remote", verb, name, str(remote.resolve())], check=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploykit.git_trigger", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="create the local remote and its post-receive hook")
    init.add_argument(
        "--remote", type=Path, default=DEFAULT_REMOTE, help="bare repository (default: %(default)s)"
    )
    init.add_argument(
        "--vars", type=Path, default=codebuild.PROJECT_VARS, help="CodeBuild project definition"
    )
    init.add_argument("--builds-dir", type=Path, default=codebuild.BUILDS_DIR)
    init.add_argument(
        "--buildspec", type=Path, default=Path("buildspec.yml"), help="path in the pushed commit"
    )
    init.add_argument("--python", type=Path, help="Python the hook runs (default: the project's .venv)")
    init.add_argument("--wait", action="store_true", help="queue a build behind a running one, not refuse it")
    init.add_argument(
        "--add-remote", metavar="NAME", help="also add the bare repository as a remote of this repo"
    )
    init.add_argument(
        "--env-override", type=codebuild.parse_override, action="append", default=[], metavar="K=V",
        help="start-build override for every build the hook starts; repeatable",
    )  # fmt: skip
    init.add_argument(
        "--deploy-buildspec", type=Path, metavar="PATH",
        help="the deploy project's buildspec (e.g. buildspec-deploy.yml): run after each build that succeeds",
    )  # fmt: skip
    init.add_argument(
        "--deploy-env-override", type=codebuild.parse_override, action="append", default=[], metavar="K=V",
        help="start-build override for every deploy the hook starts; repeatable",
    )  # fmt: skip
    hook = commands.add_parser("hook", help="(run by git) handle a push read from standard input")
    hook.add_argument("--vars", type=Path, required=True)
    hook.add_argument("--builds-dir", type=Path, required=True)
    hook.add_argument("--buildspec", type=Path, default=Path("buildspec.yml"))
    hook.add_argument("--wait", action="store_true")
    hook.add_argument("--env-override", type=codebuild.parse_override, action="append", default=[])
    hook.add_argument("--deploy-buildspec", type=Path)
    hook.add_argument("--deploy-env-override", type=codebuild.parse_override, action="append", default=[])
    check = commands.add_parser("check", help="show whether a push of REF would start a build")
    check.add_argument("ref", help="refs/heads/NAME or refs/tags/NAME")
    check.add_argument("--vars", type=Path, default=codebuild.PROJECT_VARS)
    check.add_argument("--changed-file", action="append", default=[], help="a changed path; repeatable")
    check.add_argument("--commit-message", default="")
    check.add_argument("--actor", default="")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "init":
            hook = init_remote(
                args.remote,
                vars_path=args.vars,
                builds_dir=args.builds_dir,
                buildspec=args.buildspec,
                python=args.python,
                wait=args.wait,
                env_overrides=dict(args.env_override),
                deploy_buildspec=args.deploy_buildspec,
                deploy_env_overrides=dict(args.deploy_env_override),
            )
            if args.add_remote:
                add_git_remote(args.add_remote, args.remote)
            _say(sys.stdout, f"local remote ready: {args.remote.resolve()} (hook: {hook})")
            _say(
                sys.stdout,
                f"push to it: git push {args.add_remote or args.remote.resolve()} HEAD:refs/heads/main",
            )
            return 0
        if args.command == "check":
            groups = parse_filter_groups(codebuild.load_project(args.vars).filter_groups)
            event = PushEvent(
                args.ref, "PUSH", None, tuple(args.changed_file), args.commit_message, args.actor
            )
            decision = evaluate(groups, event)
            print(("build: " if decision.accepted else "no build: ") + decision.reason)
            return 0 if decision.accepted else 1
        codebuild.stop_on_sigterm()
        project = codebuild.load_project(args.vars)
        handle_push(
            Path.cwd(),
            read_updates(sys.stdin.read().splitlines()),
            project=project,
            buildspec=args.buildspec,
            builds_dir=args.builds_dir,
            wait=args.wait,
            out=sys.stdout,
            env_overrides=dict(args.env_override),
            deploy=None
            if args.deploy_buildspec is None
            else DeployStage(
                codebuild.load_project(args.vars, stage="deploy"),
                args.deploy_buildspec,
                dict(args.deploy_env_override),
            ),
        )
        # The push is already accepted; a failed build is reported in the output, not by the status.
        return 0
    except (FilterGroupsError, BuildspecError, RuntimeError) as error:
        print(f"deploykit: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
