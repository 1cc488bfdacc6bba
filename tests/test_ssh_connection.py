"""How the production and staging inventories have SSH trust a host: the ssh command Ansible builds.

No sshd runs on these machines outside the stand-in's hosts, so the command is read from
`ansible -vvv` against a closed port of 127.0.0.1: no connection is made. The stand-in's own
settings (inventory/local) are exercised by tests/test_inventory.py against its hosts.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from deploykit.system import ROOT

BIN = Path(sys.executable).parent


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ssh_options(tmp_path: Path, env: str, known_hosts: str | None) -> list[str]:
    """The -o options of the ssh command that Ansible runs for a host of inventory/<env>."""
    inventory = tmp_path / env
    shutil.copytree(ROOT / "inventory" / env / "group_vars", inventory / "group_vars")
    (inventory / "hosts.ini").write_text(
        f"[aws_ec2]\nweb-1 ansible_host=127.0.0.1 ansible_port={_closed_port()}\n"
    )
    environment = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
    }
    if known_hosts is not None:
        environment["DEPLOYKIT_KNOWN_HOSTS"] = known_hosts
    result = subprocess.run(
        [
            str(BIN / "ansible"),
            "web-1",
            "-i",
            str(inventory / "hosts.ini"),
            "-m",
            "ansible.builtin.ping",
            "-vvv",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    (command,) = [line for line in result.stdout.splitlines() if "SSH: EXEC ssh " in line][:1]
    words = shlex.split(command.split("SSH: EXEC ", 1)[1])
    return [words[i + 1] for i, word in enumerate(words) if word == "-o"]


def _host_key_checking(options: list[str]) -> list[str]:
    return [option for option in options if option.startswith("StrictHostKeyChecking")]


@pytest.mark.parametrize("env", ["production", "staging"])
def test_the_build_s_known_hosts_file_is_the_one_ssh_trusts(tmp_path, env):
    options = _ssh_options(tmp_path, env, "/tmp/build dir/known_hosts")
    assert "UserKnownHostsFile=/tmp/build dir/known_hosts" in options
    # An unknown key is refused, never accepted on first contact.
    assert _host_key_checking(options) == ["StrictHostKeyChecking=yes"]


@pytest.mark.parametrize("env", ["production", "staging"])
def test_a_deploy_by_hand_keeps_ssh_s_own_known_hosts_and_still_refuses_unknown_keys(tmp_path, env):
    options = _ssh_options(tmp_path, env, None)
    assert not [option for option in options if option.startswith("UserKnownHostsFile")]
    assert _host_key_checking(options) == ["StrictHostKeyChecking=yes"]
