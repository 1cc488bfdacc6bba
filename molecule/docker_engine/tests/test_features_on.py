"""What the optional features do, on the host that turns them all on."""

from __future__ import annotations

import ipaddress

import pytest
from docker_engine_scenario import FULL, configured, hosts

testinfra_hosts = hosts(FULL)
FULL_CONFIG = configured(FULL)
REGISTRIES = [
    certificate["registry"] for certificate in FULL_CONFIG["docker_engine_registry_ca_certificates"]
]


@pytest.mark.parametrize(
    "certificate",
    FULL_CONFIG["docker_engine_registry_ca_certificates"],
    ids=lambda certificate: certificate["registry"],
)
def test_registry_ca_certificate_is_installed(host, certificate):
    ca_file = host.file(f"/etc/docker/certs.d/{certificate['registry']}/ca.crt")
    assert ca_file.content_string == certificate["content"].strip() + "\n"


@pytest.mark.parametrize(
    "certificate",
    FULL_CONFIG["docker_engine_registry_ca_certificates"],
    ids=lambda certificate: certificate["registry"],
)
def test_registry_ca_certificate_is_read_only_and_owned_by_root(host, certificate):
    # CIS 3.7 and 3.8.
    ca_file = host.file(f"/etc/docker/certs.d/{certificate['registry']}/ca.crt")
    assert (ca_file.user, ca_file.group, ca_file.mode) == ("root", "root", 0o444)


@pytest.mark.parametrize(
    "directory",
    ["/etc/docker/certs.d"] + [f"/etc/docker/certs.d/{registry}" for registry in REGISTRIES],
)
def test_certificate_directory_is_writable_by_root_only(host, directory):
    certs_dir = host.file(directory)
    assert (certs_dir.user, certs_dir.group, certs_dir.mode) == ("root", "root", 0o755)


@pytest.mark.parametrize("registry", FULL_CONFIG["docker_engine_insecure_registries"])
def test_insecure_registry_is_in_effect(docker_info, registry):
    assert docker_info["RegistryConfig"]["IndexConfigs"][registry]["Secure"] is False


def test_registry_mirrors_are_in_effect(docker_info):
    mirrors = [mirror.rstrip("/") for mirror in docker_info["RegistryConfig"]["Mirrors"]]
    assert mirrors == FULL_CONFIG["docker_engine_registry_mirrors"]


def test_new_network_comes_from_the_configured_pool(host):
    pool = FULL_CONFIG["docker_engine_default_address_pools"][0]
    inspect = "docker network inspect --format '{{(index .IPAM.Config 0).Subnet}}' pool-probe"
    host.check_output("docker network create pool-probe")
    try:
        subnet = ipaddress.ip_network(host.check_output(inspect))
    finally:
        host.run("docker network rm pool-probe")
    assert subnet.subnet_of(ipaddress.ip_network(pool["base"]))
    assert subnet.prefixlen == pool["size"]


def test_container_survives_a_daemon_restart(host, test_image):
    state = "docker inspect --format '{{.State.Running}} {{.State.Pid}} {{.State.StartedAt}}' %s"
    host.check_output("docker run -d --name live-restore-probe %s sleep 600", test_image)
    try:
        before = host.check_output(state, "live-restore-probe")
        host.check_output("systemctl restart docker")
        after = host.check_output(state, "live-restore-probe")
    finally:
        host.run("docker rm -f live-restore-probe")
    assert before.startswith("true ")
    assert after == before
