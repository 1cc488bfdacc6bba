"""buildspec.yml's post_build, run verbatim by the local CodeBuild runner.

The `aws` CLI is the real one (the virtualenv's), against a moto server of this module's own on a
free port of 127.0.0.1: ECR's DescribeImages and SSM's GetParameter answer as moto does (an image
"pushed" with PutImage, API only; a SecureString moto does not encrypt). ssh-agent and ssh-add are
the real ones. `docker`, `ansible-playbook` and `python -m deploykit.known_hosts` are small scripts
that record how they were called: no image is pushed, no host is deployed to, no console is read
(tests/test_known_hosts.py does that, with Stubber). What this proves: which answers skip the push,
that the deploy key reaches an agent of the build and no log line or file, that the agent ends with
the build and no other agent does, and that without DEPLOY_SSH_KEY_PARAMETER (the local stand-in's
builds) none of it runs. An ECR that refuses DescribeImages cannot be had from moto (it enforces no
IAM); a repository that does not exist is the other answer tested.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import yaml

from deploykit import standin
from deploykit.codebuild import BuildRequest, BuildResult, Project, run_build
from deploykit.system import ROOT

BUILDSPEC = yaml.safe_load((ROOT / "buildspec.yml").read_text())
REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's default account
ECR = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
BIN = Path(sys.executable).parent
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_KEYS = {
    "AWS_ACCESS_KEY_ID": standin.environment()["AWS_ACCESS_KEY_ID"],
    "AWS_SECRET_ACCESS_KEY": standin.environment()["AWS_SECRET_ACCESS_KEY"],
}
LOCAL_REGISTRY = "172.30.0.1:5443"
TAG = "3f2c1e9d8b7a"
KEY_PARAMETER = "/deploykit/production/DEPLOY_SSH_KEY"
HOST_KEY_LINE = "10.0.1.23 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

SHIMS = {
    "docker": r"""
        echo "docker $*" >> "$SHIM_LOG"
    """,
    # What the deploy would see: its arguments, the agent's keys, the known_hosts file it is given.
    "ansible-playbook": r"""
        echo "ansible-playbook $*" >> "$SHIM_LOG"
        { ssh-add -l 2>&1 || true; } > "$SHIM_DIR/agent-keys"
        echo "${DEPLOYKIT_KNOWN_HOSTS:-unset}" > "$SHIM_DIR/known-hosts-file"
        echo "${SSH_AGENT_PID:-}" > "$SHIM_DIR/agent-pid"
        exit "${SHIM_DEPLOY_EXIT:-0}"
    """,
    "python": r"""
        if [ "$1 $2" = "-m deploykit.known_hosts" ]; then
          echo "known_hosts $*" >> "$SHIM_LOG"
          echo "${SSH_AGENT_PID:-}" > "$SHIM_DIR/agent-pid"
          if [ -n "${SHIM_NO_HOST_KEYS:-}" ]; then
            echo "deploykit: no SSH host keys in the console output of web-1" >&2
            exit 1
          fi
          while [ $# -gt 0 ]; do [ "$1" = "--output" ] && output="$2"; shift; done
          echo "$SHIM_HOST_KEY_LINE" > "$output"
          exit 0
        fi
        exec "$SHIM_REAL_PYTHON" "$@"
    """,
}


@pytest.fixture(scope="module")
def moto(moto_server, request: pytest.FixtureRequest) -> str:
    """A moto server of this module's own."""
    return moto_server(request)


@pytest.fixture
def aws(moto: str, deploy_key: tuple[Path, str]) -> Iterator[str]:
    """moto with the repository and the deploy key, as provision.yml leaves an account; reset after."""
    keys = {
        "aws_access_key_id": _KEYS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": _KEYS["AWS_SECRET_ACCESS_KEY"],
    }
    boto3.client("ecr", endpoint_url=moto, region_name=REGION, **keys).create_repository(
        repositoryName="deploykit/app", imageTagMutability="IMMUTABLE"
    )
    boto3.client("ssm", endpoint_url=moto, region_name=REGION, **keys).put_parameter(
        Name=KEY_PARAMETER, Value=deploy_key[0].read_text(), Type="SecureString"
    )
    yield moto
    _NO_PROXY.open(urllib.request.Request(f"{moto}/moto-api/reset", method="POST"), timeout=10).close()


def _pushed_before(endpoint: str) -> str:
    """An image tagged TAG in moto's ECR, as an earlier build of the commit left it; its digest."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 2,
            "digest": "sha256:" + "a" * 64,
        },
        "layers": [],
    }
    ecr = boto3.client(
        "ecr",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=_KEYS["AWS_SECRET_ACCESS_KEY"],
    )
    image = ecr.put_image(repositoryName="deploykit/app", imageManifest=json.dumps(manifest), imageTag=TAG)
    return image["image"]["imageId"]["imageDigest"]


@dataclass
class PostBuild:
    result: BuildResult
    output: str
    calls: list[str]
    shims: Path

    def read(self, name: str) -> str:
        path = self.shims / name
        return path.read_text().strip() if path.exists() else ""


@pytest.fixture(scope="module")
def deploy_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A private key as SSM would hold it, and its public key's fingerprint."""
    folder = tmp_path_factory.mktemp("deploy-key")
    key = folder / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy", "-f", str(key)], check=True
    )
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(key)], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    return key, fingerprint


