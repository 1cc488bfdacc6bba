"""The local stand-in for AWS: moto plus systemd hosts registered as EC2 instances.

moto stands in for EC2's API here; the hosts, their sshd, Docker volumes and the Ansible runs
against them are real.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploykit import loadbalancer, network, registry, standin
from deploykit.system import DOCKER, ROOT

BIN = Path(sys.executable).parent
HOSTS = ["deploykit-web-1", "deploykit-web-2", "deploykit-web-3"]
_CALLER_SETTINGS = ("ANSIBLE_INVENTORY_CACHE", "ANSIBLE_HOST_KEY_CHECKING", "ANSIBLE_INVENTORY")
# One stand-in per machine: under pytest-xdist (--dist loadgroup) its tests share one worker.
pytestmark = pytest.mark.xdist_group("standin")


def _standin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploykit.standin", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _ansible(
    *args: str, tool: str = "ansible", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Ansible as an operator runs it by hand, with the stand-in's key and known hosts (or `env`'s)."""
    base = {key: value for key, value in standin.tool_env().items() if key not in _CALLER_SETTINGS}
    return subprocess.run(
        [str(BIN / tool), *args],
        cwd=ROOT,
        env={**base, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


def _succeeded(result: subprocess.CompletedProcess[str]) -> set[str]:
    """Hosts that an `ansible -o` run reports as SUCCESS or CHANGED."""
    return {
        line.split(" | ")[0]
        for line in result.stdout.splitlines()
        if " | SUCCESS" in line or " | CHANGED" in line
    }


def _docker(*args: str) -> str:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, check=True).stdout


def _containers(prefix: str = standin.HOST_PREFIX) -> dict[str, dict[str, Any]]:
    """The stand-in's containers whose name starts with `prefix` (default: the hosts)."""
    ids = _docker("ps", "--all", "--quiet", "--filter", "label=org.deploykit.owner=standin").split()
    found = {data["Name"].lstrip("/"): data for data in json.loads(_docker("inspect", *ids))} if ids else {}
    return {name: data for name, data in found.items() if name.startswith(prefix)}


def _ip(data: dict[str, Any]) -> str:
    return data["NetworkSettings"]["Networks"][network.NAME]["IPAddress"]


def _instances(env: str = "local") -> dict[str, dict[str, Any]]:
    found = standin.instances(standin.ec2_client(), env, ("running",))
    return {standin.tag_value(instance, "Name"): instance for instance in found}


@pytest.fixture(scope="module")
def fleet():
    """`up --hosts 3` once for this module; `down` at its end."""
    started = time.monotonic()
    result = _standin("up", "--hosts", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    yield {"seconds": time.monotonic() - started, "output": result.stdout}
    _standin("down")


# ---------------------------------------------------------------------------------------------
# up


def test_env_prints_what_the_aws_tools_need():
    result = _standin("env")
    assert result.returncode == 0, result.stderr
    assert f"export AWS_ENDPOINT_URL=http://127.0.0.1:{standin.MOTO_PORT}" in result.stdout
    assert "export AWS_DEFAULT_REGION=us-east-1" in result.stdout
    assert "export AWS_ACCESS_KEY_ID=" in result.stdout
    assert "export AWS_SECRET_ACCESS_KEY=" in result.stdout


def test_env_writes_the_same_exports_to_the_env_file():
    result = _standin("env")
    assert standin.ENV_FILE.read_text() == result.stdout


@pytest.mark.docker
def test_up_runs_the_requested_hosts(fleet):
    containers = _containers()
    assert sorted(containers) == HOSTS
    assert {data["State"]["Status"] for data in containers.values()} == {"running"}


@pytest.mark.docker
def test_the_load_balancer_runs_beside_the_hosts(fleet):
    assert [data["State"]["Status"] for data in _containers(loadbalancer.CONTAINER).values()] == ["running"]


@pytest.mark.docker
def test_the_hosts_are_the_targets_of_the_load_balancer_s_target_group(fleet):
    elbv2 = standin.client("elbv2")
    [group] = elbv2.describe_target_groups(Names=[standin.TARGET_GROUP])["TargetGroups"]
    health = elbv2.describe_target_health(TargetGroupArn=group["TargetGroupArn"])["TargetHealthDescriptions"]
    registered = {entry["Target"]["Id"] for entry in health}
    assert registered == {instance["InstanceId"] for instance in _instances().values()}
    assert set(loadbalancer.status()["targets"]) == registered


@pytest.mark.docker
def test_the_target_group_has_the_provisioning_role_s_health_check(fleet):
    settings = standin.load_balancer_settings()
    [group] = standin.client("elbv2").describe_target_groups(Names=[standin.TARGET_GROUP])["TargetGroups"]
    assert (
        group["HealthCheckPath"],
        group["HealthCheckIntervalSeconds"],
        group["UnhealthyThresholdCount"],
    ) == (
        settings["aws_load_balancer_health_check_path"],
        settings["aws_load_balancer_health_check_interval_seconds"],
        settings["aws_load_balancer_unhealthy_threshold"],
    )


@pytest.mark.docker
def test_a_target_deregistered_in_moto_leaves_the_load_balancer_at_the_next_up(fleet):
    elbv2 = standin.client("elbv2")
    [group] = elbv2.describe_target_groups(Names=[standin.TARGET_GROUP])["TargetGroups"]
    instance_id = _instances()[HOSTS[0]]["InstanceId"]
    elbv2.deregister_targets(TargetGroupArn=group["TargetGroupArn"], Targets=[{"Id": instance_id}])
    try:
        result = _standin("up", "--hosts", "3")
        assert result.returncode == 0, result.stdout + result.stderr
        assert instance_id not in loadbalancer.status()["targets"]
    finally:
        elbv2.register_targets(TargetGroupArn=group["TargetGroupArn"], Targets=[{"Id": instance_id}])
        _standin("up", "--hosts", "3")
    assert instance_id in loadbalancer.status()["targets"]


@pytest.mark.docker
def test_the_default_fleet_mixes_both_debian_releases(fleet):
    images = {name: data["Config"]["Image"] for name, data in _containers().items()}
    assert images == {
        "deploykit-web-1": "deploykit/host:debian12",
        "deploykit-web-2": "deploykit/host:debian13",
        "deploykit-web-3": "deploykit/host:debian12",
    }


@pytest.mark.docker
def test_each_host_has_its_own_docker_volume(fleet):
    volumes = {
        name: [mount["Name"] for mount in data["Mounts"] if mount["Destination"] == "/var/lib/docker"]
        for name, data in _containers().items()
    }
    assert volumes == {name: [f"{name}-docker"] for name in HOSTS}


@pytest.mark.docker
def test_ansible_pings_every_host_over_ssh(fleet):
    result = _ansible("all", "-i", "inventory/local", "-m", "ansible.builtin.ping", "-o")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _succeeded(result) == set(HOSTS)


@pytest.mark.docker
def test_host_with_an_unrecorded_key_is_refused(fleet, tmp_path):
    # Same key, an empty known_hosts and a control directory of its own (no SSH master to reuse):
    # host key checking must stop the connection.
    (tmp_path / "known_hosts").touch()
    (tmp_path / "id_ed25519").write_bytes(standin.SSH_KEY.read_bytes())
    (tmp_path / "id_ed25519").chmod(0o600)
    # A short directory: a control socket's path must stay under 108 bytes.
    with tempfile.TemporaryDirectory(prefix="dk-cp-", dir="/tmp") as control_dir:
        result = _ansible(
            "deploykit-web-1",
            "-i",
            "inventory/local",
            "-m",
            "ansible.builtin.ping",
            "-o",
            "-e",
            f"ansible_control_path_dir={control_dir}",
            env={"ANSIBLE_PRIVATE_KEY_FILE": str(tmp_path / "id_ed25519"),
                 "DEPLOYKIT_KNOWN_HOSTS": str(tmp_path / "known_hosts")},
        )  # fmt: skip
    assert result.returncode != 0
    assert "Host key verification failed" in result.stdout + result.stderr


@pytest.mark.docker
def test_admin_has_passwordless_sudo(fleet):
    result = _ansible(
        "all", "-i", "inventory/local", "-b", "-m", "ansible.builtin.command", "-a", "id -u", "-o"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert {line.rsplit(" ", 1)[-1] for line in result.stdout.splitlines() if " | CHANGED" in line} == {"0"}


@pytest.mark.docker
def test_known_hosts_holds_each_host_key_at_its_address(fleet):
    entries = [line.split() for line in standin.KNOWN_HOSTS.read_text().splitlines()]
    assert sorted(address for address, _, _ in entries) == sorted(
        _ip(data) for data in _containers().values()
    )
    assert len({key for _, _, key in entries}) == len(HOSTS)


@pytest.mark.docker
def test_hosts_are_registered_as_running_instances_at_their_addresses(fleet):
    addresses = {name: _ip(data) for name, data in _containers().items()}
    instances = _instances()
    assert {name: instance["PrivateIpAddress"] for name, instance in instances.items()} == addresses


@pytest.mark.docker
def test_instances_carry_the_tags_the_inventories_select(fleet):
    for instance in _instances().values():
        tags = {tag["Key"]: tag["Value"] for tag in instance["Tags"]}
        assert {key: tags.get(key) for key in ("App", "Env", "Role")} == {
            "App": "deploykit",
            "Env": "local",
            "Role": "web",
        }


@pytest.mark.docker
def test_instances_sit_in_a_subnet_that_mirrors_the_docker_network(fleet):
    ec2 = standin.ec2_client()
    subnet_ids = {instance["SubnetId"] for instance in _instances().values()}
    subnets = ec2.describe_subnets(SubnetIds=sorted(subnet_ids))["Subnets"]
    assert [subnet["CidrBlock"] for subnet in subnets] == [network.SUBNET]


@pytest.mark.docker
def test_status_reports_each_host_with_its_instance_and_ssh(fleet):
    result = _standin("status")
    assert result.returncode == 0, result.stderr
    lines = {
        line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("deploykit-web-")
    }
    instances = _instances()
    for name, data in _containers().items():
        assert _ip(data) in lines[name]
        assert instances[name]["InstanceId"] in lines[name]
        assert lines[name].endswith("ssh: ok")


@pytest.mark.docker
def test_status_warns_of_an_instance_in_the_local_inventory_with_no_host(fleet):
    # Say a provision run against the stand-in launched one: moto gives it an address that
    # nothing answers at, and the local inventory would list it.
    ec2 = standin.ec2_client()
    tags = [{"Key": key, "Value": value} for key, value in {**standin.TAGS, "Name": "stray-1"}.items()]
    stray = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]
    try:
        result = _standin("status")
    finally:
        ec2.terminate_instances(InstanceIds=[stray])
    assert any(line.startswith("warning: stray-1") and stray in line for line in result.stdout.splitlines())


@pytest.mark.docker
def test_second_up_changes_nothing(fleet):
    before = (_containers(), _instances(), standin.KNOWN_HOSTS.read_text())
    result = _standin("up", "--hosts", "3")
    after = (_containers(), _instances(), standin.KNOWN_HOSTS.read_text())
    assert result.returncode == 0, result.stderr
    assert "nothing changed" in result.stdout
    assert {name: data["Id"] for name, data in after[0].items()} == {
        name: data["Id"] for name, data in before[0].items()
    }
    assert {name: i["InstanceId"] for name, i in after[1].items()} == {
        name: i["InstanceId"] for name, i in before[1].items()
    }
    assert after[2] == before[2]


@pytest.mark.docker
def test_up_registers_the_hosts_again_after_moto_restarts(fleet):
    # moto keeps its state in memory: after a restart (a reboot, say) `up` registers the running
    # hosts anew instead of booting new ones.
    containers = {name: data["Id"] for name, data in _containers().items()}
    assert standin.stop_moto()
    result = _standin("up", "--hosts", "3")
    assert result.returncode == 0, result.stderr
    assert {name: data["Id"] for name, data in _containers().items()} == containers
    assert sorted(_instances()) == HOSTS


@pytest.fixture(scope="module")
def benchmark_instances(fleet):
    result = _standin("up", "--register-only", "20")
    assert result.returncode == 0, result.stdout + result.stderr
    yield
    if standin.moto_answers():  # the down tests below may have stopped moto already
        _standin("up", "--register-only", "0")


@pytest.mark.docker
def test_register_only_adds_instances_without_hosts(benchmark_instances):
    assert len(_instances(standin.BENCH_ENV)) == 20
    assert sorted(_containers()) == HOSTS


@pytest.mark.docker
def test_benchmark_inventory_resolves_the_registered_instances(benchmark_instances):
    result = _ansible(
        "-i", str(standin.BENCH_INVENTORY), "--list", "--yaml", "--export", tool="ansible-inventory"
    )
    assert result.returncode == 0, result.stderr
    hosts = yaml.safe_load(result.stdout)["all"]["children"]["aws_ec2"]["hosts"]
    assert len(hosts) == 20


@pytest.mark.docker
def test_local_inventory_leaves_benchmark_instances_out(benchmark_instances):
    result = _ansible("-i", "inventory/local", "--list", "--yaml", "--export", tool="ansible-inventory")
    assert result.returncode == 0, result.stderr
    assert sorted(yaml.safe_load(result.stdout)["all"]["children"]["aws_ec2"]["hosts"]) == HOSTS


# ---------------------------------------------------------------------------------------------
# down (last: these tests share one `down` of the module's fleet)


@pytest.fixture(scope="module")
def downed(fleet):
    pid = standin.moto_pid()
    assert pid is not None
    result = _standin("down")
    return {"result": result, "moto_pid": pid}


@pytest.mark.docker
def test_down_reports_nothing_left(downed):
    assert downed["result"].returncode == 0, downed["result"].stderr
    assert "no container, volume or moto process left" in downed["result"].stdout


@pytest.mark.docker
def test_down_removes_the_hosts(downed):
    assert _docker("ps", "--all", "--quiet", "--filter", "name=^deploykit-web-").split() == []


@pytest.mark.docker
def test_down_removes_the_load_balancer(downed):
    assert loadbalancer.status()["container"] == "absent"


@pytest.mark.docker
def test_down_removes_the_host_volumes(downed):
    names = _docker("volume", "ls", "--quiet").split()
    assert [name for name in names if name.startswith("deploykit-web-")] == []


@pytest.mark.docker
def test_down_stops_moto(downed):
    try:
        cmdline = Path(f"/proc/{downed['moto_pid']}/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    assert b"moto_server" not in cmdline
    assert not standin.moto_answers()


@pytest.mark.docker
def test_down_leaves_the_platform_running(downed):
    assert subprocess.run([DOCKER, "network", "inspect", network.NAME], capture_output=True).returncode == 0
    assert registry.answers()


@pytest.mark.docker
def test_inventory_fails_loudly_once_moto_is_down(downed):
    result = _ansible("-i", "inventory/local", "--list", tool="ansible-inventory")
    assert result.returncode != 0
    assert "Could not connect to the endpoint URL" in result.stderr


@pytest.mark.docker
def test_status_shows_nothing_after_down(downed):
    result = _standin("status")
    assert "hosts: none" in result.stdout
    assert "moto: not running" in result.stdout
