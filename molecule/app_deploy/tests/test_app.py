"""The app answers through nginx on the host's public port with the converged release, to requests
that the load balancer forwards from its HTTPS listener.
"""

from __future__ import annotations

import json

from app_deploy_scenario import IMAGE_REPOSITORY, VERSIONS, get, group_vars, instance

testinfra_hosts = [f"docker://{instance()}"]


def test_app_answers_through_nginx_with_the_converged_release(host_address):
    status, body, _ = get(host_address, "/version.json")
    assert status == 200
    assert json.loads(body)["version"] == VERSIONS[group_vars()["app_deploy_image_tag"]]


def test_app_reports_the_host_it_runs_on(host_address):
    _, body, _ = get(host_address, "/version.json")
    assert json.loads(body)["host"] == instance()


def test_app_reports_the_image_it_was_deployed_from(host_address):
    _, body, _ = get(host_address, "/version.json")
    assert json.loads(body)["image"] == f"{IMAGE_REPOSITORY}:{group_vars()['app_deploy_image_tag']}"


def test_app_sends_hsts_on_the_requests_the_load_balancer_took_over_https(host_address):
    # Django sends HSTS only on requests it takes for secure: X-Forwarded-Proto reached it through nginx.
    _, _, headers = get(host_address, "/version.json")
    assert headers["Strict-Transport-Security"] == f"max-age={60 * 60 * 24 * 365}; includeSubDomains; preload"


def test_app_is_ready_through_nginx(host_address):
    status, body, _ = get(host_address, "/readyz/")
    assert (status, json.loads(body)["status"]) == (200, "ok")


def test_deploy_is_in_the_app_history(host_address):
    status, body, _ = get(host_address, "/")
    assert status == 200
    # The page marks the history row of the release and host that answered.
    assert b'class="current"' in body
