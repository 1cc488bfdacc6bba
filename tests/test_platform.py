"""The local platform that `make setup` brings up: engine, images, PostgreSQL, registry."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest

from deploykit import images, postgres, registry
from deploykit.system import DOCKER, ROOT

pytestmark = pytest.mark.docker


def platform_up() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploykit", "platform-up"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_second_setup_changes_nothing():
    result = platform_up()
    assert result.returncode == 0, result.stderr
    for image in images.ALL_IMAGES:
        assert f"{image.tag} is up to date" in result.stdout
    assert "building" not in result.stdout
    assert "starting" not in result.stdout


@pytest.mark.parametrize("image", images.ALL_IMAGES, ids=lambda image: image.tag)
def test_base_image_exists(image):
    subprocess.run([DOCKER, "image", "inspect", image.tag], check=True, capture_output=True)


def test_python_base_runs_the_python_minor_and_release_its_tag_names():
    # The production base's twin (tests/test_base_image.py): what its tag claims, checked inside it.
    probe = (
        "import platform, sys; "
        "print(f'{sys.version_info.major}.{sys.version_info.minor}', "
        "platform.freedesktop_os_release()['VERSION_CODENAME'])"
    )
    result = subprocess.run(
        [DOCKER, "run", "--rm", images.PYTHON_BASE.tag, "python3", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    )
    suite = images.PYTHON_BASE.suite

    assert result.stdout.split() == [images.DEBIAN_PYTHON[suite], suite]


@pytest.mark.parametrize("distro", sorted(images.HOSTS))
def test_fresh_host_has_sshd_python_sudo_and_no_docker(distro):
    probe = "command -v sshd python3 sudo systemctl >/dev/null && ! command -v dockerd"
    result = subprocess.run(
        [DOCKER, "run", "--rm", "--entrypoint", "sh", images.HOSTS[distro].tag, "-c", probe],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_fresh_host_image_carries_no_ssh_host_keys():
    # Every host makes its own keys at first boot; keys baked into the image would be shared.
    result = subprocess.run(
        [
            DOCKER,
            "run",
            "--rm",
            "--entrypoint",
            "sh",
            images.HOSTS["debian12"].tag,
            "-c",
            "ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "0"


def test_postgres_accepts_the_recorded_url():
    with psycopg.connect(postgres.database_url(), connect_timeout=5) as connection:
        assert connection.execute("SELECT current_user").fetchone() == (postgres.ROLE,)


def test_postgres_url_file_is_private():
    assert postgres.URL_FILE.stat().st_mode & 0o777 == 0o600


def test_registry_serves_tls_from_the_project_ca_and_wants_a_login():
    context = ssl.create_default_context(cafile=str(registry.CA_CERT))
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"https://{registry.ADDRESS}/v2/", context=context, timeout=5)
    assert raised.value.code == 401


def test_setup_refuses_to_run_as_non_root_with_a_clear_message():
    result = subprocess.run(
        ["runuser", "-u", "nobody", "--", "bash", str(ROOT / "scripts" / "install-system-packages.sh")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HOME": "/tmp"},
    )
    assert result.returncode != 0
    assert "must run as root" in result.stderr


def test_cli_reports_a_missing_tool_instead_of_a_traceback(tmp_path: Path):
    # A machine without the system packages: the tooling names what to run.
    result = subprocess.run(
        [sys.executable, "-m", "deploykit", "platform-up"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PATH": str(tmp_path), "DOCKER": "docker"},
    )
    assert result.returncode == 1
    assert "run `make setup`" in result.stderr
    assert "Traceback" not in result.stderr
