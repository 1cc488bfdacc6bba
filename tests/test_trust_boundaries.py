"""The build that runs pushed code holds no production secret and cannot start a deploy.

moto enforces no IAM, so the isolation is shown on the policy documents themselves: every policy of
policies/ is rendered as roles/aws_iam renders it, and a small evaluator answers "may this principal
do this action on this resource" by IAM's rules for identity policies with Allow statements only
(action and resource wildcards matched; conditions assumed to hold, which can only widen what is
allowed, so a "no" here is a "no" on AWS). It is written here because no maintained library
evaluates IAM offline: AWS's own policy simulator is an API call (moto does not serve it). The
evaluator is checked against the deploy role, which must be allowed what the build role must not.

The documents are rendered as the lint renders them (deploykit/iam_lint.py: Ansible's templating
with the role's own template_vars, for a GitHub and a CodeCommit source). The runner side: a command
of the build project sees no SSH material of the caller's and no variable that names or holds a
secret.
"""

from __future__ import annotations

import fnmatch
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploykit import codebuild, demo, git_trigger, iam_lint
from deploykit.system import ROOT

REGION, ACCOUNT = iam_lint.REPRESENTATIVE["aws_region"], "123456789012"
ENV = iam_lint.REPRESENTATIVE["app_env"]
CODEBUILD = yaml.safe_load((ROOT / "playbooks" / "vars" / "codebuild.yml").read_text())
BUILD_PROJECT = CODEBUILD["codebuild_project_name"]
DEPLOY_PROJECT = CODEBUILD["codebuild_deploy_project_name"]

PARAMETER = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/deploykit/{ENV}/{{}}"
SECRETS = [PARAMETER.format(name) for name in ("DEPLOY_SSH_KEY", "DATABASE_URL", "DJANGO_SECRET_KEY")]
READ_PARAMETER = (
    "ssm:GetParameter",
    "ssm:GetParameters",
    "ssm:GetParametersByPath",
    "ssm:GetParameterHistory",
)
BUILD_PROJECT_ARN = f"arn:aws:codebuild:{REGION}:{ACCOUNT}:project/{BUILD_PROJECT}"
DEPLOY_PROJECT_ARN = f"arn:aws:codebuild:{REGION}:{ACCOUNT}:project/{DEPLOY_PROJECT}"
DEPLOY_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/deploykit-{ENV}-codebuild-deploy"
START_DEPLOY = (
    "codebuild:StartBuild",
    "codebuild:StartBuildBatch",
    "codebuild:RetryBuild",
    "codebuild:UpdateProject",
)
# Every policy document as roles/aws_iam renders it (Ansible's templating, the role's own
# template_vars), for a GitHub and a CodeCommit source: the lint's renderings (deploykit/iam_lint.py).
RENDERINGS = iam_lint.render()


def documents(name: str) -> list[tuple[str, dict[str, Any]]]:
    """(scenario, document) for each distinct rendering of one policy file."""
    found = [(r.scenario, json.loads(r.text)) for r in RENDERINGS if r.name == name]
    assert found, f"policies/{name} was not rendered"
    return found


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def allows(policy: dict[str, Any], action: str, resource: str) -> bool:
    """Whether an identity policy allows `action` on `resource` (its conditions taken as met)."""
    for statement in policy["Statement"]:
        unsupported = {"NotAction", "NotResource", "NotPrincipal"} & statement.keys()
        assert not unsupported, f"{statement.get('Sid')}: the evaluator does not read {unsupported}"
        assert statement["Effect"] in ("Allow", "Deny")
        if statement["Effect"] != "Allow":
            continue
        action_matches = any(
            fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in _listed(statement["Action"])
        )
        resource_matches = any(
            fnmatch.fnmatchcase(resource, pattern) for pattern in _listed(statement["Resource"])
        )
        if action_matches and resource_matches:
            return True
    return False


@pytest.fixture(
    params=[r for r in RENDERINGS if r.name == "codebuild-service-role.json.j2"], ids=lambda r: r.scenario
)
def build_role(request: pytest.FixtureRequest) -> dict[str, Any]:
    return json.loads(request.param.text)


@pytest.fixture
def deploy_roles() -> list[dict[str, Any]]:
    return [document for _, document in documents("codebuild-deploy-role.json.j2")]


@pytest.mark.parametrize("secret", SECRETS, ids=lambda arn: arn.rsplit("/", 1)[-1])
@pytest.mark.parametrize("action", READ_PARAMETER)
def test_the_build_role_reads_no_secret(build_role, deploy_roles, action, secret):
    assert not allows(build_role, action, secret)
    if action in ("ssm:GetParameter", "ssm:GetParameters"):
        # The evaluator does see such a right where there is one.
        assert all(allows(deploy_role, action, secret) for deploy_role in deploy_roles)


