"""The whole deploy on a fresh host: Docker, nginx with TLS, the release behind it."""

from __future__ import annotations

import json

from default_scenario import VERSION_A, instance, request

testinfra_hosts = [f"docker://{instance()}"]


def test_docker_engine_is_running(host):
    assert host.service("docker").is_running


def test_app_answers_over_https_with_the_deployed_release(host_address, site_certificate):
    status, body, _ = request(host_address, "/version.json", tls_ca=site_certificate)
    assert status == 200
    assert json.loads(body)["version"] == VERSION_A


def test_plain_http_is_redirected_to_https(host_address):
    status, _, headers = request(host_address, "/version.json?x=1")
    assert status == 301
    assert headers["location"] == f"https://{host_address}/version.json?x=1"


def test_app_knows_the_request_came_over_https(host_address, site_certificate):
    # Django sends HSTS only on requests it takes for secure: nginx's X-Forwarded-Proto reached it.
    _, _, headers = request(host_address, "/", tls_ca=site_certificate)
    assert "strict-transport-security" in headers


def test_deploy_is_in_the_app_history(host_address, site_certificate):
    status, body, _ = request(host_address, "/", tls_ca=site_certificate)
    assert status == 200
    assert b'class="current"' in body


def test_env_file_is_readable_by_root_only(host, release_state):
    env_file = host.file(release_state["current"]["env_file"])
    assert (env_file.user, env_file.group, env_file.mode) == ("root", "root", 0o600)


def test_release_container_is_hardened(host, release_state):
    inspect = json.loads(host.check_output(f"docker inspect {release_state['current']['container']}"))[0]
    assert inspect["Config"]["User"] not in ("", "0", "root")
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    assert [cap.upper() for cap in inspect["HostConfig"]["CapDrop"]] == ["ALL"]


def test_nginx_upstream_points_at_the_running_release(host, release_state):
    current = release_state["current"]
    assert host.check_output("readlink /var/lib/deploykit/upstream.sock") == current["socket"]
    assert current["socket"] == f"/var/lib/deploykit/app/sockets/{current['release']}/app.sock"
    assert host.docker(current["container"]).is_running


def test_registry_login_used_the_static_password(host):
    auths = json.loads(host.file("/root/.docker/config.json").content_string)["auths"]
    assert "172.30.0.1:5443" in auths


def test_migrations_ran_in_a_one_off_container_that_is_gone(host):
    # converge's first play ran them (tasks_from: migrate); /readyz/ answering 200 says they applied.
    assert host.run("docker container inspect app-migrate").rc != 0