def _agent_alive(pid: str) -> bool:
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def post_build(
    tmp_path: Path,
    endpoint: str,
    *,
    registry: str = ECR,
    key_parameter: str | None = KEY_PARAMETER,
    build_fails: bool = False,
    **shim_env: str,
) -> PostBuild:
    shims = tmp_path / "shims"
    shims.mkdir()
    for name, body in SHIMS.items():
        script = shims / name
        script.write_text("#!/bin/bash\n" + textwrap.dedent(body))
        script.chmod(0o755)
    source = tmp_path / "src"
    (source / ".venv" / "bin").mkdir(parents=True)
    # The build's virtualenv, as the install phase would have made it: here it puts the shims first.
    (source / ".venv" / "bin" / "activate").write_text(f'export PATH="{shims}:$PATH"\n')
    spec = {
        "version": 0.2,
        "env": {"shell": "bash", "variables": BUILDSPEC["env"]["variables"]},
        "phases": {
            "pre_build": {
                "commands": [
                    f"export REGISTRY={registry} IMAGE_TAG={TAG}",
                    'export IMAGE_URI="${REGISTRY}/${ECR_REPOSITORY}:${IMAGE_TAG}"',
                ]
            },
            "build": {"commands": ["false" if build_fails else "true"]},
            "post_build": BUILDSPEC["phases"]["post_build"],
        },
    }
    (source / "buildspec.yml").write_text(yaml.safe_dump(spec))
    log = tmp_path / "calls.log"
    log.touch()
    base = {
        # The shims, then the virtualenv's aws CLI, then the system's ssh-agent.
        "PATH": f"{shims}:{BIN}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmp_path),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": REGION,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        **_KEYS,
        "SHIM_LOG": str(log),
        "SHIM_DIR": str(shims),
        "SHIM_HOST_KEY_LINE": HOST_KEY_LINE,
        "SHIM_REAL_PYTHON": sys.executable,
        **shim_env,
    }
    project_vars = (
        ({"name": "DEPLOY_SSH_KEY_PARAMETER", "value": key_parameter, "type": "PLAINTEXT"},)
        if key_parameter
        else ()
    )
    out = io.StringIO()
    result = run_build(
        BuildRequest(
            source_dir=source,
            builds_dir=tmp_path / "builds",
            project=Project("post-build", environment_variables=project_vars),
            base_environment=base,
            echo=out,
        )
    )
    return PostBuild(result, out.getvalue(), log.read_text().splitlines(), shims)


def _pushes(build: PostBuild) -> list[str]:
    return [call for call in build.calls if call.startswith("docker push")]


def _deploys(build: PostBuild) -> list[str]:
    return [call for call in build.calls if call.startswith("ansible-playbook")]


# ---------------------------------------------------------------------------------------------
# Push, or deploy what ECR has


def test_a_tag_already_in_ecr_is_deployed_without_a_push(tmp_path, aws):
    digest = _pushed_before(aws)
    build = post_build(tmp_path, aws)
    assert build.result.status == "SUCCEEDED", build.output
    assert _pushes(build) == []
    # The build's one line about it (the runner also echoes each command's text, hence the exact line).
    assert (
        f"{ECR}/deploykit/app:{TAG} is already in ECR ({digest}; tags are immutable): "
        "not pushed again, deploying that image"
    ) in build.output.splitlines()
    (deploy,) = _deploys(build)
    assert f"-e app_deploy_image_repository={ECR}/deploykit/app -e app_deploy_image_tag={TAG}" in deploy


def test_a_tag_not_in_ecr_is_pushed(tmp_path, aws):
    build = post_build(tmp_path, aws)
    assert build.result.status == "SUCCEEDED", build.output
    assert _pushes(build) == [f"docker push {ECR}/deploykit/app:{TAG}"]
    assert f"could not ask ECR whether {TAG}" not in build.output


def test_any_other_answer_of_ecr_pushes_and_says_why(tmp_path, moto, deploy_key):
    # No repository at all (nor anything else): ECR answers, but not "no such image".
    build = post_build(tmp_path, moto, key_parameter=None)
    assert _pushes(build) == [f"docker push {ECR}/deploykit/app:{TAG}"]
    said = [line for line in build.output.splitlines() if line.startswith(f"could not ask ECR whether {TAG}")]
    assert len(said) == 1
    assert "RepositoryNotFoundException" in said[0]


