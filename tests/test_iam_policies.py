"""The IAM policy documents of policies/, read as IAM reads them (moto stores policies, enforces none).

The web instances' role: no ECR rights (the deploy logs in to the registry with a token fetched on
the controller), writes only to its own CloudWatch Logs group, and in Session Manager mode holds
what the SSM agent needs for sessions and no parameter read. Every Resource "*" in policies/ has
its reason in .iam-lint.yml, and the lint that says so (deploykit.iam_lint) finds what it must.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploykit import iam_lint
from deploykit.system import ROOT

LOG_GROUP = "/deploykit/production/app"
LOG_GROUP_ARN = f"arn:aws:logs:eu-west-1:123456789012:log-group:{LOG_GROUP}"
AWS_IAM_DEFAULTS = ROOT / "roles" / "aws_iam" / "defaults" / "main.yml"
AWS_FLEET_DEFAULTS = ROOT / "roles" / "aws_fleet" / "defaults" / "main.yml"
# The parameter reads a host must not have: the deploy key and the app's secrets are parameters.
PARAMETER_READS = (
    "ssm:GetParameter",
    "ssm:GetParameters",
    "ssm:GetParametersByPath",
    "ssm:GetParameterHistory",
)


@pytest.fixture(scope="module")
def renderings() -> list[iam_lint.Rendering]:
    return iam_lint.render()


def _documents(renderings: list[iam_lint.Rendering], name: str) -> list[dict[str, Any]]:
    documents = [json.loads(r.text) for r in renderings if r.name == name]
    assert documents, f"policies/{name} was not rendered"
    return documents


def _list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _grants(documents: list[dict[str, Any]], action: str) -> bool:
    """Whether an Allow statement's Action (with IAM's wildcards, case-insensitive) covers action."""
    return any(
        fnmatch.fnmatch(action.lower(), pattern.lower())
        for document in documents
        for statement in document["Statement"]
        if statement["Effect"] == "Allow"
        for pattern in _list(statement.get("Action", []))
    )


def _allowed_actions(documents: list[dict[str, Any]]) -> set[str]:
    return {
        action
        for document in documents
        for statement in document["Statement"]
        for action in _list(statement["Action"])
    }


def test_the_web_role_has_no_ecr_right(renderings):
    documents = _documents(renderings, "web-instance-role.json.j2") + _documents(
        renderings, "web-instance-ssm.json.j2"
    )
    assert not [action for action in _allowed_actions(documents) if action.lower().startswith("ecr")]
    assert not _grants(documents, "ecr:GetAuthorizationToken")
    assert not _grants(documents, "ecr:BatchGetImage")


def test_the_web_role_writes_only_to_its_own_log_group(renderings):
    (document,) = _documents(renderings, "web-instance-role.json.j2")
    assert _allowed_actions([document]) == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:DescribeLogStreams",
    }
    resources = {resource for statement in document["Statement"] for resource in _list(statement["Resource"])}
    assert resources == {f"{LOG_GROUP_ARN}:log-stream:*", LOG_GROUP_ARN, f"{LOG_GROUP_ARN}:*"}
    assert not _grants([document], "logs:CreateLogGroup")


def test_the_log_group_the_role_may_write_to_is_the_one_provisioning_makes():
    # Two roles, one name: aws_fleet makes the group, aws_iam scopes the role to it.
    iam = yaml.safe_load(AWS_IAM_DEFAULTS.read_text())
    fleet = yaml.safe_load(AWS_FLEET_DEFAULTS.read_text())
    assert iam["aws_iam_web_log_group_name"] == fleet["aws_fleet_log_group_name"]
    assert iam["aws_iam_policy_vars"]["web_log_group"] == "{{ aws_iam_web_log_group_name }}"


NOTICE_TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:deploykit-production-deploy-notices"


def test_the_deploy_role_publishes_to_the_deploy_notices_topic_alone(renderings):
    # The deploy_notice callback publishes with the deploy role: to its environment's topic, and
    # nothing else of SNS (no topic to read, list, create or subscribe to).
    for document in _documents(renderings, "codebuild-deploy-role.json.j2"):
        sns = [
            statement
            for statement in document["Statement"]
            if any(action.lower().startswith("sns:") for action in _list(statement["Action"]))
        ]
        assert [(statement["Action"], statement["Resource"]) for statement in sns] == [
            ("sns:Publish", NOTICE_TOPIC_ARN)
        ]
    others = [r for r in renderings if r.name != "codebuild-deploy-role.json.j2"]
    assert not [
        action for action in _allowed_actions([json.loads(r.text) for r in others]) if "sns" in action
    ]


def test_the_topic_the_deploy_role_publishes_to_is_the_one_the_environment_names():
    # One name: the inventory's deploy_notice_topic, which the deploys publish to, aws_notices
    # makes (playbooks/vars/provision.yml) and aws_iam scopes the deploy role to.
    provision = yaml.safe_load((ROOT / "playbooks" / "vars" / "provision.yml").read_text())
    environment = yaml.safe_load(
        (ROOT / "inventory" / "production" / "group_vars" / "all" / "environment.yml").read_text()
    )
    assert provision["provision_deploy_notice_topic"] == "{{ deploy_notice_topic | default('') }}"
    assert provision["aws_notices_topic_name"] == "{{ provision_deploy_notice_topic }}"
    iam = yaml.safe_load(AWS_IAM_DEFAULTS.read_text())
    assert (
        iam["aws_iam_policy_vars"]["deploy_notice_topic"]
        == "{{ provision_deploy_notice_topic | default('') }}"
    )
    assert (
        environment["deploy_notice_topic"].replace("{{ app_env }}", "production")
        == NOTICE_TOPIC_ARN.split(":")[-1]
    )
    assert iam_lint.REPRESENTATIVE["deploy_notice_topic"] == NOTICE_TOPIC_ARN.split(":")[-1]


@pytest.mark.parametrize("action", PARAMETER_READS)
def test_the_session_manager_policy_reads_no_parameter(renderings, action):
    documents = _documents(renderings, "web-instance-ssm.json.j2") + _documents(
        renderings, "web-instance-role.json.j2"
    )
    assert not _grants(documents, action)
    assert not _grants(documents, "kms:Decrypt")


def test_the_session_manager_policy_is_what_the_agent_needs_for_sessions(renderings):
    (document,) = _documents(renderings, "web-instance-ssm.json.j2")
    assert _allowed_actions([document]) == {
        "ssm:UpdateInstanceInformation",
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
    }
    (register,) = [s for s in document["Statement"] if s["Action"] == "ssm:UpdateInstanceInformation"]
    assert register["Resource"] == "arn:aws:ec2:eu-west-1:123456789012:instance/*"


def test_session_manager_mode_attaches_no_managed_policy():
    # AmazonSSMManagedInstanceCore allows ssm:GetParameter on "*": the role attaches nothing by default.
    defaults = yaml.safe_load(AWS_IAM_DEFAULTS.read_text())
    assert defaults["aws_iam_web_managed_policies"] == []
    assert "AmazonSSMManagedInstanceCore" not in AWS_IAM_DEFAULTS.read_text().replace(
        "Not AmazonSSMManagedInstanceCore", ""
    )


def test_every_resource_star_in_policies_has_its_reason(renderings):
    config = iam_lint.load_config()
    assert iam_lint.unjustified_wildcards(renderings, config) == []
    for sids in config["resource_star"].values():
        for reason in sids.values():
            assert len(reason.split()) >= 8, f"a reason says why, not just that: {reason!r}"


def test_parliament_finds_nothing_that_is_not_accepted_with_a_reason(renderings):
    problems, _ = iam_lint.findings(renderings, iam_lint.load_config())
    assert problems == []


# ---------------------------------------------------------------------------------------------
# The lint finds what it must


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    shutil.copytree(iam_lint.POLICIES, directory)
    return directory


def _add(directory: Path, name: str, statement: dict[str, Any]) -> None:
    (directory / name).write_text(json.dumps({"Version": "2012-10-17", "Statement": [statement]}, indent=2))


def test_a_new_policy_file_is_linted_without_being_named_anywhere(policies):
    _add(
        policies,
        "someone-new.json",
        {"Sid": "ReadEverything", "Effect": "Allow", "Action": "s3:*", "Resource": "*"},
    )
    renderings = iam_lint.render(policies)
    problems = iam_lint.unjustified_wildcards(renderings, iam_lint.load_config())
    assert [str(p) for p in problems if p.file == "someone-new.json"] == [
        'someone-new.json: statement ReadEverything has Resource "*" and no reason for it under '
        "resource_star in .iam-lint.yml: scope it, or say why AWS allows nothing narrower"
    ]


def test_a_finding_nobody_accepted_fails_the_lint(policies):
    _add(
        policies,
        "typo.json.j2",
        {
            "Sid": "Typo",
            "Effect": "Allow",
            "Action": "s3:GetObjekt",
            "Resource": "arn:{{ partition }}:s3:::b/*",
        },
    )
    problems, _ = iam_lint.findings(iam_lint.render(policies), iam_lint.load_config())
    assert any(p.file == "typo.json.j2" and "UNKNOWN_ACTION" in p.what and "Typo" in p.what for p in problems)


def test_a_reason_that_excuses_nothing_any_more_fails_the_lint(renderings):
    config = iam_lint.load_config()
    config["resource_star"]["web-instance-ssm.json.j2"]["Gone"] = (
        "a statement that was scoped since, or removed"
    )
    problems = iam_lint.unjustified_wildcards(renderings, config)
    assert [str(p) for p in problems] == [
        'web-instance-ssm.json.j2: resource_star entry Gone matches no statement with Resource "*": remove it'
    ]


def test_the_role_renders_each_template_with_its_tasks_template_vars():
    expressions = iam_lint.template_vars_expressions()
    assert expressions["web-instance-role.json.j2"] == {"aws_iam_policy_vars"}
    assert expressions["web-instance-ssm.json.j2"] == {"aws_iam_policy_vars"}


def test_the_cli_passes_on_the_repository(capsys):
    assert iam_lint.main([]) == 0
    assert "no finding" in capsys.readouterr().out
