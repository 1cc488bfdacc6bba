"""buildspec-deploy.yml (the deploy project's buildspec), run verbatim by the local CodeBuild runner.

The `aws` CLI, ssh-agent, ssh-add and `python -m deploykit.known_hosts` are the real ones, against
the stand-in's moto on a free port of 127.0.0.1 (deploykit.moto_server): the deploy key is a
SecureString in its SSM (moto does not encrypt it), and an instance tagged as production's inventory
finds it shows its host key in its console output, as cloud-init prints it. Only `ansible-playbook`
is a small script that records its arguments, the agent's keys and the known_hosts file it is
given: no host is deployed to here (the e2e pipeline runs this buildspec against the stand-in's
hosts). The install phase (a virtualenv of requirements.txt) is left out: the build's virtualenv is
the test's own. What this proves: the key reaches an agent of the build and no log line or file;
the host keys come from the console; the agent ends with the build, however it ends; and bad input
(no parameter named, a parameter that is missing or holds no private key, no image) stops the
deploy before it starts, naming what is wrong and never the value.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import yaml

from deploykit import standin
from deploykit.codebuild import BuildRequest, BuildResult, Project, run_build
from deploykit.system import ROOT

BUILDSPEC = yaml.safe_load((ROOT / "buildspec-deploy.yml").read_text())
REGION = "eu-west-1"  # inventory/production's
ECR = f"123456789012.dkr.ecr.{REGION}.amazonaws.com"
IMAGE = f"{ECR}/deploykit/app:3f2c1e9d8b7a"
KEY_PARAMETER = "/deploykit/production/DEPLOY_SSH_KEY"
ADDRESS = "10.0.1.23"
BIN = Path(sys.executable).parent
_KEYS = {
    "AWS_ACCESS_KEY_ID": standin.environment()["AWS_ACCESS_KEY_ID"],
    "AWS_SECRET_ACCESS_KEY": standin.environment()["AWS_SECRET_ACCESS_KEY"],
}

# What the deploy would see: its arguments, the agent's keys, the known_hosts file it is given.
ANSIBLE_PLAYBOOK = r"""#!/bin/bash
echo "ansible-playbook $*" >> "$SHIM_LOG"
{ ssh-add -l 2>&1 || true; } > "$SHIM_DIR/agent-keys"
echo "${DEPLOYKIT_KNOWN_HOSTS:-unset}" > "$SHIM_DIR/known-hosts-file"
exit "${SHIM_DEPLOY_EXIT:-0}"
"""


@dataclass
class Fleet:
    endpoint: str
    console_dir: Path
    host_key: str


@pytest.fixture(scope="module")
def fleet(moto_server, request: pytest.FixtureRequest, tmp_path_factory) -> Fleet:
    """The stand-in's moto with one production instance whose console shows a real host key."""
    console_dir = tmp_path_factory.mktemp("console")
    endpoint = moto_server(request, console_dir=console_dir)
    key_dir = tmp_path_factory.mktemp("host-key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_dir / "key")], check=True)
    host_key = " ".join((key_dir / "key.pub").read_text().split()[:2])
    ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name=REGION, **_lower(_KEYS))
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    tags = {"App": "deploykit", "Env": "production", "Role": "web", "Name": "deploykit-production-web-1"}
    (instance,) = ec2.run_instances(
        ImageId="ami-12c6146b", InstanceType="t3.micro", MinCount=1, MaxCount=1, SubnetId=subnet,
        PrivateIpAddress=ADDRESS,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],  # noqa: E501
    )["Instances"]  # fmt: skip
    (console_dir / instance["InstanceId"]).write_text(
        standin.console_output(tags["Name"], [host_key]), encoding="utf-8"
    )
    return Fleet(endpoint, console_dir, host_key)


def _lower(keys: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in keys.items()}


@pytest.fixture(scope="module")
def deploy_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A private key as SSM holds it, and its public key's fingerprint."""
    key = tmp_path_factory.mktemp("deploy-key") / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy", "-f", str(key)], check=True
    )
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(key)], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    return key, fingerprint


