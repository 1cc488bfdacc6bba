"""Scenario 16: maintenance mode (playbooks/maintenance.yml) while clients keep asking for the app
through the load balancer (which spreads them over every host) and asking every host's probes
straight: once it is on, the app's requests get 503 with the maintenance page and Retry-After, the
probes still answer 200 (the hosts stay in service) and no request fails any other way; a deploy is
refused before it changes anything, naming the hosts, and goes through with
-e deploy_during_maintenance=true, leaving maintenance on; once it is off, every host serves the app
again. Starts from whatever release the fleet serves, the same on every host, and leaves
maintenance off for the scenarios after it.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
from collections.abc import Callable

import pytest

from deploykit import front_door as public_address
from deploykit.request_stream import Reply, RequestStream, StatusError, release_of
from deploykit.system import DOCKER

pytestmark = pytest.mark.e2e

FLAG = "/var/lib/deploykit/maintenance.json"
# edge_proxy's defaults, which the local environment keeps.
RETRY_AFTER = "300"
TITLE = "Down for maintenance"
# What a request stream records for an answer that is the maintenance page.
PAGE = "maintenance page"
FRONT_DOOR = "front door"

# On a host: GET the path from its nginx as the load balancer sends it (its public name, HTTPS in
# front), printing the status, Retry-After and the body.
AS_THE_LOAD_BALANCER = """
import sys, urllib.request, urllib.error
request = urllib.request.Request('http://127.0.0.1' + sys.argv[1],
                                 headers={'Host': sys.argv[2], 'X-Forwarded-Proto': 'https'})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    response = opener.open(request, timeout=10)
except urllib.error.HTTPError as error:
    response = error
