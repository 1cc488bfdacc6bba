"""What -i accepts: a path that does not exist is refused with the environments there are
(plugins/inventory/deploy_missing_inventory.py), and every inventory that exists parses as it did
without that plugin.

The environments' aws_ec2 inventories are read from a moto server of this module's own (never the
stand-in's), holding one instance of the local environment: these tests prove how Ansible picks a
plugin for each source, not how EC2 answers.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import boto3
import pytest

from deploykit.system import ROOT

BIN = Path(sys.executable).parent
INVENTORY = ROOT / "inventory"
PLUGIN = ROOT / "plugins" / "inventory" / "deploy_missing_inventory.py"
# Ansible's own inventory plugins, as ansible.cfg enables them before the project's.
ANSIBLE_DEFAULTS = "host_list, script, auto, yaml, ini, toml"
# The environments as the plugin must find them: the directories of inventory/ with an aws_ec2.yml.
ENVIRONMENTS = sorted(path.parent.name for path in INVENTORY.glob("*/aws_ec2.yml"))
REFUSAL = (
    "inventory/locl does not exist. The environments are {environments}: "
    "pass -i inventory/<environment>, e.g. -i inventory/local."
).format(environments=", ".join(ENVIRONMENTS))
# moto takes any key; this one is not a secret.
KEY = "testing"
_KEYS = {"aws_access_key_id": KEY, "aws_secret_access_key": KEY}


def _ansible(tool: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # The caller's Ansible settings and AWS account must not reach these runs.
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "AWS_"))
    }
    environment.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), PYTHONWARNINGS="ignore", **env)
    return subprocess.run(
        [str(BIN / tool), *args],
        cwd=ROOT, env=environment, capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip


def _aws(endpoint: str) -> dict[str, str]:
    """The settings that send the aws_ec2 inventories to `endpoint` (moto, or a closed port)."""
    return {
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": KEY,
        "AWS_MAX_ATTEMPTS": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }  # fmt: skip


def _load_plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_missing_inventory", PLUGIN)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ec2_endpoint(moto_server, request: pytest.FixtureRequest) -> str:
    """A moto of this module's own with one running web instance of the local environment."""
    endpoint = moto_server(request)
    ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1", **_KEYS)
    tags = [{"Key": "App", "Value": "deploykit"}, {"Key": "Env", "Value": "local"}]
    tags += [{"Key": "Role", "Value": "web"}, {"Key": "Name", "Value": "deploykit-web-1"}]
    ec2.run_instances(
        ImageId="ami-00000000000000000", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )  # fmt: skip
    return endpoint


def test_the_environments_are_the_ones_the_repository_has():
    # The test's own reading; the plugin computes them the same way (tested below on a tree of its own).
    assert ENVIRONMENTS == ["local", "production", "staging"]


def test_a_mistyped_inventory_path_is_refused_by_the_playbook_with_the_environments():
    run = _ansible("ansible-playbook", "deploy.yml", "-i", "inventory/locl", "-e", "app_deploy_image_tag=abc")
    assert run.returncode != 0
    assert f"with 'deploy_missing_inventory' plugin: {REFUSAL}" in run.stderr, run.stderr
    # Ansible's own error stays, naming the source as it resolved it.
    assert f"Completely failed to parse inventory source {INVENTORY / 'locl'}" in run.stderr
    assert "PLAY [" not in run.stdout


def test_a_mistyped_inventory_path_is_refused_by_ansible_inventory_with_the_environments():
    run = _ansible("ansible-inventory", "-i", "inventory/locl", "--graph")
    assert run.returncode != 0
    assert REFUSAL in run.stderr, run.stderr


def test_a_path_outside_the_repository_is_named_as_given():
    run = _ansible("ansible-inventory", "-i", "/nonexistent/hosts", "--graph")
    assert run.returncode != 0
    assert "/nonexistent/hosts does not exist. The environments are" in run.stderr, run.stderr


def test_the_plugin_claims_no_path_that_exists_and_no_host_list():
    plugin = _load_plugin().InventoryModule()
    existing = [INVENTORY, *INVENTORY.glob("*"), *INVENTORY.glob("*/aws_ec2.yml")]
    assert [str(path) for path in existing if plugin.verify_file(str(path))] == []
    assert not plugin.verify_file("web1,web2")
    assert not plugin.verify_file("localhost,")
    assert plugin.verify_file(str(INVENTORY / "locl"))


def test_the_plugin_lists_the_directories_that_hold_an_aws_ec2_inventory(tmp_path):
    for name in ("beta", "alpha"):
        (tmp_path / "inventory" / name).mkdir(parents=True)
        (tmp_path / "inventory" / name / "aws_ec2.yml").write_text("plugin: amazon.aws.aws_ec2\n")
    (tmp_path / "inventory" / "scratch").mkdir()
    (tmp_path / "inventory" / "controller.yml").write_text("all: {}\n")
    assert _load_plugin().environments(tmp_path) == ["alpha", "beta"]


@pytest.mark.parametrize(
    "source",
    ["inventory/controller.yml", "inventory/local", "inventory/production", "inventory/staging", "inventory"],
)
def test_the_inventories_that_exist_parse_as_without_the_plugin(ec2_endpoint, source):
    aws = _aws(ec2_endpoint)
    listing = ["-i", source, "--list", "--export"]
    with_plugin = _ansible("ansible-inventory", *listing, **aws)
    without = _ansible("ansible-inventory", *listing, ANSIBLE_INVENTORY_ENABLED=ANSIBLE_DEFAULTS, **aws)
    assert with_plugin.returncode == 0, with_plugin.stderr
    assert (with_plugin.stdout, with_plugin.stderr) == (without.stdout, without.stderr)
    assert "deploy_missing_inventory" not in with_plugin.stderr


def test_the_local_inventory_still_finds_its_hosts(ec2_endpoint):
    run = _ansible("ansible-inventory", "-i", "inventory/local", "--graph", **_aws(ec2_endpoint))
    assert run.returncode == 0, run.stderr
    assert "|--@role_web:\n  |  |--deploykit-web-1" in run.stdout, run.stdout


def test_an_environment_that_cannot_reach_aws_still_fails_as_before():
    # unparsed_is_failed: the aws_ec2 source fails loudly, and the plugin does not take it for a typo.
    run = _ansible("ansible-inventory", "-i", "inventory/local", "--list", **_aws("http://127.0.0.1:1"))
    assert run.returncode != 0
    assert f"Completely failed to parse inventory source {INVENTORY / 'local' / 'aws_ec2.yml'}" in run.stderr
    assert "deploy_missing_inventory" not in run.stderr
