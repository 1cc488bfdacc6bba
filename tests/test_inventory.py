"""The aws_ec2 inventories: one shape for every environment, and the local one against the stand-in.

The local stand-in for AWS is moto (deploykit/standin.py): these tests prove what the inventory
files ask of the EC2 API and how Ansible treats the answers, not how real EC2 answers.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploykit import standin
from deploykit.system import DOCKER, ROOT

ENVIRONMENTS = ("production", "staging", "local")
INVENTORY = ROOT / "inventory"
BIN = Path(sys.executable).parent
HOSTS = {"deploykit-web-1", "deploykit-web-2", "deploykit-web-3"}
# Settings that would change what these tests observe if the caller's environment had them.
_CALLER_SETTINGS = ("ANSIBLE_INVENTORY_CACHE", "ANSIBLE_HOST_KEY_CHECKING", "ANSIBLE_INVENTORY")
# One stand-in per machine: under pytest-xdist (--dist loadgroup) its tests share one worker.
pytestmark = pytest.mark.xdist_group("standin")


def _config(env: str) -> dict[str, Any]:
    return yaml.safe_load((INVENTORY / env / "aws_ec2.yml").read_text())


def _group_vars(env: str, name: str, group: str = "all") -> dict[str, Any]:
    return yaml.safe_load((INVENTORY / env / "group_vars" / group / name).read_text())


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in standin.tool_env().items() if key not in _CALLER_SETTINGS}
    return {**env, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), **extra}


def _ansible(tool: str, *args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / tool), *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


def _listing(inventory: Path = INVENTORY / "local", **env: str) -> dict[str, Any]:
    """`ansible-inventory --list` as data (--yaml --export: no __ansible_unsafe wrappers)."""
    result = _ansible("ansible-inventory", "-i", str(inventory), "--list", "--yaml", "--export", **env)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["all"]


def _hosts(listing: dict[str, Any], group: str = "aws_ec2") -> dict[str, Any]:
    return (listing.get("children", {}).get(group) or {}).get("hosts") or {}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# The files


def test_every_environment_has_the_same_inventory_shape():
    shapes = []
    for env in ENVIRONMENTS:
        config = _config(env)
        config["regions"], config["filters"]["tag:Env"] = "<data>", "<data>"
        shapes.append(config)
    assert shapes[0] == shapes[1] == shapes[2]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_inventory_selects_the_running_instances_of_its_environment(env):
    assert _config(env)["filters"] == {
        "tag:App": "deploykit",
        "tag:Env": env,
        "instance-state-name": "running",
    }


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_inventory_region_is_explicit_and_matches_the_group_vars(env):
    # Without `regions` the plugin would walk every AWS region, asking DescribeRegions first.
    assert _config(env)["regions"] == [_group_vars(env, "environment.yml")["aws_region"]]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_group_vars_name_the_environment(env):
    assert _group_vars(env, "environment.yml")["app_env"] == env


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_hosts_log_in_as_the_debian_ami_user(env):
    assert _group_vars(env, "connection.yml", "aws_ec2")["ansible_user"] == "admin"


def test_every_environment_connects_the_same_way():
    # The environments differ in data only; how SSH reaches and trusts a host is not data, and the
    # local stand-in's hosts are reached the way production's are (deploy key in an agent, host keys
    # from the console): no comment aside, the files hold the same settings.
    production = _group_vars("production", "connection.yml", "aws_ec2")
    assert _group_vars("staging", "connection.yml", "aws_ec2") == production
    assert _group_vars("local", "connection.yml", "aws_ec2") == production


def test_inventory_cache_is_configured_but_left_off():
    config = _config("local")
    assert "cache" not in config  # so ANSIBLE_INVENTORY_CACHE=true can switch it on
    assert config["cache_plugin"] == "ansible.builtin.jsonfile"
    assert config["cache_connection"].startswith(".cache/")


def test_no_environment_names_a_key_file_or_known_hosts_of_its_own():
    # The key comes from an ssh-agent (the deploy stage's, or an operator's) and the host keys from
    # the file DEPLOYKIT_KNOWN_HOSTS names: nothing in the inventory points at trust material.
    connection = _group_vars("local", "connection.yml", "aws_ec2")
    assert "ansible_ssh_private_key_file" not in connection
    assert "IdentitiesOnly" not in connection["ansible_ssh_common_args"]
    assert (
        "lookup('ansible.builtin.env', 'DEPLOYKIT_KNOWN_HOSTS')" in connection["deploykit_known_hosts_file"]
    )


def test_unreachable_endpoint_fails_the_inventory_loudly():
    # Nothing listens on the port: the same answer as moto being down, without stopping it.
    result = _ansible(
        "ansible-inventory",
        "-i",
        "inventory/local",
        "--list",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{_closed_port()}",
    )
    assert result.returncode != 0
    assert "Could not connect to the endpoint URL" in result.stderr
    assert "deploykit-web" not in result.stdout


# ---------------------------------------------------------------------------------------------
# The local inventory against the stand-in's hosts


@pytest.fixture(scope="module")
def fleet():
    """Three stand-in hosts for this module; removed at its end."""
    up = subprocess.run(
        [sys.executable, "-m", "deploykit.standin", "up", "--hosts", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    yield
    subprocess.run(
        [sys.executable, "-m", "deploykit.standin", "down"],
        cwd=ROOT,
        capture_output=True,
        check=False,
        timeout=120,
    )


def _container_ip(name: str) -> str:
    result = subprocess.run(
        [DOCKER, "inspect", "--format", "{{.NetworkSettings.Networks.deploykit.IPAddress}}", name],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def _instance_ids() -> dict[str, str]:
    ec2 = standin.ec2_client()
    found = standin.instances(ec2, "local", ("running",))
    return {standin.tag_value(instance, "Name"): instance["InstanceId"] for instance in found}


@pytest.mark.docker
def test_inventory_lists_exactly_the_standin_hosts(fleet):
    assert set(_hosts(_listing())) == HOSTS


@pytest.mark.docker
def test_hosts_are_grouped_by_role_tag(fleet):
    assert set(_hosts(_listing(), "role_web")) == HOSTS


@pytest.mark.docker
def test_inventory_builds_no_group_that_no_play_targets(fleet):
    # Each group is an expression evaluated per instance at every listing; an environment's file
    # lists one environment, so a group per Env tag would repeat aws_ec2.
    assert set(_listing()["children"]) - {"ungrouped"} == {"aws_ec2", "role_web"}


@pytest.mark.docker
def test_ansible_host_is_the_container_address(fleet):
    hosts = _hosts(_listing())
    assert {name: hosts[name]["ansible_host"] for name in HOSTS} == {
        name: _container_ip(name) for name in HOSTS
    }


@pytest.mark.docker
def test_stopped_instance_leaves_the_inventory(fleet):
    ec2 = standin.ec2_client()
    stopped = _instance_ids()["deploykit-web-2"]
    ec2.stop_instances(InstanceIds=[stopped])
    try:
        assert set(_hosts(_listing())) == HOSTS - {"deploykit-web-2"}
    finally:
        ec2.start_instances(InstanceIds=[stopped])
        ec2.get_waiter("instance_running").wait(InstanceIds=[stopped], WaiterConfig={"Delay": 1})


@pytest.mark.docker
def test_production_inventory_finds_production_instances(fleet):
    # The production file, unchanged, against moto: an instance tagged as production appears in
    # the same groups. No traffic goes to its (moto-made) address: only the inventory is read.
    ec2 = standin.ec2_client(region=_config("production")["regions"][0])
    tags = {**standin.TAGS, "Env": "production", "Name": "prod-web-1"}
    instance = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [{"Key": key, "Value": value} for key, value in tags.items()],
            }
        ],
    )["Instances"][0]
    try:
        listing = _listing(INVENTORY / "production")
        assert set(_hosts(listing, "role_web")) == {"prod-web-1"}
        assert _hosts(listing)["prod-web-1"]["ansible_host"] == instance["PrivateIpAddress"]
    finally:
        ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])


@pytest.mark.docker
def test_ansible_reaches_the_hosts_from_any_working_directory(fleet, tmp_path):
    result = _ansible(
        "ansible", "all", "-i", str(INVENTORY / "local"), "-m", "ansible.builtin.ping", "-o", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert {line.split(" | ")[0] for line in result.stdout.splitlines() if "| SUCCESS" in line} == HOSTS


@pytest.mark.docker
def test_switched_on_cache_answers_without_the_endpoint(fleet, tmp_path):
    # Why the cache stays off for deploys: once filled, it answers even when EC2 cannot. It lives
    # under the working directory's .cache/, here a scratch one.
    inventory = str(INVENTORY / "local")
    filled = _ansible(
        "ansible-inventory", "-i", inventory, "--list", cwd=tmp_path, ANSIBLE_INVENTORY_CACHE="true"
    )
    assert filled.returncode == 0, filled.stderr
    offline = _ansible(
        "ansible-inventory",
        "-i",
        inventory,
        "--list",
        "--yaml",
        "--export",
        cwd=tmp_path,
        ANSIBLE_INVENTORY_CACHE="true",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{_closed_port()}",
    )
    assert offline.returncode == 0, offline.stderr
    assert set(_hosts(yaml.safe_load(offline.stdout)["all"])) == HOSTS
