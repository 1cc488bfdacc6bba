"""The app's production image on the local Docker engine, run with the deploy's hardening
(read-only root, /tmp on tmpfs, no capabilities, no-new-privileges)."""

from __future__ import annotations

import http.client
import json
import re
import secrets
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from docker.models.containers import Container

pytestmark = pytest.mark.docker

APP_PORT = "8000/tcp"  # what the image EXPOSEs; the container fixtures publish it on 127.0.0.1
ALLOWED_HOST = "app.example.test"
# Two workers instead of the per-CPU default: test containers share two cores.
APP_ENV = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": ALLOWED_HOST,
    "GUNICORN_WORKERS": "2",
}


# Inside the container nothing listens on port 1: connections are refused at once.
UNREACHABLE_PASSWORD = secrets.token_urlsafe(16)
UNREACHABLE_DATABASE_URL = f"postgres://app:{UNREACHABLE_PASSWORD}@127.0.0.1:1/app"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str

    def json(self) -> dict:
        return json.loads(self.body)


class RunningApp:
    """A started app container, reached through its port published on the host's loopback."""

    def __init__(self, container: Container) -> None:
        container.reload()
        self.container = container
        self.port = int(container.ports[APP_PORT][0]["HostPort"])

    def get(self, path: str, *, host: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        """One GET without following redirects; Host defaults to what a probe sends, 127.0.0.1:PORT."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request(
                "GET", path, headers={"Host": host or f"127.0.0.1:{self.port}", **(headers or {})}
            )
            response = connection.getresponse()
            return Reply(response.status, response.headers, response.read().decode())
        finally:
            connection.close()

    def get_as_client(self, path: str) -> Reply:
        """A GET as nginx forwards a browser's request: an allowed Host, over HTTPS."""
        return self.get(path, host=ALLOWED_HOST, headers={"X-Forwarded-Proto": "https"})

    def wait_until_live(self, timeout: float = 30) -> float:
        """Seconds until /healthz/ first answered 200; fails with the container's log otherwise."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with suppress(OSError, http.client.HTTPException):
                if self.get("/healthz/").status == 200:
                    return time.monotonic() - started
            self.container.reload()
            if self.container.status == "exited":
                break
            time.sleep(0.1)
        pytest.fail(f"/healthz/ did not answer 200 within {timeout} s; container log:\n{self.logs()}")

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")


def run_to_completion(
    start: Callable[..., Container], image: str, command: list[str], environment: dict[str, str]
) -> str:
    """Run a one-off container (like the rollout's migrate step); its log, or a failure showing it."""
    container = start(image, command=command, environment=environment)
    status = container.wait(timeout=120)["StatusCode"]
    logs = container.logs().decode(errors="replace")
    if status != 0:
        pytest.fail(f"`{' '.join(command)}` exited {status}:\n{logs}")
    return logs


@pytest.fixture(scope="session")
def image_attrs(docker_client, app_image):
    return docker_client.images.get(app_image.tag).attrs


@pytest.fixture(scope="session")
def app_without_database(app_image, start_session_container) -> RunningApp:
    container = start_session_container(
        app_image.tag, environment={**APP_ENV, "DATABASE_URL": UNREACHABLE_DATABASE_URL}
    )
    app = RunningApp(container)
    app.wait_until_live()
    return app


@pytest.fixture(scope="session")
def migrated_app(app_image, start_session_container, create_database) -> RunningApp:
    """The app on its own database, migrated by a one-off container as the rollout does."""
    environment = {**APP_ENV, "DATABASE_URL": create_database()}
    run_to_completion(
        start_session_container, app_image.tag, ["python", "manage.py", "migrate", "--noinput"], environment
    )
    app = RunningApp(start_session_container(app_image.tag, environment=environment))
    app.wait_until_live()
    return app


def _exec(app: RunningApp, *command: str) -> tuple[int, str]:
    exit_code, output = app.container.exec_run(list(command))
    return exit_code, output.decode(errors="replace")


# The image


def test_image_user_is_not_root(image_attrs):
    user = image_attrs["Config"]["User"]

    assert user.split(":")[0] not in ("", "0", "root")


def test_image_labels_describe_the_build(image_attrs, app_image):
    labels = image_attrs["Config"]["Labels"]

    assert labels["org.opencontainers.image.version"] == app_image.version
    assert labels["org.opencontainers.image.revision"] == app_image.revision
    assert labels["org.opencontainers.image.source"] == app_image.source
    assert labels["org.opencontainers.image.title"] == "deploykit-app"
    created = datetime.fromisoformat(labels["org.opencontainers.image.created"])
    assert timedelta(0) <= datetime.now(UTC) - created < timedelta(hours=2)


def test_image_environment_holds_no_secret(image_attrs):
    names = {entry.partition("=")[0] for entry in image_attrs["Config"]["Env"]}

    assert not names & {"DJANGO_SECRET_KEY", "PIP_CERT", "DATABASE_URL"}


def test_image_holds_only_what_the_app_runs(app_without_database):
    _, listing = _exec(
        app_without_database, "python", "-c", "import json, os; print(json.dumps(os.listdir('/app')))"
    )

    assert set(json.loads(listing)) == {
        "config",
        "gunicorn.conf.py",
        "__pycache__",
        "manage.py",
        "releases",
        "requirements.txt",
        "staticfiles",
    }


# The running container


def test_process_runs_as_non_root_uid(app_without_database):
    exit_code, uid = _exec(app_without_database, "id", "-u")

    assert exit_code == 0
    assert int(uid) != 0


def test_root_filesystem_is_read_only(app_without_database):
    exit_code, output = _exec(app_without_database, "python", "-c", "open('/app/written-at-run-time', 'w')")

    assert exit_code != 0
    assert "Read-only file system" in output


def test_tmp_is_writable(app_without_database):
    exit_code, _ = _exec(app_without_database, "python", "-c", "open('/tmp/written-at-run-time', 'w')")

    assert exit_code == 0


def test_healthz_answers_within_10_seconds_of_start(app_image, start_container):
    app = RunningApp(
        start_container(app_image.tag, environment={**APP_ENV, "DATABASE_URL": UNREACHABLE_DATABASE_URL})
    )

    assert app.wait_until_live(timeout=30) < 10


def test_missing_secret_key_stops_the_container_naming_it(app_image, start_container):
    environment = {k: v for k, v in APP_ENV.items() if k != "DJANGO_SECRET_KEY"}
    container = start_container(
        app_image.tag, environment={**environment, "DATABASE_URL": UNREACHABLE_DATABASE_URL}
    )

    started = time.monotonic()
    status = container.wait(timeout=30)["StatusCode"]
    elapsed = time.monotonic() - started
    stderr = container.logs(stdout=False, stderr=True).decode()

    assert status != 0
    assert elapsed < 10
    assert "DJANGO_SECRET_KEY" in stderr
    assert "Traceback" not in stderr


def test_healthz_ok_while_database_unreachable(app_without_database):
    # Also a probe as Docker and load balancers send it: Host is an IP that is not allowed, over plain HTTP.
    reply = app_without_database.get("/healthz/")

    assert (reply.status, reply.json()["status"]) == (200, "ok")


def test_healthz_names_the_release_built_into_the_image(app_without_database, app_image):
    # What the deploy's plan and per-host checks read: any Host, plain HTTP, no database.
    release = app_without_database.get("/healthz/").json()

    assert release["version"] == app_image.version


def test_readyz_unavailable_while_database_unreachable(app_without_database):
    reply = app_without_database.get("/readyz/")

    assert reply.status == 503
    assert reply.json()["status"] == "unavailable"
    assert reply.json()["reason"].startswith("database unreachable: OperationalError: ")


def test_readyz_reason_leaves_out_the_database_password(app_without_database):
    assert UNREACHABLE_PASSWORD not in app_without_database.get("/readyz/").body


def test_index_over_plain_http_redirects_to_https(app_without_database):
    reply = app_without_database.get("/", host="app.example.test")

    assert reply.status == 301
    assert reply.headers["Location"] == "https://app.example.test/"


def test_index_refuses_a_host_not_allowed(app_without_database):
    assert app_without_database.get("/", headers={"X-Forwarded-Proto": "https"}).status == 400


def test_index_without_database_still_shows_the_release(app_without_database, app_image):
    reply = app_without_database.get_as_client("/")

    assert reply.status == 200
    assert app_image.version in reply.body
    assert "Deploy history is unavailable" in reply.body


def test_logs_are_json_lines_with_access_fields(app_without_database):
    app_without_database.get("/healthz/")
    lines = [json.loads(line) for line in app_without_database.logs().splitlines() if line.strip()]

    access = [line for line in lines if line["logger"] == "gunicorn.access" and line["path"] == "/healthz/"]
    assert access
    assert access[-1]["status"] == 200
    assert isinstance(access[-1]["duration_ms"], int)


def test_docker_healthcheck_reports_healthy(app_without_database):
    container = app_without_database.container
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        container.reload()
        if container.attrs["State"]["Health"]["Status"] == "healthy":
            break
        time.sleep(1)

    assert container.attrs["State"]["Health"]["Status"] == "healthy"


# With the project's PostgreSQL cluster


def test_readyz_lists_unapplied_migrations_before_migrate(app_image, start_container, create_database):
    app = RunningApp(
        start_container(app_image.tag, environment={**APP_ENV, "DATABASE_URL": create_database()})
    )
    app.wait_until_live()

    reply = app.get("/readyz/")

    assert reply.status == 503
    assert "releases.0001_initial" in reply.json()["unapplied_migrations"]


def test_readyz_ok_after_migrate(migrated_app):
    reply = migrated_app.get("/readyz/")

    assert (reply.status, reply.json()) == (200, {"status": "ok"})


def test_index_shows_the_version_built_into_the_image(migrated_app, app_image):
    reply = migrated_app.get_as_client("/")

    assert reply.status == 200
    assert app_image.version in reply.body
    assert app_image.revision[:12] in reply.body


def test_version_json_reports_the_build(migrated_app, app_image):
    release = migrated_app.get_as_client("/version.json").json()

    assert (release["version"], release["git_commit"], release["build_id"]) == (
        app_image.version,
        app_image.revision,
        app_image.build_id,
    )


def test_record_deploy_in_the_container_shows_in_the_history(migrated_app):
    exit_code, output = _exec(
        migrated_app,
        "python",
        "manage.py",
        "record_deploy",
        "--host",
        "web-test-7",
        "--actor",
        "pytest-rollout",
    )

    assert exit_code == 0, output
    assert output.startswith("recorded deploy ")
    page = migrated_app.get_as_client("/").body
    assert "web-test-7" in page
    assert "pytest-rollout" in page


def test_stylesheet_is_served_with_a_hashed_name_and_long_cache(migrated_app):
    href = re.search(
        r'href="(/static/releases/site\.[0-9a-f]{12}\.css)"', migrated_app.get_as_client("/").body
    )
    assert href

    reply = migrated_app.get_as_client(href.group(1))

    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/css")
    assert "immutable" in reply.headers["Cache-Control"]
