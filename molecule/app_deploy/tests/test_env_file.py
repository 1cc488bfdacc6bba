"""The release's environment file: root only, with the secrets from where they were configured and
production's security settings.
"""

from __future__ import annotations

import os
import re

import boto3
from app_deploy_scenario import get, group_vars, instance

testinfra_hosts = [f"docker://{instance()}"]

# Names of config.settings.production's security settings (SSL redirect, HSTS, secure cookies) and
# DEBUG: each defaults to its safe value, and no environment sets one (test_environment_parity.py).
SECURITY_SETTING = re.compile(r"^DJANGO_(SECURE_\w+|\w+_COOKIE_SECURE|DEBUG)$")


def _env(host, path: str) -> dict[str, str]:
    lines = host.file(path).content_string.splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_env_file_is_readable_by_root_only(host, release_state):
    env_file = host.file(release_state["current"]["env_file"])
    assert (env_file.user, env_file.group, env_file.mode) == ("root", "root", 0o600)


def test_env_directory_is_root_only(host, release_state):
    directory = host.file(os.path.dirname(release_state["current"]["env_file"]))
    assert (directory.user, directory.mode) == ("root", 0o700)


def test_env_file_holds_the_secret_from_ssm(host, release_state):
    parameter = group_vars()["app_deploy_ssm_env"]["DJANGO_SECRET_KEY"]
    # The AWS stand-in, reached through AWS_ENDPOINT_URL as the role reached it.
    expected = boto3.client("ssm").get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"]
    assert _env(host, release_state["current"]["env_file"])["DJANGO_SECRET_KEY"] == expected


def test_env_file_holds_the_plain_settings(host, release_state):
    env = _env(host, release_state["current"]["env_file"])
    assert env["GUNICORN_WORKERS"] == group_vars()["app_deploy_env"]["GUNICORN_WORKERS"]
    assert env["APP_HOST_NAME"] == instance()


def test_env_file_leaves_the_security_settings_at_their_production_defaults(host, release_state):
    # As production's deploy: none is set, so the production settings' safe defaults apply.
    env = _env(host, release_state["current"]["env_file"])
    assert [name for name in env if SECURITY_SETTING.match(name)] == []


def test_plain_http_is_redirected_to_https_by_the_app(host_address):
    # A request that did not come through the load balancer's HTTPS listener: SECURE_SSL_REDIRECT.
    status, _, headers = get(host_address, "/version.json?x=1", headers={})
    assert (status, headers["Location"]) == (301, f"https://{host_address}/version.json?x=1")
