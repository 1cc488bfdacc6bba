"""The AWS API stand-in of the app_deploy scenario: moto in server mode on loopback.

    python aws_standin.py up STATE_DIR     start moto unless it answers, store the app's SSM secret
    python aws_standin.py down STATE_DIR   stop the moto this script started

The role reaches it through AWS_ENDPOINT_URL alone (molecule.yml sets it for every playbook and
test), exactly as it reaches AWS: ECR's GetAuthorizationToken for the registry login and SSM
Parameter Store for a secret. moto answers GetAuthorizationToken with a fixed token, the password
the project's registry accepts. Prints "started" when it started moto, so that Ansible can report
a change.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import boto3

ENDPOINT = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:5055")
SECRET_PARAMETER = "/deploykit/molecule/django-secret-key"  # noqa: S105 - a parameter name, not a secret


def _answers() -> bool:
    try:
        with urllib.request.urlopen(f"{ENDPOINT}/moto-api/", timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


def up(state: Path) -> None:
    started = False
    if not _answers():
        address = urlsplit(ENDPOINT)
        state.mkdir(parents=True, exist_ok=True)
        moto = Path(sys.executable).with_name("moto_server")
        with (state / "moto.log").open("ab") as log:
            process = subprocess.Popen(
                [str(moto), "-H", address.hostname, "-p", str(address.port)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        (state / "moto.pid").write_text(str(process.pid))
        deadline = time.monotonic() + 30
        while not _answers():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"moto did not answer on {ENDPOINT}; see {state / 'moto.log'}")
            time.sleep(0.3)
        started = True
    ssm = boto3.client("ssm", endpoint_url=ENDPOINT)
    try:
        ssm.get_parameter(Name=SECRET_PARAMETER)
    except ssm.exceptions.ParameterNotFound:
        ssm.put_parameter(Name=SECRET_PARAMETER, Type="SecureString", Value=secrets.token_urlsafe(50))
        started = True
    print("started" if started else "running")


def down(state: Path) -> None:
    pid_file = state / "moto.pid"
    if not pid_file.exists():
        print("not started here")
        return
    with contextlib.suppress(ProcessLookupError, ValueError):
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    pid_file.unlink()
    print("stopped")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print(__doc__, file=sys.stderr)
        return 2
    (up if argv[0] == "up" else down)(Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
