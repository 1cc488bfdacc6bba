"""Scenario 9: the app's secrets come from SSM into its containers, and into nothing else.

A verbose (-v) deploy of v2 switches every host, so every task that handles the secrets runs and
prints its result; then the secrets are looked for in its output and on the hosts.
"""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.e2e

SECRETS = ("/deploykit/local/DJANGO_SECRET_KEY", "/deploykit/local/DATABASE_URL")


@pytest.fixture(scope="module")
def secrets(ssm):
    """The SSM values, plus the database password on its own (a URL may be split or quoted)."""
    values = {
        name: ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] for name in SECRETS
    }
    password = re.match(r"^\w+://[^:/@]+:([^@]+)@", values[SECRETS[1]])
    assert password, "DATABASE_URL in SSM holds no password"
    return {**values, "the database password": password.group(1)}


@pytest.fixture(scope="module")
def verbose_deploy(ansible, fleet, releases):
    run = ansible.deploy("v2-verbose", releases.v2.tag, "-v")
    assert run.returncode == 0, run.tail()
    assert fleet.versions() == dict.fromkeys(fleet.names, "v2")
    return run


def _serving_environment(fleet, name: str) -> dict[str, str]:
    ids = fleet.sh(
        name, "docker ps --quiet --filter label=org.deploykit.app=app --filter status=running"
    ).split()
    assert len(ids) == 1, f"{name} runs {len(ids)} app containers"
    env = json.loads(fleet.sh(name, f"docker inspect --format '{{{{json .Config.Env}}}}' {ids[0]}"))
    return dict(entry.split("=", 1) for entry in env)


def _leaked(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value in text]


def test_container_environment_holds_the_ssm_values(verbose_deploy, fleet, secrets):
    environments = {name: _serving_environment(fleet, name) for name in fleet.names}
    assert {
        name: {parameter: env.get(parameter.rsplit("/", 1)[1]) for parameter in SECRETS}
        for name, env in environments.items()
    } == {name: {parameter: secrets[parameter] for parameter in SECRETS} for name in fleet.names}


def test_secrets_are_not_in_the_playbook_output(verbose_deploy, secrets):
    assert _leaked(verbose_deploy.output, secrets) == []


def test_secrets_are_not_in_the_container_logs(verbose_deploy, fleet, secrets):
    logs = {
        name: fleet.sh(name, "for c in $(docker ps --all --quiet); do docker logs $c 2>&1; done")
        for name in fleet.names
    }
    assert all(logs.values()), "a host's containers logged nothing at all"
    assert {name: _leaked(text, secrets) for name, text in logs.items()} == {name: [] for name in fleet.names}


def test_secrets_are_not_in_the_nginx_logs(verbose_deploy, fleet, secrets):
    logs = {name: fleet.sh(name, "cat /var/log/nginx/*.log") for name in fleet.names}
    assert all(logs.values()), "a host's nginx logged nothing at all"
    assert {name: _leaked(text, secrets) for name, text in logs.items()} == {name: [] for name in fleet.names}


def test_secrets_are_not_in_the_host_journal(verbose_deploy, fleet, secrets):
    # Modules log their arguments to the journal unless a task is no_log.
    journals = {name: fleet.sh(name, "journalctl --no-pager --output=cat") for name in fleet.names}
    assert all(journals.values()), "a host's journal is empty"
    assert {name: _leaked(text, secrets) for name, text in journals.items()} == {
        name: [] for name in fleet.names
    }
