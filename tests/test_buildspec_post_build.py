"""buildspec.yml's post_build, run verbatim by the local CodeBuild runner.

The `aws` CLI is the real one (the virtualenv's), against a moto server of this module's own on a
free port of 127.0.0.1: ECR's DescribeImages answers as moto does (an image "pushed" with PutImage,
API only; the stand-in's ECR answers from its registry, tests/test_ecr_registry.py). `docker` is a
small script that records how it was called: no image is pushed. What this proves: which answers
skip the push, whatever the registry's name, and that the build exports the image and the commit the deploy
stage takes (buildspec-deploy.yml; tests/test_buildspec_deploy.py runs that one). An ECR that
refuses DescribeImages cannot be had from moto (it enforces no IAM); a repository that does not
exist is the other answer tested.
"""

from __future__ import annotations

import io
import json
import os
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

SHIMS = {
    "docker": r"""
        echo "docker $*" >> "$SHIM_LOG"
    """,
}


@pytest.fixture(scope="module")
def moto(moto_server, request: pytest.FixtureRequest) -> str:
    """A moto server of this module's own."""
    return moto_server(request)


@pytest.fixture
def aws(moto: str) -> Iterator[str]:
    """moto with the repository, as provision.yml leaves an account; reset after."""
    keys = {
        "aws_access_key_id": _KEYS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": _KEYS["AWS_SECRET_ACCESS_KEY"],
    }
    boto3.client("ecr", endpoint_url=moto, region_name=REGION, **keys).create_repository(
        repositoryName="deploykit/app", imageTagMutability="IMMUTABLE"
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


def post_build(
    tmp_path: Path,
    endpoint: str,
    *,
    registry: str = ECR,
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
        "env": {
            "shell": "bash",
            "variables": BUILDSPEC["env"]["variables"],
            "exported-variables": BUILDSPEC["env"]["exported-variables"],
        },
        "phases": {
            "pre_build": {
                "commands": [
                    f"export ACCOUNT_ID={ACCOUNT} REGISTRY={registry} IMAGE_TAG={TAG}",
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
        **shim_env,
    }
    out = io.StringIO()
    result = run_build(
        BuildRequest(
            source_dir=source,
            builds_dir=tmp_path / "builds",
            project=Project("post-build"),
            base_environment=base,
            echo=out,
        )
    )
    return PostBuild(result, out.getvalue(), log.read_text().splitlines(), shims)


def _pushes(build: PostBuild) -> list[str]:
    return [call for call in build.calls if call.startswith("docker push")]


# ---------------------------------------------------------------------------------------------
# Push, or take what ECR has


def test_a_tag_already_in_ecr_is_taken_without_a_push(tmp_path, aws):
    digest = _pushed_before(aws)
    build = post_build(tmp_path, aws)
    assert build.result.status == "SUCCEEDED", build.output
    assert _pushes(build) == []
    # The build's one line about it (the runner also echoes each command's text, hence the exact line).
    assert (
        f"{ECR}/deploykit/app:{TAG} is already in ECR ({digest}; tags are immutable): "
        "not pushed again, the deploy takes that image"
    ) in build.output.splitlines()
    assert build.result.exported_variables["IMAGE_URI"] == f"{ECR}/deploykit/app:{TAG}"


def test_the_build_exports_the_image_and_the_commit_for_the_deploy_stage(tmp_path, aws):
    build = post_build(tmp_path, aws)
    assert build.result.status == "SUCCEEDED", build.output
    exported = build.result.exported_variables
    assert list(exported) == ["IMAGE_URI", "SOURCE_COMMIT"]
    assert exported["IMAGE_URI"] == f"{ECR}/deploykit/app:{TAG}"
    assert exported["SOURCE_COMMIT"] == build.result.environment["CODEBUILD_RESOLVED_SOURCE_VERSION"]


def test_a_tag_not_in_ecr_is_pushed(tmp_path, aws):
    build = post_build(tmp_path, aws)
    assert build.result.status == "SUCCEEDED", build.output
    assert _pushes(build) == [f"docker push {ECR}/deploykit/app:{TAG}"]
    assert f"could not ask ECR whether {TAG}" not in build.output


def test_any_other_answer_of_ecr_pushes_and_says_why(tmp_path, moto):
    # No repository at all (nor anything else): ECR answers, but not "no such image".
    build = post_build(tmp_path, moto)
    assert _pushes(build) == [f"docker push {ECR}/deploykit/app:{TAG}"]
    said = [line for line in build.output.splitlines() if line.startswith(f"could not ask ECR whether {TAG}")]
    assert len(said) == 1
    assert "RepositoryNotFoundException" in said[0]


def test_the_local_registry_takes_the_same_path(tmp_path, aws):
    # One path in both worlds: with the stand-in's registry the build asks ECR's API as well (the
    # stand-in's answers from that registry: tests/test_ecr_registry.py) and takes what is there.
    _pushed_before(aws)
    build = post_build(tmp_path, aws, registry=LOCAL_REGISTRY)
    assert build.result.status == "SUCCEEDED", build.output
    assert _pushes(build) == []
    assert f"{LOCAL_REGISTRY}/deploykit/app:{TAG} is already in ECR" in build.output


def test_a_failed_build_pushes_and_deploys_nothing(tmp_path, aws):
    build = post_build(tmp_path, aws, build_fails=True)
    assert build.result.status == "FAILED"
    assert "build failed: nothing pushed, nothing deployed" in build.output.splitlines()
    assert build.calls == []
