"""/healthz/ and /readyz/: what they report, and that they answer any Host over plain HTTP."""

import pytest
from django.db import OperationalError, connection
from django.db.migrations.recorder import MigrationRecorder

# What load balancers, Docker and the rollout put in Host: none of them is in ALLOWED_HOSTS.
PROBE_HOSTS = ["10.0.3.7", "10.0.3.7:8000", "localhost", "app-blue-3f2a9c1d"]


@pytest.fixture
def ssl_redirect(settings):
    """Production's redirect to HTTPS behind nginx."""
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 3600


def test_healthz_answers_without_the_database(client):
    # No django_db mark: pytest-django makes any query in this test raise.
    response = client.get("/healthz/")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("host", PROBE_HOSTS)
def test_healthz_names_the_release_to_any_host(client, host, settings):
    settings.APP_RELEASE = {**settings.APP_RELEASE, "version": "v7", "git_commit": "3f2c1e9d8b7a" * 3}

    release = client.get("/healthz/", headers={"host": host}).json()

    assert (release["version"], release["git_commit"]) == ("v7", "3f2c1e9d8b7a" * 3)


def test_healthz_is_never_cached(client):
    assert "no-store" in client.get("/healthz/")["Cache-Control"]


@pytest.mark.parametrize("host", PROBE_HOSTS)
def test_healthz_answers_any_host(client, host):
    assert client.get("/healthz/", headers={"host": host}).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("host", PROBE_HOSTS)
def test_readyz_answers_any_host(client, host):
    assert client.get("/readyz/", headers={"host": host}).status_code == 200


def test_healthz_answers_without_trailing_slash(client):
    assert client.get("/healthz", headers={"host": "10.0.3.7"}).status_code == 200


def test_index_refuses_host_not_allowed(client):
    assert client.get("/", headers={"host": "10.0.3.7"}).status_code == 400


def test_probes_refuse_writes(client):
    assert client.post("/healthz/").status_code == 405


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz/", "/readyz/"])
@pytest.mark.usefixtures("ssl_redirect")
def test_probes_over_plain_http_are_not_redirected(client, path):
    assert client.get(path, headers={"host": "10.0.3.7"}).status_code == 200


@pytest.mark.usefixtures("ssl_redirect")
def test_index_over_plain_http_redirects_to_https(client, allowed_host):
    response = client.get("/", headers={"host": allowed_host})

    assert response.status_code == 301
    assert response["Location"] == f"https://{allowed_host}/"


@pytest.mark.usefixtures("ssl_redirect")
def test_index_refuses_host_not_allowed_under_ssl_redirect(client):
    assert client.get("/", headers={"host": "10.0.3.7", "x-forwarded-proto": "https"}).status_code == 400


@pytest.mark.django_db
def test_readyz_ok_when_database_is_migrated(client):
    response = client.get("/readyz/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_unavailable_with_unapplied_migration(client):
    # Rolled back with the test's transaction.
    MigrationRecorder(connection).record_unapplied("releases", "0001_initial")

    response = client.get("/readyz/")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "reason": "unapplied migrations: releases.0001_initial",
        "unapplied_migrations": ["releases.0001_initial"],
    }


@pytest.mark.usefixtures("unreachable_database")
def test_readyz_unavailable_when_database_unreachable(client):
    response = client.get("/readyz/")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["reason"].startswith("database unreachable: OperationalError: ")
    assert "Connection refused" in body["reason"]


@pytest.mark.usefixtures("unreachable_database")
def test_healthz_ok_when_database_unreachable(client):
    assert client.get("/healthz/").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("password", ["Zq8-long-generated-secret", "p"])
def test_readyz_reason_never_shows_the_database_password(client, monkeypatch, password):
    monkeypatch.setitem(connection.settings_dict, "PASSWORD", password)

    def failing_executor(conn):
        raise OperationalError(f"port 5433 rejected password {password}: auth failed")

    monkeypatch.setattr("releases.views.MigrationExecutor", failing_executor)

    reason = client.get("/readyz/").json()["reason"]

    # Whole words only: a one-letter password must not blank out the "p" in "port".
    assert reason == "database unreachable: OperationalError: port 5433 rejected password ***: auth failed"
