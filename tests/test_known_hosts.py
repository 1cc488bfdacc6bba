"""deploykit/known_hosts.py: the fleet's host keys from EC2's console output, as a known_hosts file.

moto's GetConsoleOutput returns a fixed sample console with no host keys, so what the tool makes of
a real console (cloud-init's host key block among boot messages, the Latest/buffered fallback,
waiting for a new instance) is tested with botocore's Stubber, on consoles built here around keys
that ssh-keygen makes. moto (in process) answers the fleet query with the inventory's own filters,
and shows the failure a user sees when a console has no host keys.
"""

from __future__ import annotations

import base64
import io
import stat
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config
from botocore.stub import Stubber
from moto import mock_aws

from deploykit import known_hosts
from deploykit.system import ROOT

PRODUCTION = ROOT / "inventory" / "production"
REGION = yaml.safe_load((PRODUCTION / "aws_ec2.yml").read_text())["regions"][0]
FILTERS = [
    {"Name": "tag:App", "Values": ["deploykit"]},
    {"Name": "tag:Env", "Values": ["production"]},
    {"Name": "instance-state-name", "Values": ["running"]},
]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Host public keys as `<type> <base64>`, made by ssh-keygen (the kinds Debian's sshd has)."""
    folder = tmp_path_factory.mktemp("hostkeys")
    made = {}
    for name, kind in (("ed25519", "ed25519"), ("ecdsa", "ecdsa"), ("ed25519-b", "ed25519")):
        path = folder / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "root@ip-10-0-1-23", "-f", str(path)], check=True
        )
        made[name] = " ".join(Path(f"{path}.pub").read_text().split()[:2])
    return made


def console(*blocks: list[str], noise: bool = True) -> str:
    """A boot console as EC2 returns it: CRLF line ends, cloud-init's fingerprints, then key blocks."""
    lines = ["[    0.000000] Linux version 6.1.0-28-cloud-amd64", "Debian GNU/Linux 12 ip-10-0-1-23 ttyS0"]
    if noise:
        lines += [
            "ec2: #############################################################",
            "ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----",
            "ec2: 256 SHA256:2Gqy6SVc6E0fOn/oTn1WsDF3pfIs0cW8Yzo0ZzS3ZXo root@ip-10-0-1-23 (ED25519)",
            "ec2: -----END SSH HOST KEY FINGERPRINTS-----",
            "ec2: #############################################################",
        ]
    for block in blocks:
        lines += ["-----BEGIN SSH HOST KEY KEYS-----", *block, "-----END SSH HOST KEY KEYS-----"]
    lines.append("[   42.424242] cloud-init[612]: Cloud-init v. 22.4.2 finished")
    return "\r\n".join(lines) + "\r\n"


def _encoded(text: str) -> str:
    # The API's encoding; botocore decodes it for the caller, stubbed answers included.
    return base64.b64encode(text.encode()).decode()


# ---------------------------------------------------------------------------------------------
# Reading a console


def test_the_keys_of_cloud_inits_block_are_read(keys):
    text = console([f"{keys['ecdsa']} root@ip-10-0-1-23", f"{keys['ed25519']} root@ip-10-0-1-23"])
    assert known_hosts.host_keys(text) == [keys["ecdsa"], keys["ed25519"]]


def test_fingerprints_alone_are_not_keys():
    assert known_hosts.host_keys(console()) == []


def test_a_prefix_and_an_interleaved_kernel_line_do_not_hide_the_keys(keys):
    block = [f"ec2: {keys['ed25519']} root@ip", "[   31.000000] random: crng init done", keys["ecdsa"]]
    assert known_hosts.host_keys(console(block)) == [keys["ed25519"], keys["ecdsa"]]


def test_a_garbled_key_line_is_left_out(keys):
    kind, blob = keys["ecdsa"].split()
    # A kernel message written into the middle of the line, once run into the key, once after a space.
    run_into = f"{kind} {blob[:40]}[   31.5] eth0: link up{blob[40:]}"
    cut = f"{kind} {blob[:40]} [   31.5] eth0: link up {blob[40:]}"
    swapped = f"ssh-ed25519 {blob}"  # the blob says it is an ECDSA key
    lines = [run_into, cut, swapped, keys["ed25519"]]
    assert known_hosts.host_keys(console(lines)) == [keys["ed25519"]]


def test_only_the_last_complete_block_counts(keys):
    # A console with two blocks (the keys of an earlier boot first) and a block cut off at the end.
    text = (
        console([keys["ed25519"]], [keys["ed25519-b"]])
        + "-----BEGIN SSH HOST KEY KEYS-----\r\n"
        + keys["ecdsa"]
    )
    assert known_hosts.host_keys(text) == [keys["ed25519-b"]]


def test_a_block_without_its_end_is_not_read(keys):
    text = console() + "-----BEGIN SSH HOST KEY KEYS-----\n" + keys["ed25519"] + "\n"
    assert known_hosts.host_keys(text) == []


