"""Fixtures shared by this scenario's tests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from docker_engine_scenario import TEST_IMAGE, configured, group_of


@pytest.fixture(scope="module")
def config(host) -> dict[str, Any]:
    """The role's variables for the host under test."""
    return configured(group_of(host.backend.name))


@pytest.fixture(scope="module")
def docker_info(host) -> dict[str, Any]:
    """`docker info` of the host's engine."""
    return json.loads(host.check_output("docker info --format '{{json .}}'"))


@pytest.fixture(scope="module")
def test_image(host) -> str:
    """A one-file image (a static busybox) on the host's engine: no registry can be reached."""
    host.check_output(
        "docker image inspect %s >/dev/null 2>&1 || {"
        ' d=$(mktemp -d) && chmod 0755 "$d" && mkdir "$d/bin" "$d/tmp" && chmod 1777 "$d/tmp"'
        ' && cp /bin/busybox "$d/bin/"'
        ' && tar -C "$d" -c . | docker import --change \'ENTRYPOINT ["/bin/busybox"]\' - %s'
        ' && rm -rf "$d"; }',
        TEST_IMAGE,
        TEST_IMAGE,
    )
    return TEST_IMAGE
