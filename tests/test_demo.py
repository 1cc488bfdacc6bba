"""`make demo`: the app from this tree answers on the printed URL and shows its release."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest

from deploykit import demo
from deploykit.system import ROOT

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def demo_output():
    result = subprocess.run(
        [sys.executable, "-m", "deploykit", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    yield result
    subprocess.run([sys.executable, "-m", "deploykit", "demo", "--down"], cwd=ROOT, check=False)


def test_demo_ends_with_the_url(demo_output):
    assert demo_output.returncode == 0, demo_output.stderr
    assert demo_output.stdout.strip().splitlines()[-1].strip() == demo.URL


def test_demo_url_shows_the_release_built_from_this_tree(demo_output):
    with urllib.request.urlopen(demo.URL, timeout=5) as response:
        page = response.read().decode()
    assert response.status == 200
    assert f"demo-{demo.current_commit()}" in page


def test_demo_records_its_deploy_in_the_history(demo_output):
    with urllib.request.urlopen(demo.URL, timeout=5) as response:
        page = response.read().decode()
    assert "make demo" in page
