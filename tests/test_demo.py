"""`make demo`: a push of this commit, built and deployed by the pipeline to the stand-in's hosts."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request

import pytest

from deploykit import demo
from deploykit.system import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

URL_LINE = re.compile(r"^\s+(http://[\d.]+/)\s+(\S+)\s+serving (\S+)$", re.MULTILINE)


def run_demo() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploykit", "demo"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=1500,
    )  # fmt: skip


@pytest.fixture(scope="module")
def first_run():
    return run_demo()


@pytest.fixture(scope="module")
def second_run(first_run):
    return run_demo()


def test_demo_succeeds(first_run):
    assert first_run.returncode == 0, first_run.stdout[-3000:] + first_run.stderr[-3000:]


def test_demo_lists_three_hosts_serving_this_commit(first_run):
    commit = demo.current_commit()[:12]
    hosts = URL_LINE.findall(first_run.stdout)
    assert len(hosts) == 3
    assert {version for _url, _name, version in hosts} == {commit}


def test_each_printed_url_serves_this_commit_through_nginx(first_run):
    commit = demo.current_commit()[:12]
    for url, _name, _version in URL_LINE.findall(first_run.stdout):
        with urllib.request.urlopen(f"{url}version.json", timeout=5) as response:
            assert response.read().decode().count(commit) >= 1


def test_the_build_ran_the_pipeline_phases(first_run):
    for phase in ("INSTALL", "PRE_BUILD", "BUILD", "POST_BUILD"):
        assert re.search(rf"{phase}\s+SUCCEEDED", first_run.stdout + first_run.stderr)


def test_a_second_demo_passes_without_building_again(second_run):
    assert second_run.returncode == 0, second_run.stderr[-3000:]
    assert "nothing to push" in second_run.stdout
    assert len(URL_LINE.findall(second_run.stdout)) == 3
