"""Scenario 14: the canary analysis holds the rollout after its first batch and judges it.

The local environment bakes the canary (the first batch: one host) for deploy_canary_bake_seconds
and compares its users' requests with those of the hosts still on the old release, from each
host's nginx access log (playbooks/tasks/canary.yml). Users' requests come through the load
balancer (the front door), as on AWS; the probes a stream sends straight to each host say which
release each host serves, and are not counted by the analysis.

Three cases, each a row of reports/e2e.json:
- a release that passes readiness but answers one request in five with a 500 (fixtures/flaky-release):
  the bake catches it, the canary switches back, the deploy stops, the hosts after it never change;
- a good release with no traffic while the environment waits for enough requests to judge
  (-e deploy_canary_too_few_requests=wait): the bake waits up to its maximum, then stops the
  deploy and switches the canary back, saying it had too few requests;
- the same good release under traffic: it passes its bake and reaches every host, the bake's
  figures in the summary and in every host's deploy record.
"""

from __future__ import annotations

import json

import pytest

from deploykit.request_stream import RequestStream

pytestmark = pytest.mark.e2e

FAULT_CASES = {
    "flaky_deploy": "a ready release failing one request in five is switched back by the bake",
    "unjudged_deploy": "a bake with too few requests, waiting for them, stops and switches back",
    "good_deploy": "a good release passes its bake and reaches every host",
}

ROLLOUT = "Roll out the release"
RECORD = "/var/lib/deploykit/deploy.json"


def _records(fleet) -> dict[str, dict]:
    return {name: json.loads(fleet.sh(name, f"cat {RECORD}")) for name in fleet.names}


def _stream(fleet, request_stream) -> RequestStream:
    """Users' requests through the load balancer (denser than the default: the canary gets a third
    of them, and the analysis needs deploy_canary_min_requests of them in a few seconds), and a
    probe stream to each host that says which release it serves."""
    stream = request_stream(fleet.hosts, front_door=True)
    stream.threads_per_target = 3
    return stream


@pytest.fixture(scope="module")
def serving(fleet):
    """What every host serves when the scenario starts (a scenario before leaves one release)."""
    versions = fleet.versions()
    assert len(set(versions.values())) == 1, f"the fleet does not serve one release: {versions}"
    return next(iter(versions.values()))


@pytest.fixture(scope="module")
def good(releases, serving):
    """A good release that no host serves yet."""
    return releases.v1 if serving != "v1" else releases.v2


@pytest.fixture(scope="module")
def flaky_deploy(ansible, fleet, releases, request_stream, record_requests, serving):
    order = fleet.rollout_order()
    before, records = fleet.snapshot(), _records(fleet)
    with _stream(fleet, request_stream) as stream:
        run = ansible.deploy("v6-flaky", releases.flaky.tag)
    record_requests(stream.result)
    return {
        "canary": order[0],
        "rest": order[1:],
        "run": run,
        "stream": stream.result,
        "before": before,
        "after": fleet.snapshot(),
        "records_before": records,
        "records_after": _records(fleet),
        "versions": fleet.versions(),
    }


def test_the_bake_stops_the_deploy_after_the_canary(flaky_deploy):
    run = flaky_deploy["run"]
    assert run.returncode != 0, run.tail()
    assert run.hosts_in(ROLLOUT) == [flaky_deploy["canary"]]
    assert "The canary failed its bake" in run.output
    assert "5xx rate" in run.output


def test_the_report_says_the_canary_was_switched_back_and_nothing_else_switched(flaky_deploy):
    report = flaky_deploy["run"].output.partition("DEPLOY STOPPED")[2]
    assert f"Switched back by the canary's bake: {flaky_deploy['canary']}" in report
    assert "Switched in this run: none" in report


def test_the_failure_prints_both_sides_figures(flaky_deploy):
    run, canary, rest = flaky_deploy["run"], flaky_deploy["canary"], flaky_deploy["rest"]
    assert f"canary ({canary}): " in run.output
    assert f"baseline ({', '.join(rest)}): " in run.output


def test_only_the_canary_ever_served_the_flaky_release(flaky_deploy):
    versions = flaky_deploy["stream"].versions
    assert versions[flaky_deploy["canary"]]["v6"] > 0, versions
    for host in flaky_deploy["rest"]:
        assert versions[host]["v6"] == 0, versions


def test_the_hosts_after_the_canary_never_changed(flaky_deploy):
    before, after = flaky_deploy["before"], flaky_deploy["after"]
    for host in flaky_deploy["rest"]:
        assert after[host] == before[host]
        assert flaky_deploy["records_after"][host] == flaky_deploy["records_before"][host]


def test_the_canary_serves_its_previous_release_again(flaky_deploy, serving):
    assert flaky_deploy["versions"] == {host: serving for host in flaky_deploy["versions"]}
    canary = flaky_deploy["canary"]
    # Its deploy record still names what it serves: the flaky release was never recorded on it.
    assert flaky_deploy["records_after"][canary] == flaky_deploy["records_before"][canary]


def test_the_only_failed_requests_were_the_flaky_release_s_500s(flaky_deploy):
    stream = flaky_deploy["stream"]
    assert stream.failed > 0, "the flaky release answered no request with a 500: the case proves nothing"
    assert all("HTTP 500" in failure and "one request in five" in failure for failure in stream.failures), (
        stream.failures
    )


@pytest.fixture(scope="module")
def unjudged_deploy(ansible, fleet, good):
    order = fleet.rollout_order()
    before = fleet.snapshot()
    run = ansible.deploy("good-unjudged", good.tag, "-e", "deploy_canary_too_few_requests=wait")
    return {"canary": order[0], "rest": order[1:], "run": run, "before": before, "after": fleet.snapshot()}


def test_too_few_requests_stop_the_deploy_and_say_so(unjudged_deploy, fleet, serving):
    run = unjudged_deploy["run"]
    assert run.returncode != 0, run.tail()
    assert "too few requests to judge" in run.output
    assert run.hosts_in(ROLLOUT) == [unjudged_deploy["canary"]]
    assert fleet.versions() == dict.fromkeys(fleet.names, serving)
    for host in unjudged_deploy["rest"]:
        assert unjudged_deploy["after"][host] == unjudged_deploy["before"][host]


@pytest.fixture(scope="module")
def good_deploy(ansible, fleet, request_stream, record_requests, good):
    with _stream(fleet, request_stream) as stream:
        run = ansible.deploy("good-baked", good.tag)
    record_requests(stream.result)
    return {"run": run, "stream": stream.result, "records": _records(fleet)}


def test_a_good_release_passes_its_bake_and_reaches_every_host(good_deploy, fleet, good):
    run = good_deploy["run"]
    assert run.returncode == 0, run.tail()
    assert "Canary pass" in run.output
    assert fleet.versions() == dict.fromkeys(fleet.names, good.version)


def test_no_request_failed_during_the_good_rollout(good_deploy):
    stream = good_deploy["stream"]
    assert stream.sent > 0
    assert (stream.failed, stream.failures) == (0, [])


def test_every_host_records_the_bake_s_figures(good_deploy, fleet):
    order = fleet.rollout_order()
    for host, record in good_deploy["records"].items():
        canary = record["canary"]
        assert canary["verdict"] == "pass", (host, canary)
        assert canary["canary"]["hosts"] == [order[0]]
        assert canary["canary"]["requests"] >= 1
        assert canary["baseline"]["requests"] >= 1
        assert canary["canary"]["errors"] == 0
