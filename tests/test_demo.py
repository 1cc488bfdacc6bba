"""`make demo`: a push of this commit, built and deployed by the pipeline to the stand-in's hosts."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from deploykit import demo
from deploykit.system import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

PUBLIC_LINE = re.compile(r"^\s+(https://\S+/)\s+serving (\S+)$", re.MULTILINE)
CA_LINE = re.compile(r"^\s+trust the project's CA: curl --cacert (\S+) (\S+)$", re.MULTILINE)
REDIRECT_LINE = re.compile(r"^\s+plain HTTP redirects there: (http://\S+)$", re.MULTILINE)
HOST_LINE = re.compile(r"^\s+(deploykit-web-\d+)\s+([\d.]+)\s+(debian\d+)\s+serving (\S+)$", re.MULTILINE)


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


def test_demo_ends_with_one_https_address_serving_this_commit(first_run):
    commit = demo.current_commit()[:12]
    assert PUBLIC_LINE.findall(first_run.stdout) == [("https://app.deploykit.localhost:8443/", commit)]


def test_the_printed_address_answers_curl_with_the_ca_it_names(first_run):
    # As a newcomer would copy it: curl resolves *.localhost to loopback by itself.
    [(ca, url)] = CA_LINE.findall(first_run.stdout)
    answer = subprocess.run(
        ["curl", "--silent", "--show-error", "--fail", "--cacert", ca, f"{url}version.json"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    assert demo.current_commit()[:12] in json.loads(answer.stdout).values()


def test_plain_http_redirects_to_the_printed_address(first_run):
    [http_url] = REDIRECT_LINE.findall(first_run.stdout)
    [(_ca, https_url)] = CA_LINE.findall(first_run.stdout)
    answer = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "--write-out", "%{http_code} %{redirect_url}", http_url],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert answer.stdout == f"301 {https_url}"


def test_demo_lists_the_mixed_fleet_behind_it_serving_this_commit(first_run):
    commit = demo.current_commit()[:12]
    hosts = HOST_LINE.findall(first_run.stdout)
    assert [(name, distro) for name, _ip, distro, _version in hosts] == [
        ("deploykit-web-1", "debian12"),
        ("deploykit-web-2", "debian13"),
        ("deploykit-web-3", "debian12"),
    ]
    assert {version for *_, version in hosts} == {commit}


def test_the_build_ran_the_pipeline_phases(first_run):
    for phase in ("INSTALL", "PRE_BUILD", "BUILD", "POST_BUILD"):
        assert re.search(rf"{phase}\s+SUCCEEDED", first_run.stdout + first_run.stderr)


def test_the_deploy_ran_as_its_own_project_after_the_build(first_run):
    out = first_run.stdout + first_run.stderr
    started = re.search(r"build (deploykit:\S+) succeeded: deploying (\S+) \(deploykit-deploy\)", out)
    assert started, out[-3000:]
    # The deploy project's build, after the build project's, and it succeeded.
    assert re.search(r"Build deploykit-deploy:\S+ \(#\d+\) of project deploykit-deploy", out)
    assert out.rstrip().count("BUILD SUCCEEDED") >= 2


def test_the_deploy_logged_in_as_on_aws_key_from_ssm_host_keys_from_the_console(first_run):
    out = first_run.stdout + first_run.stderr
    # python -m deploykit.known_hosts read every host's key from the stand-in's EC2 console output.
    assert re.search(
        r"deploykit: 3 hosts, \d+ host keys from EC2's console output -> \S+/known_hosts", out
    ), out[-3000:]
    # The key: the runner passes no SSH material of the caller's to a build (CALLER_SSH_VARIABLES)
    # and no inventory names a key file, so the hosts that serve this commit were reached with the
    # key the deploy stage loaded from SSM into its agent (test_demo_lists_the_mixed_fleet_...).


def test_a_second_demo_passes_without_building_again(second_run):
    assert second_run.returncode == 0, second_run.stderr[-3000:]
    assert "nothing to push" in second_run.stdout
    assert len(PUBLIC_LINE.findall(second_run.stdout)) == 1
