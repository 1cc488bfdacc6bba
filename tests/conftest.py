"""Fixtures shared by the tests: one build of the app image per session, containers that are always
removed, scratch databases in the project's PostgreSQL cluster, and moto servers of a test
module's own."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import docker
import psycopg
import pytest
from docker.errors import DockerException, NotFound
from docker.models.containers import Container
from psycopg import sql

from deploykit import standin
from deploykit.app_image import build as build_app_image
from deploykit.system import ROOT

POSTGRES_URL_FILE = Path(__file__).resolve().parents[1] / ".cache" / "postgres-url"
APP_PORT = "8000/tcp"
# Containers reach the host's PostgreSQL cluster through the Docker bridge gateway under this name.
HOST_ALIAS = "host.docker.internal"
# The hardening the deploy applies: the image must run under it.
HARDENED = {
    "read_only": True,
    "tmpfs": {"/tmp": ""},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
}


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    version: str
    revision: str
    build_id: str
    source: str


StartContainer = Callable[..., Container]


@contextmanager
def _container_pool(client: docker.DockerClient) -> Iterator[StartContainer]:
    """A starter of hardened app containers; every container it started is removed on the way out."""
    started: list[Container] = []

    def start(image: str, *, environment: dict[str, str], command: list[str] | None = None) -> Container:
        container = client.containers.run(
            image,
            command,
            detach=True,
            environment=environment,
            ports={APP_PORT: ("127.0.0.1", None)},
            extra_hosts={HOST_ALIAS: "host-gateway"},
            labels={"org.deploykit.test": "image"},
            **HARDENED,
        )
        started.append(container)
        return container

    try:
        yield start
    finally:
        for container in started:
            with suppress(NotFound):
                container.remove(force=True)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        pytest.fail(f"no Docker engine answers ({exc}); `make setup` starts one")
    yield client
    client.close()


@pytest.fixture(scope="session")
def app_image(docker_client: docker.DockerClient) -> Iterator[BuiltImage]:
    """The app image, built once per session through the same function the demo and CI use."""
    suffix = secrets.token_hex(4)
    image = BuiltImage(
        tag=f"deploykit/app:test-{suffix}",
        version=f"0.0.0-test.{suffix}",
        revision=secrets.token_hex(20),
        build_id=f"pytest-{suffix}",
        source="https://git.example.test/deploykit.git",
    )
    build_app_image(
        image.tag,
        version=image.version,
        revision=image.revision,
        build_id=image.build_id,
        source=image.source,
    )
    yield image
    docker_client.images.remove(image.tag)


@pytest.fixture
def start_container(docker_client: docker.DockerClient) -> Iterator[StartContainer]:
    with _container_pool(docker_client) as start:
        yield start


@pytest.fixture(scope="session")
def start_session_container(docker_client: docker.DockerClient) -> Iterator[StartContainer]:
    with _container_pool(docker_client) as start:
        yield start


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url and POSTGRES_URL_FILE.is_file():
        url = POSTGRES_URL_FILE.read_text().strip()
    if not url:
        pytest.fail(
            f"DATABASE_URL is not set and {POSTGRES_URL_FILE} does not exist; `make setup` starts PostgreSQL"
        )
    return url


@pytest.fixture(scope="session")
def create_database(postgres_url: str) -> Iterator[Callable[[], str]]:
    """Makes empty databases in the project's cluster (dropped at the end); returns their URL as seen
    from a container."""
    created: list[str] = []

    def create() -> str:
        name = f"deploykit_image_test_{secrets.token_hex(4)}"
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return _as_seen_from_container(postgres_url, name)

    yield create
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        for name in created:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _as_seen_from_container(url: str, database: str) -> str:
    """The cluster's URL with the host's loopback replaced by the gateway alias, for `database`."""
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    host, colon, port = hostport.partition(":")
    if host in ("127.0.0.1", "localhost"):
        host = HOST_ALIAS
    netloc = f"{userinfo}@{host}{colon}{port}" if userinfo else f"{host}{colon}{port}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}"))


MotoServer = Callable[..., str]
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> MotoServer:
    """Starts a moto server on a free port of 127.0.0.1 (never the stand-in's) for the test module
    or test that asks, and stops it when that `request` ends: `moto_server(request, **env)` returns
    its endpoint. `env` adds moto's settings (MOTO_ENABLE_KEYPAIR_VALIDATION=true, say). It is the
    stand-in's moto (deploykit.moto_server): GetConsoleOutput of an instance answers with the file
    `console_dir/<instance id>` when the caller names a `console_dir` and writes one there. ECR's
    images are moto's own (PutImage stores a manifest alone) unless the caller asks for
    `registry=True`: then they are the local registry's, as in the stand-in."""

    def start(
        request: pytest.FixtureRequest, *, console_dir: Path | None = None, registry: bool = False, **env: str
    ) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        endpoint = f"http://127.0.0.1:{port}"
        folder = tmp_path_factory.mktemp("moto")
        log_path = folder / "moto.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                standin.moto_command(console_dir or folder / "console", port, registry=registry),
                cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env={**os.environ, **env},
            )  # fmt: skip

        def stop() -> None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

        request.addfinalizer(stop)
        deadline = time.monotonic() + 30
        while True:
            try:
                _NO_PROXY.open(f"{endpoint}/moto-api/", timeout=2).close()
                return endpoint
            except (urllib.error.URLError, OSError):
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto did not answer on {endpoint}:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.2)

    return start


RunLocalPlay = Callable[..., tuple[dict, str]]


@pytest.fixture
def run_local_play(tmp_path: Path) -> RunLocalPlay:
    """Run a play's `tasks` (YAML text) on this machine with the project's ansible.cfg, its
    plugins and app_deploy's modules; the json callback's document and the whole output."""

    def run(tasks: str, *, check: bool = False) -> tuple[dict, str]:
        playbook = tmp_path / "play.yml"
        indented = "\n".join("    " + line if line else line for line in tasks.strip("\n").splitlines())
        playbook.write_text(
            "- name: Run on this machine\n  hosts: localhost\n  connection: local\n  gather_facts: false\n"
            f"  vars:\n    ansible_python_interpreter: {sys.executable}\n  tasks:\n{indented}\n"
        )
        environ = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
        environ.update(
            ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
            ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
            ANSIBLE_LIBRARY=f"{ROOT / 'plugins' / 'modules'}:{ROOT / 'roles' / 'app_deploy' / 'library'}",
            ANSIBLE_MODULE_UTILS=str(ROOT / "roles" / "app_deploy" / "module_utils"),
        )
        done = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
             *(["--check"] if check else []), str(playbook)],
            cwd=ROOT, env=environ, capture_output=True, text=True, check=False, timeout=180,
        )  # fmt: skip
        assert done.returncode in (0, 2), done.stdout[-3000:] + done.stderr[-2000:]
        # The JSON document, then what the project's other callbacks print after it.
        document, _ = json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{") :])
        return document, done.stdout

    return run
