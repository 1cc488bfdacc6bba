"""Maintenance mode of edge_proxy's site: the flag file on → 503, the page and Retry-After for the
app's paths, the probes still answering; the flag gone → the app again. The flag is written here
as roles/edge_proxy/tasks/maintenance.yml writes it (tests/e2e/test_16_maintenance.py runs the
playbook itself)."""

from __future__ import annotations

import json

import pytest
from default_scenario import VERSION_A, instance, request

testinfra_hosts = [f"docker://{instance()}"]

FLAG = "/var/lib/deploykit/maintenance.json"
# edge_proxy's defaults: the scenario keeps them.
RETRY_AFTER = "300"
TITLE = b"Down for maintenance"

# Run on the host: the site over loopback as the host's own client, printing status and Retry-After.
LOOPBACK_REQUEST = """
import ssl, sys, urllib.request, urllib.error
headers = dict(header.split(': ', 1) for header in sys.argv[1:])
request = urllib.request.Request('https://127.0.0.1/version.json', headers=headers)
try:
    response = urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=5)
except urllib.error.HTTPError as error:
    response = error
print(response.status, response.headers.get('Retry-After'))
"""


@pytest.fixture
def maintenance(host):
    """Maintenance mode on for one test, off again afterwards."""
    record = json.dumps({"since": "2026-12-08T00:00:00Z", "by": "molecule"})
    host.run_expect([0], "printf '%%s\\n' %s > %s", record, FLAG)
    yield
    host.run_expect([0], f"rm -f {FLAG}")


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_app_paths_answer_503_with_the_page_in_maintenance(
    maintenance, host_address, site_certificate, method
):
    status, body, headers = request(host_address, "/version.json", tls_ca=site_certificate, method=method)
    assert status == 503
    assert headers["retry-after"] == RETRY_AFTER
    assert headers["content-type"].startswith("text/html")
    if method != "HEAD":
        assert TITLE in body
        assert VERSION_A.encode() not in body


def test_maintenance_answer_is_the_same_with_a_forwarded_https_proto(
    maintenance, host_address, site_certificate
):
    # As the load balancer sends it when it terminates TLS: the app's HTTPS redirect never runs.
    status, body, headers = request(
        host_address, "/", tls_ca=site_certificate, headers={"X-Forwarded-Proto": "https"}
    )
    assert (status, headers["retry-after"]) == (503, RETRY_AFTER)
    assert TITLE in body


def test_plain_http_still_redirects_to_https_in_maintenance(maintenance, host_address):
    status, _, headers = request(host_address, "/version.json")
    assert status == 301
    assert headers["location"] == f"https://{host_address}/version.json"


@pytest.mark.parametrize("probe", ["/healthz/", "/readyz/"])
def test_probes_answer_200_in_maintenance(maintenance, host_address, site_certificate, probe):
    status, body, headers = request(host_address, probe, tls_ca=site_certificate)
    assert status == 200
    assert "retry-after" not in headers
    assert json.loads(body)["status"] == "ok"


def test_host_own_requests_pass_the_page_only_when_they_ask(maintenance, host):
    bypass = "X-Deploykit-Maintenance-Bypass: 1"
    asked = host.check_output("python3 -c %s %s %s", LOOPBACK_REQUEST, "Host: localhost", bypass)
    not_asked = host.check_output("python3 -c %s %s", LOOPBACK_REQUEST, "Host: localhost")
    assert asked == "200 None"
    assert not_asked == f"503 {RETRY_AFTER}"


def test_clients_cannot_pass_the_page_by_asking(maintenance, host_address, site_certificate):
    status, _, _ = request(
        host_address,
        "/version.json",
        tls_ca=site_certificate,
        headers={"X-Deploykit-Maintenance-Bypass": "1"},
    )
    assert status == 503


def test_app_answers_again_once_maintenance_is_off(maintenance, host, host_address, site_certificate):
    host.run_expect([0], f"rm -f {FLAG}")
    status, body, headers = request(host_address, "/version.json", tls_ca=site_certificate)
    assert status == 200
    assert "retry-after" not in headers
    assert json.loads(body)["version"] == VERSION_A
