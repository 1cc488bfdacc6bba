"""The CIS Docker Benchmark items the role answers for, each asserted against the host's own settings.

The full host keeps the role's hardened defaults and the minimal host turns them off, so each test
shows its variable deciding the behaviour rather than Docker's own default. The README's "CIS
Docker Benchmark" section names the item behind each test.
"""

from __future__ import annotations

import json

import pytest
from docker_engine_scenario import FULL, MINIMAL, hosts

testinfra_hosts = hosts(FULL, MINIMAL)

# The port a probe container publishes on the host's loopback, as app_deploy publishes a release.
PUBLISHED_PORT = "18080"
# Read from /proc: procps and sysvinit-utils are not on every host image.
DOCKER_PROXY_PIDS = "grep -lx docker-proxy /proc/[0-9]*/comm 2>/dev/null || true"
DOCKERD_ARGS = "tr '\\0' ' ' </proc/$(systemctl show --property MainPID --value docker)/cmdline"


@pytest.fixture(scope="module")
def published_port(host, test_image):
    """A web server in a container on the default bridge, published on 127.0.0.1 as app_deploy does."""
    host.run("docker rm -f published-probe")
    host.check_output(
        "docker run -d --name published-probe -p 127.0.0.1:%s:8080 %s sh -c"
        " 'mkdir /tmp/www && echo published > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www'",
        PUBLISHED_PORT,
        test_image,
    )
    yield PUBLISHED_PORT
    host.run("docker rm -f published-probe")


@pytest.fixture
def bridge_peer(host, test_image):
    """The address of a container on the default bridge, for another container to reach."""
    host.run("docker rm -f icc-peer")
    host.check_output("docker run -d --name icc-peer %s sleep 600", test_image)
    yield host.check_output("docker inspect --format '{{.NetworkSettings.IPAddress}}' icc-peer")
    host.run("docker rm -f icc-peer")


# Section 2: the daemon's configuration.


def test_default_bridge_enables_icc_only_when_configured(host, config):
    # CIS 2.2: the daemon's setting, as the default bridge carries it.
    options = json.loads(host.check_output("docker network inspect --format '{{json .Options}}' bridge"))
    assert options["com.docker.network.bridge.enable_icc"] == str(config["docker_engine_icc_enabled"]).lower()


def test_containers_on_the_default_bridge_reach_each_other_only_with_icc(
    host, config, test_image, bridge_peer
):
    # CIS 2.2: the behaviour itself. The same ping succeeds on the host that allows icc.
    ping = host.run("docker run --rm %s ping -c 1 -W 2 %s", test_image, bridge_peer)
    assert ping.succeeded == config["docker_engine_icc_enabled"]


def test_port_published_on_loopback_answers_from_the_host(host, published_port):
    # What nginx relies on to reach the app, whether the userland proxy runs or not (CIS 2.16).
    fetch = host.run(
        "for attempt in $(seq 50); do"
        " python3 -c 'import sys, urllib.request;"
        ' sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:%s/", timeout=2).read().decode())\''
        " 2>/dev/null && exit 0; sleep 0.2; done; exit 1",
        published_port,
    )
    assert fetch.succeeded, fetch.stderr
    assert fetch.stdout.strip() == "published"


@pytest.mark.usefixtures("published_port")
def test_docker_proxy_runs_only_with_the_userland_proxy(host, config):
    # CIS 2.16: without it, published ports are NAT rules and no docker-proxy process exists.
    running = host.check_output(DOCKER_PROXY_PIDS) != ""
    assert running == config["docker_engine_userland_proxy_enabled"]


def test_container_started_without_options_gets_no_new_privileges_as_configured(host, config, test_image):
    # CIS 2.14: the daemon's default reaches a container that does not ask for it.
    status = host.check_output("docker run --rm %s grep NoNewPrivs /proc/self/status", test_image)
    expected = "1" if config["docker_engine_no_new_privileges_enabled"] else "0"
    assert status.split() == ["NoNewPrivs:", expected]


def test_container_started_without_options_gets_the_daemon_log_driver_and_rotation(host, config, test_image):
    # CIS 2.13: every container logs to the configured driver with the configured options.
    host.run("docker rm -f log-probe")
    host.check_output("docker create --name log-probe %s true", test_image)
    try:
        log_config = json.loads(
            host.check_output("docker inspect --format '{{json .HostConfig.LogConfig}}' log-probe")
        )
    finally:
        host.run("docker rm -f log-probe")
    assert log_config["Type"] == config["docker_engine_log_driver"]
    assert log_config["Config"] == config["docker_engine_log_options"]


def test_daemon_listens_on_no_tcp_socket(host):
    # Why CIS 2.7 (TLS on the daemon's socket) does not apply: only the local Unix socket exists.
    assert "tcp://" not in host.check_output(DOCKERD_ARGS)
    assert "hosts" not in json.loads(host.file("/etc/docker/daemon.json").content_string)


def test_experimental_features_are_off(docker_info):
    # CIS 2.18.
    assert docker_info["ExperimentalBuild"] is False


def test_container_started_without_options_runs_under_a_seccomp_filter(host, test_image):
    # CIS 2.17 and 5.22: Docker's own profile, never disabled (mode 2 is a filter).
    status = host.check_output("docker run --rm %s grep Seccomp: /proc/self/status", test_image)
    assert status.split() == ["Seccomp:", "2"]


# Section 3: the files that configure the daemon.


@pytest.mark.parametrize(
    ("path", "owner", "group", "mode"),
    [
        ("/etc/docker", "root", "root", 0o755),  # CIS 3.5, 3.6
        ("/etc/docker/daemon.json", "root", "root", 0o644),  # CIS 3.17, 3.18
        ("/run/docker.sock", "root", "docker", 0o660),  # CIS 3.15, 3.16
        ("/run/containerd/containerd.sock", "root", "root", 0o660),  # CIS 3.23, 3.24
    ],
)
def test_daemon_file_has_its_owner_and_mode(host, path, owner, group, mode):
    daemon_file = host.file(path)
    assert (daemon_file.user, daemon_file.group) == (owner, group)
    # "Or more restrictive": no permission bit beyond the benchmark's.
    assert daemon_file.mode & ~mode == 0


@pytest.mark.parametrize("unit", ["docker.service", "docker.socket"])
def test_systemd_unit_file_is_writable_by_root_only(host, unit):
    # CIS 3.1 to 3.4, wherever the package installed the unit.
    path = host.check_output("systemctl show --property FragmentPath --value %s", unit)
    unit_file = host.file(path)
    assert (unit_file.user, unit_file.group) == ("root", "root")
    assert unit_file.mode & ~0o644 == 0


def test_environment_file_of_the_daemon_is_writable_by_root_only(host):
    # CIS 3.19 and 3.20, when the package ships /etc/default/docker.
    defaults = host.file("/etc/default/docker")
    if not defaults.exists:
        pytest.skip("no /etc/default/docker on this distro")
    assert (defaults.user, defaults.group) == ("root", "root")
    assert defaults.mode & ~0o644 == 0


# Section 5, as far as the engine decides it.


def test_swarm_mode_is_inactive(docker_info):
    # CIS 5.1.
    assert docker_info["Swarm"]["LocalNodeState"] == "inactive"
