"""Scenario 12: production's own configuration on the stand-in, behind the load balancer.

The deploy runs with inventory/production's files, in which only what tests/test_environment_parity.py
allows to differ is replaced by the stand-in's values (region and Env tag, the public address, the
load balancer's address, the registry and its CA, the CloudWatch Logs driver), and logs in as the
deploy project does: the deploy key in an ssh-agent, the hosts' keys in the file
DEPLOYKIT_KNOWN_HOSTS names. Production's sizes
(gunicorn workers, container memory) stay. Through the front door, under a stream of requests:
no request fails, HTTPS answers without a redirect loop and sends HSTS, plain HTTP is redirected to
HTTPS, and a client that sends its own X-Forwarded-Proto straight to a host is not believed.
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deploykit import standin
from deploykit.system import ROOT

pytestmark = pytest.mark.e2e

# What the stand-in replaces in production's files, by file: each one a name, an endpoint, an
# address or a CA (tests/test_environment_parity.py's ALLOWED_DIFFERENCES, where each is explained).
REPLACED = {
    "group_vars/all/environment.yml": (
        "app_env",
        "aws_region",
        "app_public_url",
        "app_load_balancer_cidrs",
        "app_deploy_image_repository",
        "docker_engine_registry_ca_certificates",
        # CloudWatch Logs has no stand-in: the hosts keep the daemon's json-file (the role's default).
        "app_deploy_log_driver",
        "app_deploy_log_options",
    ),
}


def _ssh_agent(tmp_path: Path) -> dict[str, str]:
    """An ssh-agent holding the stand-in's deploy key, as buildspec.yml loads the key from SSM."""
    socket_path = tmp_path / "agent.sock"
    subprocess.run(["ssh-agent", "-a", str(socket_path)], check=True, capture_output=True, timeout=30)
    env = {**os.environ, "SSH_AUTH_SOCK": str(socket_path)}
    subprocess.run(
        ["ssh-add", "-q", str(standin.SSH_KEY)], env=env, check=True, capture_output=True, timeout=30
    )
    return {"SSH_AUTH_SOCK": str(socket_path)}


@pytest.fixture(scope="module")
def production_inventory(tmp_path_factory) -> Path:
    """inventory/production with the stand-in's names, endpoints, addresses and CA, nothing else."""
    inventory = tmp_path_factory.mktemp("production-shape") / "production"
    shutil.copytree(ROOT / "inventory" / "production", inventory)
    config = yaml.safe_load((inventory / "aws_ec2.yml").read_text())
    config["regions"] = [standin.REGION]
    config["filters"]["tag:Env"] = standin.TAGS["Env"]
    (inventory / "aws_ec2.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    for name, keys in REPLACED.items():
        local = yaml.safe_load((ROOT / "inventory" / "local" / name).read_text())
        production = yaml.safe_load((inventory / name).read_text())
        production.update({key: local[key] for key in keys if key in local})
        # What the stand-in leaves to the role's default, production's file must not set either.
        for key in (key for key in keys if key not in local):
            production.pop(key, None)
        (inventory / name).write_text(yaml.safe_dump(production, sort_keys=False))
    return inventory


@pytest.fixture(scope="module")
def production_deploy(
    ansible, fleet, releases, request_stream, record_requests, production_inventory, tmp_path_factory
):
    agent = _ssh_agent(tmp_path_factory.mktemp("ssh-agent"))
    try:
        with request_stream(front_door=True) as stream:
            run = ansible.run(
                "v2-production-shape",
                ansible.deploy_args(releases.v2.tag, inventory=str(production_inventory)),
                DEPLOYKIT_KNOWN_HOSTS=str(standin.KNOWN_HOSTS),
                # The key only in the agent, as in the deploy project: no key file of an operator's.
                ANSIBLE_PRIVATE_KEY_FILE=None,
                **agent,
            )
    finally:
        subprocess.run(["ssh-agent", "-k"], env={**os.environ, **agent}, capture_output=True, check=False)
    record_requests(stream.result)
    return run, stream.result


def test_only_allowed_values_are_replaced(production_inventory):
    from tests.test_environment_parity import ALLOWED_DIFFERENCES

    replaced = {("all", key) for keys in REPLACED.values() for key in keys}
    assert replaced <= ALLOWED_DIFFERENCES.keys()


def test_production_configuration_deploys_to_every_host(production_deploy, fleet):
    run, _ = production_deploy
    assert run.returncode == 0, run.tail()
    assert fleet.versions() == dict.fromkeys(fleet.names, "v2")


def test_production_sizes_reach_the_hosts(production_deploy, fleet):
    # The app's environment file is the root-only file of the serving release: its worker count
    # is production's, not the stand-in's.
    workers = {
        name: fleet.sh(
            name,
            "cat /etc/deploykit/app/$(docker ps --filter label=org.deploykit.app=app "
            "--format '{{.Label \"org.deploykit.release\"}}').env | grep '^GUNICORN_WORKERS='",
        ).strip()
        for name in fleet.names
    }
    production = yaml.safe_load((ROOT / "inventory/production/group_vars/all/environment.yml").read_text())
    assert workers == dict.fromkeys(fleet.names, f"GUNICORN_WORKERS={production['app_gunicorn_workers']}")


def test_no_request_through_the_front_door_fails_during_the_deploy(production_deploy):
    _, stream = production_deploy
    assert stream.sent > 0
    assert (stream.failed, stream.failures) == (0, []), f"{stream.failed} of {stream.sent} requests failed"


def test_https_answers_without_a_redirect_and_sends_hsts(production_deploy, front_door):
    status, headers, body = front_door.get("/")
    assert status == 200, body[:300]
    assert headers["strict-transport-security"].startswith("max-age=")


def test_the_page_over_https_shows_the_release(production_deploy, front_door):
    status, _, body = front_door.get("/")
    assert status == 200
    assert 'class="version">v2<' in body


def test_plain_http_is_redirected_to_https(production_deploy, front_door):
    status, headers = front_door.get_http("/version.json?x=1")
    assert (status, headers.get("location")) == (
        301,
        f"https://{front_door.host}:{front_door.port}/version.json?x=1",
    )


def test_a_forged_forwarded_proto_straight_to_a_host_is_not_believed(production_deploy, fleet, front_door):
    host = fleet.hosts[0]
    connection = http.client.HTTPConnection(host.ip, 80, timeout=10)
    try:
        connection.request(
            "GET", "/version.json", headers={"Host": front_door.host, "X-Forwarded-Proto": "https"}
        )
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    # Django saw plain HTTP (nginx replaced the header) and sent the client to HTTPS.
    assert (response.status, response.getheader("Location")) == (
        301,
        f"https://{front_door.host}/version.json",
    )


def test_the_same_request_from_a_trusted_proxy_is_served(production_deploy, fleet, front_door):
    # On the host, from loopback: nginx believes it, as it believes the load balancer.
    status, _ = fleet.page(fleet.hosts[0].name, "/version.json", front_door.host)
    assert status == 200