# ---------------------------------------------------------------------------------------------
# The fleet, with Stubber: the inventory's filters, each instance's console


def _stubbed() -> tuple[Any, Stubber]:
    client = boto3.client(
        "ec2",
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - a Stubber's client sends nothing
        config=Config(retries={"max_attempts": 1}),
    )
    return client, Stubber(client)


def _instance(instance_id: str, name: str, address: str) -> dict[str, Any]:
    return {"InstanceId": instance_id, "PrivateIpAddress": address, "Tags": [{"Key": "Name", "Value": name}]}


FLEET = [
    _instance("i-0bbbbbbbbbbbbbbbb", "deploykit-production-web-2", "10.0.1.24"),
    _instance("i-0aaaaaaaaaaaaaaaa", "deploykit-production-web-1", "10.0.1.23"),
]


def _describes(stub: Stubber, instances: list[dict[str, Any]] = FLEET) -> None:
    # The expected parameters are the request: the filters of inventory/production/aws_ec2.yml.
    stub.add_response(
        "describe_instances", {"Reservations": [{"Instances": instances}]}, {"Filters": FILTERS}
    )


def _console(stub: Stubber, instance_id: str, text: str, *, latest: bool = True) -> None:
    params = {"InstanceId": instance_id, "Latest": True} if latest else {"InstanceId": instance_id}
    stub.add_response("get_console_output", {"InstanceId": instance_id, "Output": _encoded(text)}, params)


