"""Behaviour every host has, each asserted against that host's own configuration."""

from __future__ import annotations

import json

import pytest
from docker_engine_scenario import FULL, MINIMAL, expected_daemon_json, hosts

testinfra_hosts = hosts(FULL, MINIMAL)

APT_PROXY_FILE = "/etc/apt/apt.conf.d/01docker-engine-proxy"


def test_docker_service_is_running_and_enabled(host):
    service = host.service("docker")
    assert service.is_running
    assert service.is_enabled


def test_docker_info_answers(host):
    assert host.check_output("docker info --format '{{.ServerVersion}}'")


def test_python_sdk_talks_to_the_engine(host):
    assert host.run("python3 -c 'import docker; assert docker.from_env().ping()'").succeeded


def test_daemon_json_holds_exactly_the_configured_settings(host, config):
    daemon_json = host.file("/etc/docker/daemon.json")
    assert (daemon_json.user, daemon_json.group, daemon_json.mode) == ("root", "root", 0o644)
    assert json.loads(daemon_json.content_string) == expected_daemon_json(config)


@pytest.mark.parametrize(
    ("info_key", "variable"),
    [
        ("LiveRestoreEnabled", "docker_engine_live_restore_enabled"),
        ("LoggingDriver", "docker_engine_log_driver"),
    ],
)
def test_running_daemon_uses_the_configured_setting(docker_info, config, info_key, variable):
    assert docker_info[info_key] == config[variable]


def test_running_daemon_uses_overlay2_unless_configured_otherwise(docker_info, config):
    assert docker_info["Driver"] == (config["docker_engine_storage_driver"] or "overlay2")


def test_hardened_container_runs(host, test_image):
    # The options app_deploy runs the application with.
    output = host.check_output(
        "docker run --rm --read-only --tmpfs /tmp --cap-drop ALL"
        " --security-opt no-new-privileges --user 65534:65534 --network none"
        " --memory 64m --cpus 1 --pids-limit 64"
        " %s sh -c 'echo ok > /tmp/probe && cat /tmp/probe'",
        test_image,
    )
    assert output == "ok"


def test_docker_group_holds_exactly_the_configured_users(host, config):
    assert sorted(host.group("docker").members) == sorted(config["docker_engine_users"])


def test_certs_d_holds_exactly_the_configured_registries(host, config):
    certs_d = host.file("/etc/docker/certs.d")
    present = certs_d.listdir() if certs_d.exists else []
    configured_registries = [cert["registry"] for cert in config["docker_engine_registry_ca_certificates"]]
    assert sorted(present) == sorted(configured_registries)


def test_apt_proxy_is_configured_only_when_set(host, config):
    proxy_file = host.file(APT_PROXY_FILE)
    if config["docker_engine_apt_proxy"]:
        assert f'Acquire::http::Proxy "{config["docker_engine_apt_proxy"]}";' in proxy_file.content_string
    else:
        assert not proxy_file.exists
