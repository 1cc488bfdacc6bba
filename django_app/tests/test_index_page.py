"""The operator's page and /version.json: which release answered, where, and what was deployed before."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from releases.models import Deploy


def _record(version: str, minutes_ago: int, host: str = "ip-10-0-3-7") -> Deploy:
    return Deploy.objects.create(
        version=version, host=host, deployed_at=timezone.now() - timedelta(minutes=minutes_ago)
    )


@pytest.mark.django_db
def test_index_shows_the_release_that_answered(client, release):
    page = client.get("/").content.decode()

    assert release["version"] in page
    assert release["git_commit"][:12] in page
    assert release["build_id"] in page
    assert release["build_time"] in page
    assert release["image"] in page


@pytest.mark.django_db
def test_index_shows_the_host_that_answered(client, settings):
    settings.APP_HOST_NAME = "ip-10-0-9-44"

    assert "ip-10-0-9-44" in client.get("/").content.decode()


@pytest.mark.django_db
def test_index_lists_deploys_newest_first(client):
    for version, minutes_ago in [("1.0.0", 30), ("1.2.0", 10), ("1.1.0", 20)]:
        _record(version, minutes_ago)

    page = client.get("/").content.decode()

    assert page.index("1.2.0") < page.index("1.1.0") < page.index("1.0.0")


@pytest.mark.django_db
def test_index_lists_only_the_last_20_deploys(client):
    for n in range(25):
        _record(f"1.0.{n:02d}", minutes_ago=100 - n)

    page = client.get("/").content.decode()

    assert [f"1.0.{n:02d}" in page for n in range(25)] == [False] * 5 + [True] * 20


@pytest.mark.django_db
def test_index_says_when_nothing_was_deployed_yet(client):
    assert "No deploys recorded yet" in client.get("/").content.decode()


@pytest.mark.usefixtures("unreachable_database")
def test_index_without_database_still_shows_the_release(client, release):
    response = client.get("/")

    assert response.status_code == 200
    page = response.content.decode()
    assert release["version"] in page
    assert "Deploy history is unavailable" in page


@pytest.mark.django_db
def test_index_stylesheet_is_served(client):
    href = re.search(r'<link rel="stylesheet" href="([^"]+)"', client.get("/").content.decode()).group(1)

    response = client.get(href)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")


def test_version_json_describes_the_release(client, release):
    response = client.get("/version.json")

    assert response.status_code == 200
    assert response.json() == {**release, "host": "ip-10-0-3-7"}
