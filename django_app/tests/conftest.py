import socket

import pytest
from django.db import connection


@pytest.fixture
def allowed_host(settings):
    """A Host header the app accepts (config.settings.test lists it)."""
    return settings.ALLOWED_HOSTS[0]


@pytest.fixture
def release(settings):
    """A release as the image and the deploy would describe it in the environment."""
    settings.APP_RELEASE = {
        "version": "2.4.1",
        "git_commit": "3f2a9c1d0b7e4f5a6b8c9d0e1f2a3b4c5d6e7f80",
        "build_id": "deploykit-app:7d1c0b2e",
        "build_time": "2025-03-04T05:06:07Z",
        "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/deploykit:3f2a9c1d0b7e",
    }
    settings.APP_HOST_NAME = "ip-10-0-3-7"
    return settings.APP_RELEASE


@pytest.fixture
def unreachable_database(django_db_blocker, monkeypatch):
    """The default connection pointed at a local port where nothing listens."""
    with socket.socket() as sock:
        # Bound but never listening: connections are refused at once, and no other process takes the port.
        sock.bind(("127.0.0.1", 0))
        connection.close()
        monkeypatch.setitem(connection.settings_dict, "HOST", "127.0.0.1")
        monkeypatch.setitem(connection.settings_dict, "PORT", sock.getsockname()[1])
        with django_db_blocker.unblock():
            yield
            connection.close()
