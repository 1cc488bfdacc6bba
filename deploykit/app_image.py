"""Builds the Django app's production image: the one place that knows how it is built.

The docker CLI rather than the docker SDK: passing the CA as a BuildKit secret (`--secret`) is not
possible through the SDK's build API.
"""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from deploykit.images import PYTHON_BASE
from deploykit.system import DOCKER, ROOT, SetupError

APP_DIR = ROOT / "django_app"
# The base built from Debian's archive (deploykit/images.py); on AWS the Dockerfile's default is used.
LOCAL_BASE_IMAGE = PYTHON_BASE.tag
# The CA that the network's TLS-intercepting proxy is signed by; only the host trusts it.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_TIMEOUT_SECONDS = 1200
OUTPUT_TAIL_LINES = 40


class ImageBuildError(SetupError):
    """`docker build` failed; the message carries the end of its output."""


def build_time() -> str:
    """Now, in RFC 3339 UTC to the second, as OCI's `created` label wants it."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def build(
    tag: str,
    *,
    base_image: str = LOCAL_BASE_IMAGE,
    version: str,
    revision: str,
    build_id: str = "local",
    source: str = "",
    no_cache: bool = False,
    context: Path = APP_DIR,
) -> None:
    """Build the app image as `tag`, with the release metadata as build arguments (labels and env)."""
    build_args = {
        "BASE_IMAGE": base_image,
        "APP_VERSION": version,
        "APP_GIT_COMMIT": revision,
        "APP_BUILD_ID": build_id,
        "APP_BUILD_TIME": build_time(),
        "APP_SOURCE": source,
    }
    command = [DOCKER, "build", "--progress=plain", "--tag", tag]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    if HOST_CA_BUNDLE.is_file():
        command += ["--secret", f"id=ca,src={HOST_CA_BUNDLE}"]
    if no_cache:
        command.append("--no-cache")
    command.append(str(context))
    try:
        result = subprocess.run(
            command,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=BUILD_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ImageBuildError(f"{DOCKER} not found; run `make setup` first") from exc
    except subprocess.TimeoutExpired as exc:
        output = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output or ""
        raise ImageBuildError(
            f"building {tag} took longer than {BUILD_TIMEOUT_SECONDS} s:\n{_tail(output)}"
        ) from exc
    if result.returncode != 0:
        raise ImageBuildError(
            f"building {tag} from {context} failed (docker exit {result.returncode}):\n{_tail(result.stdout)}"
        )


def _tail(output: str) -> str:
    return "\n".join(output.strip().splitlines()[-OUTPUT_TAIL_LINES:])
