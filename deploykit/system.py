"""Small helpers shared by the project's tooling: running commands and failing clearly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
REPORTS = ROOT / "reports"

# The docker client that builds with BuildKit. These machines ship a newer client in
# /usr/local/bin that needs the buildx plugin for BuildKit, which no registry here provides;
# Debian's client (/usr/bin/docker, from docker.io) matches the engine and has BuildKit built in.
# DOCKER in the environment overrides the choice.
DOCKER = os.environ.get("DOCKER") or ("/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker")


class SetupError(Exception):
    """A problem the user must fix; the message says what is wrong and what to do."""


def say(message: str) -> None:
    print(f"deploykit: {message}", flush=True)


def run(
    args: Sequence[str],
    *,
    check: bool = True,
    capture: bool = True,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise SetupError with the command and the tail of its output."""
    if shutil.which(args[0]) is None:
        raise SetupError(f"{args[0]} is not installed; run `make setup` first")
    result = subprocess.run(
        list(args),
        capture_output=capture,
        text=True,
        input=input_text,
        env=env,
        cwd=cwd,
        check=False,
    )
    if check and result.returncode != 0:
        tail = "\n".join(((result.stdout or "") + (result.stderr or "")).strip().splitlines()[-15:])
        raise SetupError(f"`{' '.join(args)}` failed with exit {result.returncode}:\n{tail}")
    return result


def main_guard(func) -> int:
    """Run a CLI entry point; turn SetupError into a one-paragraph message and exit 1."""
    try:
        func()
    except SetupError as error:
        print(f"deploykit: error: {error}", file=sys.stderr)
        return 1
    return 0