def test_the_build_role_reads_no_secrets_manager_secret_and_decrypts_nothing(build_role):
    for action, resource in [
        ("secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:deploykit/x"),
        ("kms:Decrypt", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/any"),
    ]:
        assert not allows(build_role, action, resource)


@pytest.mark.parametrize("action", START_DEPLOY)
def test_the_build_role_cannot_start_or_change_the_deploy_project(build_role, action):
    assert not allows(build_role, action, DEPLOY_PROJECT_ARN)


def test_the_build_role_cannot_become_the_deploy_role_or_hand_it_out(build_role):
    for action in ("sts:AssumeRole", "iam:PassRole", "iam:PutRolePolicy", "iam:UpdateAssumeRolePolicy"):
        assert not allows(build_role, action, DEPLOY_ROLE_ARN)


def test_the_build_role_cannot_rewire_what_starts_the_deploy(build_role):
    rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/deploykit-{ENV}-deploy-on-build"
    for action in ("events:PutRule", "events:PutTargets", "events:PutEvents"):
        assert not allows(build_role, action, rule)


def test_the_build_role_cannot_reach_the_fleet_or_the_lock(build_role):
    lock = PARAMETER.format("deploy-lock")
    assert not allows(build_role, "ssm:PutParameter", lock)
    assert not allows(build_role, "ec2:GetConsoleOutput", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0abc")
    assert not allows(build_role, "ec2:DescribeInstances", "*")
    # Nor run in the VPC: the build project has no VPC configuration, so no path to port 22.
    assert not allows(build_role, "ec2:CreateNetworkInterface", "*")


def test_only_the_deploy_role_may_remove_the_marks_that_keep_held_images(build_role, deploy_roles):
    # A mark removed is an image the lifecycle may expire under a host: the pushed code must not.
    repository = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/deploykit/app"
    assert not allows(build_role, "ecr:BatchDeleteImage", repository)
    for deploy_role in deploy_roles:
        for action in ("ecr:ListImages", "ecr:BatchGetImage", "ecr:PutImage", "ecr:BatchDeleteImage"):
            assert allows(deploy_role, action, repository), action
        assert not allows(deploy_role, "ecr:BatchDeleteImage", repository.replace("deploykit/app", "other"))


def test_the_build_role_may_push_the_image_it_builds(build_role):
    # What it needs, so that the "no" answers above are not a role that may do nothing.
    assert allows(build_role, "ecr:PutImage", f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/deploykit/app")


def test_each_codebuild_role_trusts_only_its_own_project():
    trusted = {
        document["Statement"][0]["Condition"]["ArnLike"]["aws:SourceArn"]
        for _, document in documents("codebuild-trust.json.j2")
    }
    assert trusted == {BUILD_PROJECT_ARN, DEPLOY_PROJECT_ARN}


def test_eventbridge_may_start_the_deploy_and_for_codecommit_the_build_only():
    renderings = documents("events-start-build.json.j2")
    assert {scenario for scenario, _ in renderings} == {"GITHUB", "CODECOMMIT"}
    for scenario, policy in renderings:
        assert allows(policy, "codebuild:StartBuild", DEPLOY_PROJECT_ARN)
        assert allows(policy, "codebuild:StartBuild", BUILD_PROJECT_ARN) is (scenario == "CODECOMMIT")
        assert not allows(
            policy, "codebuild:StartBuild", f"arn:aws:codebuild:{REGION}:{ACCOUNT}:project/other"
        )


# ---------------------------------------------------------------------------------------------
# The project definitions and the runner


def test_the_build_project_names_no_secret_and_no_deploy_key():
    project = codebuild.load_project()
    assert [v for v in project.environment_variables if v["type"] != "PLAINTEXT"] == []
    defaults = yaml.safe_load((ROOT / "roles" / "aws_codebuild" / "defaults" / "main.yml").read_text())
    build_variables = defaults["aws_codebuild_environment_variables"]
    assert "DEPLOY_SSH_KEY_PARAMETER" not in build_variables
    assert "PARAMETER_STORE" not in build_variables
    assert "SECRETS_MANAGER" not in build_variables
    assert "DEPLOY_SSH_KEY_PARAMETER" in defaults["aws_codebuild_deploy_environment_variables"]


def test_the_build_buildspec_exports_what_the_deploy_rule_reads_in_that_order():
    exported = yaml.safe_load((ROOT / "buildspec.yml").read_text())["env"]["exported-variables"]
    assert tuple(exported) == git_trigger.DEPLOY_INPUTS
    defaults = yaml.safe_load((ROOT / "roles" / "aws_codebuild" / "defaults" / "main.yml").read_text())
    paths = defaults["aws_codebuild_deploy_input_paths"]
    base = "$.detail.additional-information.exported-environment-variables"
    assert paths == {"image": f"{base}[{exported.index('IMAGE_URI')}].value",
                     "commit": f"{base}[{exported.index('SOURCE_COMMIT')}].value"}  # fmt: skip


def test_the_build_buildspec_fetches_no_secret_and_deploys_nothing():
    text = (ROOT / "buildspec.yml").read_text()
    spec = yaml.safe_load(text)
    assert "parameter-store" not in spec["env"]
    assert "secrets-manager" not in spec["env"]
    for word in ("ssm get-parameter", "ssh-agent", "ansible-playbook", "DEPLOY_SSH_KEY"):
        assert word not in text


def test_a_build_command_sees_no_ssh_material_of_the_caller(tmp_path: Path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "buildspec.yml").write_text(
        yaml.safe_dump({"version": 0.2, "phases": {"pre_build": {"commands": ['env > "$OUT"']}}})
    )
    caller = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "OUT": str(tmp_path / "env.txt"),
        "SSH_AUTH_SOCK": "/tmp/operator-agent.sock",
        "SSH_AGENT_PID": "4242",
        "ANSIBLE_PRIVATE_KEY_FILE": "/home/operator/.ssh/deploy",
        "DEPLOYKIT_KNOWN_HOSTS": "/home/operator/known_hosts",
    }
    result = codebuild.run_build(
        codebuild.BuildRequest(
            source_dir=source,
            builds_dir=tmp_path / "builds",
            project=codebuild.load_project(),
            env_overrides=demo.local_build_overrides(),
            base_environment=caller,
            echo=io.StringIO(),
        )
    )
    assert result.succeeded
    seen = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines() if "=" in line)
    assert not set(codebuild.CALLER_SSH_VARIABLES) & seen.keys()
    assert not [
        name for name in seen if "DEPLOY_SSH_KEY" in name or name in ("DATABASE_URL", "DJANGO_SECRET_KEY")
    ]
