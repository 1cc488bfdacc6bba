"""Production parity: the local environment is production's configuration with only names,
endpoints, addresses, sizes and trust material replaced.

How every environment is deployed (the app's settings, the deploy's behaviour) is written once, in
playbooks/group_vars/all; an environment's inventory holds only what differs. These tests list
every allowed difference between inventory/local and inventory/production with its reason, and fail
on any other, so that a local test can never pass because the local environment relaxed a setting
that production keeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from deploykit import loadbalancer, network
from deploykit.system import ROOT

INVENTORY = ROOT / "inventory"
SHARED = ROOT / "playbooks" / "group_vars"
ENVIRONMENTS = ("production", "staging", "local")

# (group, variable): why it may differ between inventory/local and inventory/production.
ALLOWED_DIFFERENCES = {
    ("all", "app_env"): "name: which environment this is",
    ("all", "aws_region"): "endpoint: moto answers in its default region",
    ("all", "app_public_url"): "name and address: the stand-in's load balancer on this machine's loopback",
    ("all", "app_load_balancer_cidrs"): "address: the load balancer container instead of the ALB's subnets",
    ("all", "app_deploy_image_repository"): "endpoint: the registry stand-in instead of ECR",
    ("all", "docker_engine_registry_ca_certificates"): "CA: the registry stand-in's is the project CA",
    ("all", "docker_engine_apt_proxy"): "endpoint: the platform's apt cache, for the region's mirror",
    ("all", "app_gunicorn_workers"): "size: hosts are containers sharing this machine's two cores",
    ("all", "app_deploy_memory"): "size: hosts are containers sharing this machine's memory",
    # CloudWatch Logs has no stand-in here (moto's logs API takes no agent's lines): the hosts keep
    # the daemon's rotated json-file, which `docker logs` and the readiness report read either way.
    ("all", "app_deploy_log_driver"): "endpoint: CloudWatch Logs instead of the hosts' own json-file",
    ("all", "app_deploy_log_options"): "endpoint: the environment's log group and region",
    ("all", "deploy_canary_bake_seconds"): "size: seconds of test traffic, not minutes of users",
    ("all", "deploy_canary_bake_max_seconds"): "size: the same, when a bake waits for requests",
    ("all", "deploy_canary_min_requests"): "size: test traffic's requests in seconds",
    # SSH is not among them: every environment's controller logs in with the deploy key in an
    # ssh-agent (from SSM) and the host keys EC2's console shows (buildspec-deploy.yml).
}

# Settings whose production value is the safe one; no environment file may set them.
PRODUCTION_ONLY_SETTINGS = (
    "DJANGO_DEBUG",
    "DJANGO_SECURE_SSL_REDIRECT",
    "DJANGO_SECURE_HSTS_SECONDS",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "DJANGO_SECURE_HSTS_PRELOAD",
    "DJANGO_SESSION_COOKIE_SECURE",
    "DJANGO_CSRF_COOKIE_SECURE",
)


def _variables(directory: Path) -> dict[tuple[str, str], Any]:
    """Every variable that a group_vars directory defines, by (group, name)."""
    found: dict[tuple[str, str], Any] = {}
    for path in sorted(directory.rglob("*.yml")):
        group = path.relative_to(directory).parts[0].removesuffix(".yml")
        for name, value in (yaml.safe_load(path.read_text()) or {}).items():
            assert (group, name) not in found, f"{group}/{name} is defined twice in {directory}"
            found[group, name] = value
    return found


def _environment(env: str) -> dict[tuple[str, str], Any]:
    return _variables(INVENTORY / env / "group_vars")


def _differences(first: str, second: str) -> set[tuple[str, str]]:
    one, other = _environment(first), _environment(second)
    return {key for key in one.keys() | other.keys() if one.get(key, "<unset>") != other.get(key, "<unset>")}


def test_local_differs_from_production_only_where_allowed():
    unexpected = _differences("local", "production") - ALLOWED_DIFFERENCES.keys()
    assert not unexpected, (
        f"inventory/local differs from inventory/production in {sorted(unexpected)}: change how every "
        "environment deploys in playbooks/group_vars/all, or add the variable to ALLOWED_DIFFERENCES "
        "only if it is a name, endpoint, address, size or trust material"
    )


def test_every_allowed_difference_is_one():
    # A stale entry would allow a difference that nobody needs any more.
    assert ALLOWED_DIFFERENCES.keys() - _differences("local", "production") == set()


def test_staging_differs_from_production_only_in_names():
    assert _differences("staging", "production") == {("all", "app_env"), ("all", "app_public_url")}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_no_environment_sets_what_every_environment_shares(env):
    # The playbooks' group_vars/all win over an inventory's group_vars/all: a value set there
    # would be silently ignored, and look like a difference that is not one.
    shared = {name for _group, name in _variables(SHARED)}
    assert shared & {name for _group, name in _environment(env)} == set()


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_no_environment_relaxes_a_production_security_setting(env):
    text = "\n".join(path.read_text() for path in (INVENTORY / env).rglob("*.yml"))
    assert [setting for setting in PRODUCTION_ONLY_SETTINGS if setting in text] == []


def test_the_shared_app_environment_keeps_the_production_security_settings():
    app_env = _variables(SHARED)["all", "app_deploy_env"]
    assert [setting for setting in PRODUCTION_ONLY_SETTINGS if setting in app_env] == []


def test_the_app_allows_exactly_the_public_host_name():
    shared = _variables(SHARED)
    assert shared["all", "app_deploy_env"]["DJANGO_ALLOWED_HOSTS"] == "{{ deploy_public_host }}"
    assert "app_public_url" in shared["all", "deploy_public_host"]


def test_local_load_balancer_address_is_the_stand_in_s():
    assert _environment("local")["all", "app_load_balancer_cidrs"] == [f"{network.LB_ADDRESS}/32"]


def test_local_public_address_is_where_the_stand_in_s_load_balancer_listens():
    assert _environment("local")["all", "app_public_url"] + "/" == loadbalancer.HTTPS_URL