print(response.status, response.headers.get('Retry-After', '-'))
sys.stdout.write(response.read().decode(errors='replace'))
"""


def host_page(name: str, path: str) -> tuple[int, str, str]:
    """(status, Retry-After or '-', body) of `path` from the host's nginx, as the load balancer asks."""
    result = subprocess.run(
        [DOCKER, "exec", name, "python3", "-c", AS_THE_LOAD_BALANCER, path, public_address.HOST],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if result.returncode != 0:
        raise StatusError(f"docker exec {name} failed: {result.stderr.strip()[-300:]}")
    head, _, body = result.stdout.partition("\n")
    status, retry_after = head.split()
    return int(status), retry_after, body


def judge_app_answer(status: int, retry_after: str, body: str) -> Reply:
    """The release that answered, or the maintenance page; any other answer is a failure."""
    if status == 503 and TITLE in body:
        if retry_after != RETRY_AFTER:
            raise StatusError(f"the maintenance page came with Retry-After {retry_after!r}")
        return Reply(PAGE)
    return Reply(release_of(status, body)["version"])


def fetch_app(target: str, timeout: float) -> Reply:
    """The app's /version.json through the front door over HTTPS, as users ask it."""
    status, headers, body = public_address.get("/version.json", timeout=timeout)
    reply = judge_app_answer(status, headers.get("retry-after", "-"), body)
    if reply.version != PAGE:
        reply = Reply(reply.version, json.loads(body)["host"])
    return reply


def fetch_probe(fleet) -> Callable[[str, float], Reply]:
    """A host's probe straight from this machine, as the load balancer's health check asks it."""

    def fetch(target: str, timeout: float) -> Reply:
        name, probe = target.split(" ")
        status, body = _http_get(fleet.by_name[name].ip, probe, timeout)
        answer = release_of(status, body)
        return Reply(answer.get("version", answer["status"]))

    return fetch


def _http_get(address: str, path: str, timeout: float) -> tuple[int, str]:
    connection = http.client.HTTPConnection(address, 80, timeout=timeout)
    try:
        connection.request("GET", path, headers={"User-Agent": "deploykit-e2e"})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def maintenance_args(value: str) -> list[str]:
    return ["playbooks/maintenance.yml", "-i", "inventory/local", "-e", f"maintenance={value}"]


def flags(fleet) -> dict[str, bool]:
    return {
        name: fleet.sh(name, f"test -e {FLAG} && echo on || echo off").strip() == "on" for name in fleet.names
    }


def records(fleet) -> dict[str, str]:
    """Each host's maintenance flag: when and by whom maintenance began."""
    return {name: fleet.sh(name, f"cat {FLAG}") for name in fleet.names}


@pytest.fixture(scope="module")
def serving(fleet, releases):
    """The release every host serves when the scenario starts, and its image tag."""
    versions = set(fleet.versions().values())
    assert len(versions) == 1, f"the hosts serve different releases: {fleet.versions()}"
    version = versions.pop()
    tags = {
        release.version: release.tag
        for release in (
            releases.v1,
            releases.v2,
            releases.unready,
            releases.failing_migration,
            releases.large,
        )
    }
    return version, tags[version]


@pytest.fixture(scope="module")
def bad_value(ansible, fleet):
    run = ansible.run("maintenance-bad-value", maintenance_args("maybe"))
    return run, flags(fleet)


@pytest.fixture(scope="module")
def scenario(ansible, fleet, serving, record_requests, wait_for, bad_value):
    """Maintenance on, two deploys, maintenance off, all under the two request streams."""
    version, tag = serving
    app_targets = [FRONT_DOOR]
    probe_targets = [f"{name} {probe}" for name in fleet.names for probe in ("/healthz/", "/readyz/")]
    # The playbooks run on the same machine: a pace that sees every phase many times over and
    # leaves them the CPU (a probe each 0.1 s per host and probe, the app 10 times a second).
    app_stream = RequestStream(app_targets, fetch_app, threads_per_target=1, interval=0.1)
    probe_stream = RequestStream(probe_targets, fetch_probe(fleet), threads_per_target=1, interval=0.1)
    seen: dict[str, object] = {}

    def answered(what: str, count: int, since: dict[str, int] | None = None) -> bool:
        return all(
            app_stream.result.versions[target][what] - (since or {}).get(target, 0) >= count
            for target in app_targets
        )

    with app_stream, probe_stream:
        wait_for(lambda: answered(version, 3), timeout=60, what="every target to answer with the app")
        seen["on"] = ansible.run("maintenance-on", maintenance_args("on"))
        seen["flags_on"] = flags(fleet)
        seen["records_on"] = records(fleet)
        seen["pages_on"] = {name: host_page(name, "/version.json") for name in fleet.names}
        seen["front_door_on"] = public_address.get("/", timeout=10)
        seen["status_on"] = ansible.run(
            "status-in-maintenance", ["playbooks/status.yml", "-i", "inventory/local"]
        )
        wait_for(lambda: answered(PAGE, 5), timeout=60, what="every target to answer with the page")

        before = fleet.snapshot()
        seen["refused"] = ansible.deploy("deploy-in-maintenance", tag)
        seen["snapshots"] = (before, fleet.snapshot())

        # The same release, every host converged (edge_proxy applied again, the smoke check through
        # nginx): what a deploy through maintenance does besides the switch, which maintenance does
        # not touch. All hosts in one batch: the release does not change, and it is quicker.
        seen["through"] = ansible.deploy(
            "deploy-through-maintenance",
            tag,
            "-e",
            "deploy_during_maintenance=true",
            "-e",
            "deploy_converge=true",
            "-e",
            "deploy_serial=100%",
        )
        seen["flags_after_deploy"] = flags(fleet)
        seen["pages_after_deploy"] = {name: host_page(name, "/version.json")[0] for name in fleet.names}

        seen["on_again"] = ansible.run("maintenance-on-again", maintenance_args("on"))
        seen["records_on_again"] = records(fleet)

        before_off = {target: app_stream.result.versions[target][version] for target in app_targets}
        seen["off"] = ansible.run("maintenance-off", maintenance_args("off"))
        seen["flags_off"] = flags(fleet)
        wait_for(
            lambda: answered(version, 3, since=before_off),
            timeout=60,
            what="every target to answer with the app again",
        )
    record_requests(app_stream.result)
    record_requests(probe_stream.result)
    seen["app"], seen["probes"] = app_stream.result, probe_stream.result
    seen["after"] = {name: host_page(name, "/version.json") for name in fleet.names}
    return seen


def test_a_value_other_than_on_or_off_is_refused(bad_value, fleet):
    run, flags_after = bad_value
    assert run.returncode != 0
    assert "maintenance=maybe is neither on nor off" in run.output, run.tail()
    assert flags_after == dict.fromkeys(fleet.names, False)


def test_maintenance_on_puts_every_host_in_maintenance(scenario, fleet):
    assert scenario["on"].returncode == 0, scenario["on"].tail()
    assert scenario["flags_on"] == dict.fromkeys(fleet.names, True)
    for name, (status, retry_after, body) in scenario["pages_on"].items():
        assert (status, retry_after) == (503, RETRY_AFTER), f"{name}: {status} {body[:300]}"
        assert TITLE in body


def test_the_flag_records_since_when_and_by_whom(scenario, fleet, ansible):
    for name, text in scenario["records_on"].items():
        record = json.loads(text)
        assert record["by"] == ansible.actor, name
        assert record["since"].endswith("Z"), name


def test_status_shows_every_host_in_maintenance_since_it_began(scenario, fleet):
    run = scenario["status_on"]
    assert run.returncode == 0, run.tail()
    for name in fleet.names:
        since = json.loads(scenario["records_on"][name])["since"]
        assert re.search(rf"{re.escape(name)} .* on since {re.escape(since)}", run.stdout), run.tail()


def test_turning_maintenance_on_again_changes_nothing(scenario, fleet):
    run = scenario["on_again"]
    assert run.returncode == 0, run.tail()
    assert {name: run.recap()[name]["changed"] for name in fleet.names} == dict.fromkeys(fleet.names, 0)
    assert scenario["records_on_again"] == scenario["records_on"]


def test_the_public_address_answers_the_page_with_retry_after(scenario):
    status, headers, body = scenario["front_door_on"]
    assert (status, headers.get("retry-after")) == (503, RETRY_AFTER), body[:300]
    assert headers["content-type"].startswith("text/html")
    assert TITLE in body


def test_app_requests_get_the_app_or_the_page_and_nothing_else(scenario, fleet, serving):
    version, _ = serving
    app = scenario["app"]
    assert (app.failed, app.failures) == (0, []), f"{app.failed} of {app.sent} app requests failed"
    # The stream saw the app, then the page, then the app again: it covered every phase, and the
    # load balancer sent it to every host.
    assert sorted(app.versions[FRONT_DOOR]) == sorted([version, PAGE]), app.versions
    assert set(app.answered_by) == set(fleet.names), app.answered_by


def test_probes_answer_200_throughout(scenario):
    probes = scenario["probes"]
    assert probes.sent > 0
    assert (probes.failed, probes.failures) == (0, []), f"{probes.failed} of {probes.sent} probes failed"
    assert all(PAGE not in counts for counts in probes.versions.values())


def test_a_deploy_is_refused_before_any_host_changes(scenario, fleet):
    run = scenario["refused"]
    before, after = scenario["snapshots"]
    assert run.returncode != 0
    assert after == before
    # The refusal names every host in maintenance and the way through.
    message = run.output[run.output.index("Maintenance mode is on") :]
    for name in fleet.names:
        assert name in message, run.tail()
    assert "deploy_during_maintenance=true" in message
    assert "maintenance=off" in message
    assert "Apply the database migrations" not in run.output
    assert "Roll out the release" not in run.output


def test_a_deploy_told_to_goes_through_and_leaves_maintenance_on(scenario, fleet):
    run = scenario["through"]
    assert run.returncode == 0, run.tail()
    # Every host went through the rollout (converge: edge_proxy applied again, smoke check passed).
    assert sorted(run.hosts_in("Roll out the release")) == sorted(fleet.names)
    assert scenario["flags_after_deploy"] == dict.fromkeys(fleet.names, True)
    assert scenario["pages_after_deploy"] == dict.fromkeys(fleet.names, 503)


def test_maintenance_off_serves_the_app_on_every_host_again(scenario, fleet, serving):
    version, _ = serving
    assert scenario["off"].returncode == 0, scenario["off"].tail()
    assert scenario["flags_off"] == dict.fromkeys(fleet.names, False)
    for name, (status, retry_after, body) in scenario["after"].items():
        assert (status, retry_after) == (200, "-"), f"{name}: {status} {body[:300]}"
        assert json.loads(body)["version"] == version
