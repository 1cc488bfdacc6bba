"""The local Docker engine: use the one that answers, or start Debian's dockerd."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from deploykit.system import DOCKER, SetupError, run, say

DOCKERD_LOG = Path("/var/log/deploykit-dockerd.log")
START_TIMEOUT_SECONDS = 60


def engine_answers() -> bool:
    return run([DOCKER, "info", "--format", "{{.ServerVersion}}"], check=False).returncode == 0


def ensure_engine() -> None:
    """Start dockerd when no engine answers; never stop or reconfigure an engine that runs."""
    if engine_answers():
        say("Docker engine answers; leaving it as it is")
        return
    if os.geteuid() != 0:
        raise SetupError("no Docker engine answers and starting dockerd needs root (try: sudo make setup)")
    say(f"starting dockerd (log: {DOCKERD_LOG})")
    with DOCKERD_LOG.open("ab") as log:
        # A new session detaches dockerd from make's process group, so it outlives the setup step.
        subprocess.Popen(
            ["dockerd"],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if engine_answers():
            say("Docker engine started")
            return
        time.sleep(0.5)
    tail = "\n".join(DOCKERD_LOG.read_text(errors="replace").splitlines()[-10:])
    raise SetupError(f"dockerd did not answer within {START_TIMEOUT_SECONDS}s; last log lines:\n{tail}")