@pytest.fixture
def aws(fleet: Fleet, deploy_key: tuple[Path, str]) -> Iterator[Fleet]:
    """The deploy key in SSM, as provision.yml stores it; removed after the test."""
    ssm = boto3.client("ssm", endpoint_url=fleet.endpoint, region_name=REGION, **_lower(_KEYS))
    ssm.put_parameter(
        Name=KEY_PARAMETER, Value=deploy_key[0].read_text(), Type="SecureString", Overwrite=True
    )
    yield fleet
    ssm.delete_parameter(Name=KEY_PARAMETER)


@dataclass
class Deploy:
    result: BuildResult
    output: str
    calls: list[str]
    shims: Path

    def read(self, name: str) -> str:
        path = self.shims / name
        return path.read_text().strip() if path.exists() else ""

    @property
    def deploys(self) -> list[str]:
        return [call for call in self.calls if call.startswith("ansible-playbook")]

    @property
    def agent_pids(self) -> list[str]:
        return [line.split()[-1].rstrip(";") for line in self.output.splitlines() if "Agent pid" in line]


def _agents_of(home: Path) -> list[int]:
    """ssh-agent processes whose socket lives under this test's TMPDIR."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        agent = Path(cmdline[0].decode(errors="replace")).name == "ssh-agent" and state != "Z"
        if agent and f"TMPDIR={home}".encode() in environ:
            found.append(int(proc.name))
    return found


def deploy(
    tmp_path: Path,
    endpoint: str,
    *,
    key_parameter: str | None = KEY_PARAMETER,
    image: str | None = IMAGE,
    **shim_env: str,
) -> Deploy:
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "ansible-playbook").write_text(ANSIBLE_PLAYBOOK)
    (shims / "ansible-playbook").chmod(0o755)
    source = tmp_path / "src"
    (source / ".venv" / "bin").mkdir(parents=True)
    # The deploy's virtualenv, as the install phase would have made it: the test's own, shims first.
    (source / ".venv" / "bin" / "activate").write_text(f'export PATH="{shims}:{BIN}:$PATH"\n')
    (source / "inventory").symlink_to(ROOT / "inventory")
    spec = {key: value for key, value in BUILDSPEC.items() if key != "phases"}
    spec["phases"] = {name: BUILDSPEC["phases"][name] for name in ("pre_build", "build")}
    (source / "buildspec.yml").write_text(yaml.safe_dump(spec))
    log = tmp_path / "calls.log"
    log.touch()
    base = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmp_path),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        **_KEYS,
        "SHIM_LOG": str(log),
        "SHIM_DIR": str(shims),
        **shim_env,
    }
    variables = [{"name": "DEPLOY_SSH_KEY_PARAMETER", "value": key_parameter, "type": "PLAINTEXT"}]
    out = io.StringIO()
    result = run_build(
        BuildRequest(
            source_dir=source,
            builds_dir=tmp_path / "builds",
            project=Project("deploy", environment_variables=tuple(variables) if key_parameter else ()),
            env_overrides={"IMAGE_URI": image} if image is not None else {},
            base_environment=base,
            echo=out,
        )
    )
    return Deploy(result, out.getvalue(), log.read_text().splitlines(), shims)


# ---------------------------------------------------------------------------------------------
# The deploy key and the host keys


def test_the_deploy_runs_with_the_key_in_an_agent_and_the_hosts_keys_from_the_console(
    tmp_path, aws, deploy_key
):
    run = deploy(tmp_path, aws.endpoint)
    assert run.result.status == "SUCCEEDED", run.output
    (call,) = run.deploys
    assert call == (
        "ansible-playbook deploy.yml -i inventory/production"
        f" -e app_deploy_image_repository={ECR}/deploykit/app -e app_deploy_image_tag=3f2c1e9d8b7a"
    )
    assert deploy_key[1] in run.read("agent-keys")
    known = Path(run.read("known-hosts-file"))
    lines = [line for line in known.read_text().splitlines() if not line.startswith("#")]
    assert lines == [f"{ADDRESS} {aws.host_key}"]
    assert not known.is_relative_to(tmp_path / "src")


def test_the_deploy_key_is_in_no_log_line_and_in_no_file_of_the_build(tmp_path, aws, deploy_key):
    run = deploy(tmp_path, aws.endpoint)
    assert run.result.status == "SUCCEEDED", run.output
    secret = [
        line for line in deploy_key[0].read_text().splitlines() if line and not line.startswith("-----")
    ]
    log = run.result.log_file.read_text()
    for line in secret:
        assert line not in run.output
        assert line not in log
    written = [
        path
        for path in tmp_path.rglob("*")
        if path.is_file()
        and not path.is_symlink()
        and any(line in path.read_text(errors="replace") for line in secret)
    ]
    assert written == []


@pytest.mark.parametrize(
    "failure",
    [pytest.param({"SHIM_DEPLOY_EXIT": "2"}, id="deploy-fails"), pytest.param({}, id="deploy-succeeds")],
)
def test_the_agent_ends_with_the_build(tmp_path, aws, failure):
    run = deploy(tmp_path, aws.endpoint, **failure)
    assert run.result.status == ("FAILED" if failure else "SUCCEEDED"), run.output
    assert run.read("agent-keys")  # an agent ran
    assert _agents_of(tmp_path) == []


def test_an_instance_without_host_keys_stops_before_the_deploy_and_ends_the_agent(tmp_path, aws):
    ec2 = boto3.client("ec2", endpoint_url=aws.endpoint, region_name=REGION, **_lower(_KEYS))
    (instance,) = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    console = aws.console_dir / instance["InstanceId"]
    kept = console.read_text()
    console.unlink()  # moto's own console: a kernel log, no keys (a host that has not printed them yet)
    try:
        run = deploy(tmp_path, aws.endpoint, HOST_KEYS_WAIT_SECONDS="0")
    finally:
        console.write_text(kept)
    assert run.result.status == "FAILED"
    assert "no SSH host keys in the console output of deploykit-production-web-1" in run.output
    assert run.deploys == []
    assert _agents_of(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Bad input: refused before anything runs, naming what is wrong and never a value


def test_a_project_without_the_key_parameter_is_refused_before_anything(tmp_path, aws):
    run = deploy(tmp_path, aws.endpoint, key_parameter=None)
    assert run.result.status == "FAILED"
    assert "DEPLOY_SSH_KEY_PARAMETER is not set" in run.output
    assert run.deploys == []
    assert _agents_of(tmp_path) == []


def test_a_missing_key_parameter_is_named_and_stops_the_deploy(tmp_path, fleet):
    run = deploy(tmp_path, fleet.endpoint)
    assert run.result.status == "FAILED"
    assert f"could not read the deploy key from the SSM parameter {KEY_PARAMETER}" in run.output
    assert "ParameterNotFound" in run.output
    assert run.deploys == []
    assert _agents_of(tmp_path) == []


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("not-a-key-but-a-secret-4f1c9b", id="text"),
        pytest.param(None, id="the-public-key"),
    ],
)
def test_a_parameter_that_holds_no_private_key_is_named_never_printed(tmp_path, fleet, deploy_key, value):
    value = value or deploy_key[0].with_suffix(".pub").read_text()
    ssm = boto3.client("ssm", endpoint_url=fleet.endpoint, region_name=REGION, **_lower(_KEYS))
    ssm.put_parameter(Name=KEY_PARAMETER, Value=value, Type="SecureString", Overwrite=True)
    try:
        run = deploy(tmp_path, fleet.endpoint)
    finally:
        ssm.delete_parameter(Name=KEY_PARAMETER)
    assert run.result.status == "FAILED"
    assert f"the SSM parameter {KEY_PARAMETER} does not hold an SSH private key" in run.output
    secret = max(value.split(), key=len)  # the text, or the public key's base64
    assert secret not in run.output
    assert secret not in run.result.log_file.read_text()
    assert run.deploys == []
    assert _agents_of(tmp_path) == []


@pytest.mark.parametrize(
    "image", ["", f"{ECR}/deploykit/app", f"{ECR}/deploykit/app:bad tag"], ids=["unset", "no-tag", "bad-tag"]
)
def test_a_deploy_without_an_image_tag_is_refused_before_anything(tmp_path, aws, image):
    run = deploy(tmp_path, aws.endpoint, image=image)
    assert run.result.status == "FAILED"
    assert f"IMAGE_URI='{image}' is not REGISTRY/REPOSITORY:TAG" in run.output
    assert run.deploys == []
    assert _agents_of(tmp_path) == []


def test_the_console_format_is_what_known_hosts_reads():
    # The stand-in's console output, read back by the deploy's own parser.
    from deploykit import known_hosts

    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    assert known_hosts.host_keys(standin.console_output("web-1", [key])) == [key]
    assert base64.b64decode(key.split()[1])  # a real key blob, not a placeholder
