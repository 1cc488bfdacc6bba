"""`make demo`: the app built from the working tree, running beside the local PostgreSQL."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.error
import urllib.request

from deploykit import app_image, network, postgres
from deploykit.system import CACHE, DOCKER, ROOT, SetupError, run, say

CONTAINER = "deploykit-demo"
PORT = 8000
URL = f"http://127.0.0.1:{PORT}/"
READY_TIMEOUT_SECONDS = 60


def current_commit() -> str:
    result = run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], check=False)
    return result.stdout.strip() if result.returncode == 0 else "uncommitted"


def _env_file(image: str) -> str:
    """Write the container's environment to a private file: the secret key never hits argv."""
    database = postgres.database_url().replace("@127.0.0.1:", f"@{network.GATEWAY}:")
    env = {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database,
        # The demo serves plain HTTP on loopback; production keeps the secure defaults.
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "APP_HOST_NAME": "demo (this machine)",
        "APP_IMAGE": image,
    }
    path = CACHE / "demo.env"
    CACHE.mkdir(exist_ok=True)
    path.touch(mode=0o600)
    path.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    return str(path)


def down() -> None:
    run([DOCKER, "rm", "--force", CONTAINER], check=False)


def _docker_run(
    image: str, env_file: str, *args: str, detach: bool = False
) -> subprocess.CompletedProcess[str]:
    base = [
        DOCKER,
        "run",
        "--network",
        network.NAME,
        "--env-file",
        env_file,
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ]
    if detach:
        base += [
            "--detach",
            "--name",
            CONTAINER,
            "--publish",
            f"127.0.0.1:{PORT}:8000",
            "--restart",
            "unless-stopped",
        ]
    else:
        base += ["--rm"]
    return run([*base, image, *args])


def _wait_ready() -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{URL}readyz/", timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as error:
            last = error.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as error:
            last = str(error)
        time.sleep(0.5)
    logs = run([DOCKER, "logs", "--tail", "20", CONTAINER], check=False)
    raise SetupError(
        f"the app was not ready within {READY_TIMEOUT_SECONDS}s ({last}); last log lines:\n"
        f"{logs.stdout}{logs.stderr}"
    )


def up() -> None:
    commit = current_commit()
    tag = f"deploykit/app:demo-{commit}"
    say(f"building {tag}")
    app_image.build(tag, version=f"demo-{commit}", revision=commit, build_id="make-demo")
    network.ensure_network()
    env_file = _env_file(tag)
    say("applying migrations")
    _docker_run(tag, env_file, "python", "manage.py", "migrate", "--noinput")
    down()
    _docker_run(tag, env_file, detach=True)
    _wait_ready()
    run(
        [
            DOCKER,
            "exec",
            CONTAINER,
            "python",
            "manage.py",
            "record_deploy",
            "--host",
            "demo",
            "--actor",
            "make demo",
        ]
    )
    with urllib.request.urlopen(f"{URL}version.json", timeout=5) as response:
        release = json.load(response)
    say(
        f"serving release {release['version']} (commit {release['git_commit']}, "
        f"build {release['build_id']}, built {release['build_time']})"
    )
    print(f"\n  {URL}\n")
