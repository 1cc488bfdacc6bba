"""record_deploy: the audit line a rollout leaves (`docker exec CONTAINER python manage.py record_deploy`)."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from releases.models import Deploy

pytestmark = pytest.mark.django_db


def _record_deploy(*args: str) -> str:
    out = StringIO()
    call_command("record_deploy", *args, stdout=out)
    return out.getvalue()


@pytest.mark.usefixtures("release")
def test_record_deploy_takes_the_release_from_the_environment():
    _record_deploy()

    deploy = Deploy.objects.get()
    assert (deploy.version, deploy.git_commit, deploy.build_id, deploy.image, deploy.host) == (
        "2.4.1",
        "3f2a9c1d0b7e4f5a6b8c9d0e1f2a3b4c5d6e7f80",
        "deploykit-app:7d1c0b2e",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/deploykit:3f2a9c1d0b7e",
        "ip-10-0-3-7",
    )
    assert deploy.built_at.isoformat() == "2025-03-04T05:06:07+00:00"


@pytest.mark.usefixtures("release")
def test_record_deploy_options_override_host_actor_and_image():
    _record_deploy("--host", "web-2", "--actor", "alice", "--image", "registry.local:5000/app:2.4.1")

    deploy = Deploy.objects.get()
    assert (deploy.host, deploy.actor, deploy.image) == ("web-2", "alice", "registry.local:5000/app:2.4.1")


@pytest.mark.usefixtures("release")
def test_record_deploy_prints_one_line():
    output = _record_deploy("--host", "web-2", "--actor", "alice")

    deploy = Deploy.objects.get()
    assert output.count("\n") == 1
    assert output.startswith(f"recorded deploy {deploy.pk}: 2.4.1 (3f2a9c1d0b7e) on web-2 by alice at ")


def test_record_deploy_refuses_an_unreadable_build_time(release, settings):
    settings.APP_RELEASE = {**release, "build_time": "last tuesday"}

    with pytest.raises(CommandError, match="APP_BUILD_TIME"):
        _record_deploy()
    assert not Deploy.objects.exists()