def test_the_local_registry_is_pushed_to_without_asking_ecr(tmp_path, aws):
    # Even with the tag in (moto's) ECR: the local registry stand-in is not ECR, and is pushed to.
    _pushed_before(aws)
    build = post_build(tmp_path, aws, registry=LOCAL_REGISTRY, key_parameter=None)
    assert build.result.status == "SUCCEEDED", build.output
    assert _pushes(build) == [f"docker push {LOCAL_REGISTRY}/deploykit/app:{TAG}"]
    assert f"{LOCAL_REGISTRY}/deploykit/app:{TAG} is already in ECR" not in build.output


def test_a_failed_build_pushes_and_deploys_nothing(tmp_path, aws):
    build = post_build(tmp_path, aws, build_fails=True)
    assert build.result.status == "FAILED"
    assert "build failed: nothing pushed, nothing deployed" in build.output.splitlines()
    assert build.calls == []


# ---------------------------------------------------------------------------------------------
# The deploy key and the host keys


def test_the_deploy_runs_with_the_key_in_an_agent_and_the_fleets_host_keys(tmp_path, aws, deploy_key):
    build = post_build(tmp_path, aws)
    assert build.result.status == "SUCCEEDED", build.output
    # The agent ansible-playbook would use holds the key from SSM.
    assert deploy_key[1] in build.read("agent-keys")
    # The host keys: written by the tool for this inventory, outside the source tree, given to SSH.
    (tool,) = [call for call in build.calls if call.startswith("known_hosts")]
    assert "--inventory inventory/production" in tool
    known = Path(build.read("known-hosts-file"))
    assert known.read_text().strip() == HOST_KEY_LINE
    assert not known.is_relative_to(tmp_path / "src")


def test_the_deploy_key_is_in_no_log_line_and_in_no_file_of_the_build(tmp_path, aws, deploy_key):
    build = post_build(tmp_path, aws)
    assert build.result.status == "SUCCEEDED", build.output
    secret = [
        line for line in deploy_key[0].read_text().splitlines() if line and not line.startswith("-----")
    ]
    log = build.result.log_file.read_text()
    for line in secret:
        assert line not in build.output
        assert line not in log
    written = [
        path
        for path in tmp_path.rglob("*")
        if path.is_file() and any(line in path.read_text(errors="replace") for line in secret)
    ]
    assert written == []


@pytest.mark.parametrize(
    "failure",
    [pytest.param({"SHIM_DEPLOY_EXIT": "2"}, id="deploy-fails"), pytest.param({}, id="deploy-succeeds")],
)
def test_the_agent_ends_with_the_build(tmp_path, aws, failure):
    build = post_build(tmp_path, aws, **failure)
    assert build.result.status == ("FAILED" if failure else "SUCCEEDED"), build.output
    pid = build.read("agent-pid")
    assert pid
    assert not _agent_alive(pid)


def test_missing_host_keys_stop_before_the_deploy_and_end_the_agent(tmp_path, aws):
    build = post_build(tmp_path, aws, SHIM_NO_HOST_KEYS="1")
    assert build.result.status == "FAILED"
    assert "deploykit: no SSH host keys in the console output of web-1" in build.output.splitlines()
    assert _deploys(build) == []
    pid = build.read("agent-pid")
    assert pid
    assert not _agent_alive(pid)


def test_a_missing_deploy_key_parameter_stops_before_the_deploy(tmp_path, moto):
    build = post_build(tmp_path, moto, registry=LOCAL_REGISTRY)
    assert build.result.status == "FAILED"
    assert "ParameterNotFound" in build.output
    assert _deploys(build) == []


def test_without_the_key_parameter_ssh_is_left_to_the_inventory(tmp_path, aws):
    # The local stand-in's builds: the project defines no DEPLOY_SSH_KEY_PARAMETER. An agent of the
    # caller's (the runner passes its environment on) must survive the build.
    caller_agent = subprocess.Popen(["sleep", "60"])
    try:
        build = post_build(
            tmp_path, aws, registry=LOCAL_REGISTRY, key_parameter=None, SSH_AGENT_PID=str(caller_agent.pid)
        )
        assert build.result.status == "SUCCEEDED", build.output
        said = (
            "DEPLOY_SSH_KEY_PARAMETER is not set: SSH uses the key and known_hosts that inventory/production"
        )
        assert f"{said} names" in build.output.splitlines()
        assert not [call for call in build.calls if call.startswith("known_hosts")]
        assert build.read("known-hosts-file") == "unset"
        assert caller_agent.poll() is None
    finally:
        caller_agent.send_signal(signal.SIGTERM)
        caller_agent.wait()