def _run_cli(client: Any, output: Path, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = known_hosts.main(
            ["--inventory", str(PRODUCTION), "--output", str(output), *extra],
            client_for=lambda _region: client,
        )
    return code, out.getvalue(), err.getvalue()


def test_the_file_has_a_line_per_key_at_each_private_address(keys, tmp_path):
    client, stub = _stubbed()
    _describes(stub)
    _console(stub, "i-0aaaaaaaaaaaaaaaa", console([keys["ed25519"], keys["ecdsa"]]))
    _console(stub, "i-0bbbbbbbbbbbbbbbb", console([keys["ed25519-b"]]))
    output = tmp_path / "known_hosts"
    with stub:
        code, out, err = _run_cli(client, output)
        stub.assert_no_pending_responses()
    assert (code, err) == (0, "")
    lines = [line for line in output.read_text().splitlines() if not line.startswith("#")]
    assert lines == [
        f"10.0.1.23 {keys['ed25519']}",
        f"10.0.1.23 {keys['ecdsa']}",
        f"10.0.1.24 {keys['ed25519-b']}",
    ]
    assert "2 hosts, 3 host keys" in out
    # Public keys: readable, written by the build's user only.
    assert stat.S_IMODE(output.stat().st_mode) == 0o644


def test_ssh_keygen_finds_each_host_in_the_file(keys, tmp_path):
    client, stub = _stubbed()
    _describes(stub, FLEET[1:])
    _console(stub, "i-0aaaaaaaaaaaaaaaa", console([keys["ed25519"]]))
    output = tmp_path / "known_hosts"
    with stub:
        assert _run_cli(client, output)[0] == 0
    found = subprocess.run(
        ["ssh-keygen", "-F", "10.0.1.23", "-f", str(output)], capture_output=True, text=True
    )
    assert found.returncode == 0
    assert keys["ed25519"] in found.stdout


def test_an_instance_type_without_latest_output_is_read_from_the_buffered_copy(keys, tmp_path):
    client, stub = _stubbed()
    _describes(stub, FLEET[1:])
    stub.add_client_error(
        "get_console_output",
        service_error_code="UnsupportedOperation",
        service_message="Latest console output is not supported for this instance type",
        expected_params={"InstanceId": "i-0aaaaaaaaaaaaaaaa", "Latest": True},
    )
    _console(stub, "i-0aaaaaaaaaaaaaaaa", console([keys["ed25519"]]), latest=False)
    with stub:
        assert _run_cli(client, tmp_path / "known_hosts")[0] == 0
        stub.assert_no_pending_responses()
    assert f"10.0.1.23 {keys['ed25519']}" in (tmp_path / "known_hosts").read_text()


def test_the_buffered_copy_is_read_when_the_latest_output_has_no_keys(keys, tmp_path):
    client, stub = _stubbed()
    _describes(stub, FLEET[1:])
    _console(stub, "i-0aaaaaaaaaaaaaaaa", console(noise=False))
    _console(stub, "i-0aaaaaaaaaaaaaaaa", console([keys["ed25519"]]), latest=False)
    with stub:
        assert _run_cli(client, tmp_path / "known_hosts")[0] == 0
        stub.assert_no_pending_responses()


def test_an_instance_without_host_keys_fails_the_file_and_is_named(keys, tmp_path):
    client, stub = _stubbed()
    _describes(stub)
    _console(stub, "i-0aaaaaaaaaaaaaaaa", console([keys["ed25519"]]))
    _console(stub, "i-0bbbbbbbbbbbbbbbb", console())
    _console(stub, "i-0bbbbbbbbbbbbbbbb", console(), latest=False)
    output = tmp_path / "known_hosts"
    with stub:
        code, _, err = _run_cli(client, output)
    assert code == known_hosts.EXIT_MISSING
    assert "deploykit-production-web-2 (i-0bbbbbbbbbbbbbbbb, 10.0.1.24, eu-west-1)" in err
    assert "web-1" not in err
    assert "a few minutes after launch" in err
    # No file: a partial one would deploy to some hosts and stop at the first unknown one.
    assert not output.exists()


def test_a_new_instance_is_waited_for(keys):
    client, stub = _stubbed()
    _describes(stub, FLEET[1:])
    _console(stub, "i-0aaaaaaaaaaaaaaaa", console(noise=False))
    _console(stub, "i-0aaaaaaaaaaaaaaaa", console(noise=False), latest=False)
    _console(stub, "i-0aaaaaaaaaaaaaaaa", console([keys["ed25519"]]))
    now = [0.0]
    slept = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    query = known_hosts.load_query(PRODUCTION)
    with stub:
        found = known_hosts.collect(
            query, lambda _region: client, wait_seconds=60, poll_seconds=15, sleep=sleep, clock=lambda: now[0]
        )
        stub.assert_no_pending_responses()
    assert slept == [15]
    assert list(found.values()) == [[keys["ed25519"]]]


def test_waiting_ends_with_the_instances_still_without_keys(keys):
    client, stub = _stubbed()
    _describes(stub, FLEET[1:])
    for _ in range(2):
        _console(stub, "i-0aaaaaaaaaaaaaaaa", console(noise=False))
        _console(stub, "i-0aaaaaaaaaaaaaaaa", console(noise=False), latest=False)
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with stub, pytest.raises(known_hosts.HostKeysMissing, match=r"web-1 .* after 20 s"):
        known_hosts.collect(
            known_hosts.load_query(PRODUCTION),
            lambda _region: client,
            wait_seconds=30,
            poll_seconds=20,
            sleep=sleep,
            clock=lambda: now[0],
        )


# ---------------------------------------------------------------------------------------------
# The inventory file


@pytest.mark.parametrize("env", ["production", "staging", "local"])
def test_the_query_is_the_inventorys_own(env):
    config = yaml.safe_load((ROOT / "inventory" / env / "aws_ec2.yml").read_text())
    query = known_hosts.load_query(ROOT / "inventory" / env)
    assert list(query.regions) == config["regions"]
    assert {f["Name"]: f["Values"] for f in query.boto_filters()} == {
        name: value if isinstance(value, list) else [value] for name, value in config["filters"].items()
    }


def test_an_inventory_that_connects_elsewhere_is_refused(tmp_path):
    config = yaml.safe_load((PRODUCTION / "aws_ec2.yml").read_text())
    config["compose"]["ansible_host"] = "public_ip_address"
    (tmp_path / "aws_ec2.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(known_hosts.InventoryError, match=r"compose\.ansible_host is 'public_ip_address'"):
        known_hosts.load_query(tmp_path)


# ---------------------------------------------------------------------------------------------
# Against moto (in process): the fleet query, and moto's keyless console


@pytest.fixture
def moto_ec2(monkeypatch: pytest.MonkeyPatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


def _launch(ec2: Any, name: str, env: str) -> dict[str, Any]:
    tags = {"App": "deploykit", "Env": env, "Role": "web", "Name": name}
    return ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ],
    )["Instances"][0]


def test_the_fleet_is_the_running_instances_the_inventory_selects(moto_ec2):
    web1 = _launch(moto_ec2, "deploykit-production-web-1", "production")
    stopped = _launch(moto_ec2, "deploykit-production-web-2", "production")
    _launch(moto_ec2, "deploykit-staging-web-1", "staging")
    moto_ec2.stop_instances(InstanceIds=[stopped["InstanceId"]])
    fleet = known_hosts.find_instances(moto_ec2, known_hosts.load_query(PRODUCTION), REGION)
    assert [(i.name, i.instance_id, i.address) for i in fleet] == [
        ("deploykit-production-web-1", web1["InstanceId"], web1["PrivateIpAddress"])
    ]


def test_a_console_without_host_keys_fails_naming_the_instance(moto_ec2, tmp_path):
    web1 = _launch(moto_ec2, "deploykit-production-web-1", "production")
    code, _, err = _run_cli(moto_ec2, tmp_path / "known_hosts")
    assert code == known_hosts.EXIT_MISSING
    assert f"deploykit-production-web-1 ({web1['InstanceId']}, {web1['PrivateIpAddress']}, {REGION})" in err


def test_an_empty_fleet_writes_an_empty_file(moto_ec2, tmp_path):
    # The deploy's own check then says that no instance matches, with the command to look.
    code, out, _ = _run_cli(moto_ec2, tmp_path / "known_hosts")
    assert code == 0
    assert "no running instance matches" in out
    assert [
        line for line in (tmp_path / "known_hosts").read_text().splitlines() if not line.startswith("#")
    ] == []
