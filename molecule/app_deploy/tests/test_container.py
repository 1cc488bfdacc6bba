"""The release container is hardened and labelled with what it runs."""

from __future__ import annotations

import pytest
from app_deploy_scenario import instance

testinfra_hosts = [f"docker://{instance()}"]


def test_container_runs_as_a_non_root_user(host, serving):
    assert serving["Config"]["User"] not in ("", "0", "root", "0:0")
    assert host.check_output(f"docker exec {serving['Name'].lstrip('/')} id -u") != "0"


def test_container_root_filesystem_is_read_only(host, serving):
    assert serving["HostConfig"]["ReadonlyRootfs"] is True
    assert host.run(f"docker exec {serving['Name'].lstrip('/')} touch /app/written-at-run-time").rc != 0


def test_container_tmp_is_a_writable_tmpfs(host, serving):
    assert "/tmp" in serving["HostConfig"]["Tmpfs"]
    assert host.run(f"docker exec {serving['Name'].lstrip('/')} touch /tmp/scratch").rc == 0


def test_container_drops_every_capability(host, serving):
    assert [cap.upper() for cap in serving["HostConfig"]["CapDrop"]] == ["ALL"]
    assert not serving["HostConfig"]["CapAdd"]
    status = host.check_output(f"docker exec {serving['Name'].lstrip('/')} grep CapEff /proc/1/status")
    assert status.split()[-1] == "0000000000000000"


def test_container_cannot_gain_privileges(serving):
    assert any(opt.startswith("no-new-privileges") for opt in serving["HostConfig"]["SecurityOpt"])


def test_container_memory_is_limited(serving):
    assert serving["HostConfig"]["Memory"] == 512 * 1024 * 1024


def test_container_cpu_is_limited(serving):
    # app_deploy_cpus: 1.0, as a CFS quota (NanoCpus), not a pinning.
    assert serving["HostConfig"]["NanoCpus"] == 1_000_000_000


def test_container_restarts_unless_stopped(serving):
    assert serving["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"


def test_container_log_is_rotated(serving):
    log = serving["HostConfig"]["LogConfig"]
    assert log["Type"] == "json-file"
    assert {"max-size", "max-file"} <= set(log["Config"])


def test_container_mounts_its_own_socket_directory_only(serving):
    mounts = [(mount["Source"], mount["Destination"], mount["RW"]) for mount in serving["Mounts"]]
    release = serving["Config"]["Labels"]["org.deploykit.release"]
    assert mounts == [(f"/var/lib/deploykit/app/sockets/{release}", "/run/app", True)]


def test_the_release_publishes_no_port_of_the_host(serving):
    assert not serving["HostConfig"]["PortBindings"]


def test_only_the_serving_release_has_a_socket_directory(host, serving):
    release = serving["Config"]["Labels"]["org.deploykit.release"]
    assert host.file("/var/lib/deploykit/app/sockets").listdir() == [release]


def test_socket_directory_belongs_to_the_containers_user(host, serving):
    release = serving["Config"]["Labels"]["org.deploykit.release"]
    directory = host.file(f"/var/lib/deploykit/app/sockets/{release}")
    assert (directory.uid, directory.gid, directory.mode) == (10001, 10001, 0o755)
    assert serving["Config"]["User"] == "10001:10001"


@pytest.mark.parametrize("path", ["/var/lib/deploykit/app", "/var/lib/deploykit/app/sockets"])
def test_the_directories_above_it_belong_to_root(host, path):
    directory = host.file(path)
    assert (directory.user, directory.group, directory.mode) == ("root", "root", 0o755)


def test_container_labels_name_the_release_it_runs(serving, release_state):
    labels = serving["Config"]["Labels"]
    current = release_state["current"]
    assert labels["org.deploykit.release"] == current["release"]
    assert labels["org.deploykit.image-id"] == serving["Image"] == current["image_id"]
    assert labels["org.deploykit.image"] == current["image"]
