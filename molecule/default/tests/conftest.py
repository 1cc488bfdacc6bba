"""Fixtures shared by this scenario's tests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from default_scenario import CERTIFICATE, address, instance


@pytest.fixture(scope="module")
def host_address() -> str:
    return address(instance())


@pytest.fixture(scope="module")
def site_certificate(host) -> str:
    """The site's self-signed certificate, trusted as its own CA."""
    return host.file(CERTIFICATE).content_string


@pytest.fixture(scope="module")
def release_state(host) -> dict[str, Any]:
    return json.loads(host.file("/var/lib/deploykit/app/state.json").content_string)
