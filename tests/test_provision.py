"""playbooks/provision.yml against moto, and the codebuild_webhook module against botocore's Stubber.

moto (a server on a free port of 127.0.0.1) is the stand-in for AWS's APIs: these tests prove what
the playbook asks of ECR, IAM, EC2, SSM and CodeBuild and what moto stores, not how AWS answers.
moto answers CodeBuild's UpdateProject and every webhook call with HTTP 500, so the moto runs skip
the tasks tagged codebuild_webhook (both runs) and codebuild_project (the second run, where the
module would call UpdateProject); those calls are tested here with Stubber instead. moto enforces
no IAM policy and does not encrypt SecureString parameters. docs/provision.md has the full list.
"""

from __future__ import annotations

import copy
import datetime
import fnmatch
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.validate
import jinja2
import pytest
import yaml
from botocore.config import Config
from botocore.stub import Stubber
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deploykit import standin
from deploykit.system import ROOT

PLAYBOOK = ROOT / "playbooks" / "provision.yml"
POLICIES = ROOT / "policies"
CODEBUILD_VARS = yaml.safe_load((ROOT / "playbooks" / "vars" / "codebuild.yml").read_text())
BIN = Path(sys.executable).parent
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
ENV = "provtest"
PREFIX = f"deploykit-{ENV}"
VPC_CIDR = "10.20.0.0/16"
PUBLIC_NAME = f"app.{ENV}.example.com"  # the host name of the environment's app_public_url
SSH_CIDR = "192.0.2.0/24"
# The instances' key pair: not there before the first run, so the play makes it (the default name).
KEY_NAME = f"deploykit-{ENV}"
DEPLOY_KEY_PARAMETER = f"/deploykit/{ENV}/DEPLOY_SSH_KEY"
# The deploy notices' topic, as the environment's deploy_notice_topic names it.
NOTICE_TOPIC = f"deploykit-{ENV}-deploy-notices"
NOTICE_TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:{NOTICE_TOPIC}"
KNOWN_DATABASE_URL = "postgres://app:known-before-provisioning@db.example.test:5432/app"
# The partial runs README documents, and a task each must run (the rest of the play is skipped).
DOCUMENTED_TAGS = {
    "ecr,iam": [
        "Ensure the ECR repository of the app image exists",
        "Ensure the CodeBuild service role exists",
    ],
    "ssm": ["Ensure the app's secrets exist in SSM Parameter Store", "Find the instances' key pair"],
    "load_balancer": ["Ensure the load balancer listens on HTTPS and redirects HTTP to it"],
}
# The moto runs skip what moto cannot answer (module docstring).
FIRST_RUN_SKIPS = "codebuild_webhook"
SECOND_RUN_SKIPS = "codebuild_webhook,codebuild_project"
# The unit tests run under pytest-xdist with --dist loadfile (Makefile): this module's tests share
# one worker, and its provisioning runs are made once. (xdist_group marks are not honoured with
# pytest 9.2: pytest-dev/pytest-xdist#1386.)
# The stand-in's dummy keys (moto accepts any; "testing" maps to its default account).
_KEYS = {
    "aws_access_key_id": standin.environment()["AWS_ACCESS_KEY_ID"],
    "aws_secret_access_key": standin.environment()["AWS_SECRET_ACCESS_KEY"],
}


def _client(service: str, endpoint: str | None = None):
    """A boto3 client for moto at `endpoint`, or, without one, for a Stubber (it never sends)."""
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        config=Config(retries={"max_attempts": 2}),
        **_KEYS,
    )


# ---------------------------------------------------------------------------------------------
# moto and the playbook runs


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any]:
        """The ansible.posix.json callback's document."""
        return json.loads(self.stdout)

    def results(self, task_name: str) -> dict[str, Any]:
        """The first run of the task of that name; a role's tasks are reported as "role : name"."""
        for task in self.report["plays"][0]["tasks"]:
            if task["task"]["name"].split(" : ", 1)[-1] == task_name:
                return task["hosts"]["localhost"]
        raise KeyError(f"no task {task_name!r} in this run")

    def failure_messages(self) -> str:
        """The messages of the tasks that failed, as the play printed them (not JSON-escaped)."""
        return "\n".join(
            str(task["hosts"]["localhost"].get("msg", ""))
            for task in self.report["plays"][0]["tasks"]
            if task["hosts"].get("localhost", {}).get("failed")
        )

    def changed_tasks(self) -> list[str]:
        return [
            task["task"]["name"]
            for task in self.report["plays"][0]["tasks"]
            if task["hosts"].get("localhost", {}).get("changed")
        ]


@dataclass
class Provisioned:
    endpoint: str
    env: dict[str, str]
    inventory: Path
    vpc_id: str
    web_subnet_ids: list[str]
    codebuild_subnet_ids: list[str]
    public_subnet_ids: list[str]
    ami_id: str
    first: Run
    second: Run
    check_webhook: Run
    # The documented partial runs (README), each after the second run: tags -> run.
    tagged: dict[str, Run]
    # The fleet as the second run left it, before the scale-down run below changes it.
    instances_after_second_run: list[dict[str, Any]]
    # The target group's instance ids then.
    targets_after_second_run: set[str]
    scale_down: Run

    def client(self, service: str):
        return _client(service, self.endpoint)

    @property
    def runs(self) -> list[Run]:
        return [self.first, self.second, self.check_webhook, *self.tagged.values(), self.scale_down]


@pytest.fixture(scope="module")
def moto_endpoint(moto_server, request: pytest.FixtureRequest) -> str:
    """A moto server of this module's own that refuses what AWS refuses: a key pair or an AMI
    that does not exist."""
    return moto_server(
        request,
        MOTO_IAM_LOAD_MANAGED_POLICIES="true",
        MOTO_ENABLE_KEYPAIR_VALIDATION="true",
        MOTO_ENABLE_AMI_VALIDATION="true",
    )


def _tool_env(endpoint: str) -> dict[str, str]:
    env = {**standin.tool_env(), "AWS_ENDPOINT_URL": endpoint}
    # The json callback's document is the whole of stdout; profile_tasks would print into it.
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    env["ANSIBLE_CALLBACKS_ENABLED"] = "deploy_lock"
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    for name in ("ANSIBLE_INVENTORY", "ANSIBLE_INVENTORY_CACHE"):
        env.pop(name, None)
    return env


def _playbook(env: dict[str, str], inventory: Path, *args: str) -> Run:
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), str(PLAYBOOK), "-i", str(inventory), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    return Run(result.returncode, result.stdout, result.stderr)


def _write_inventory(
    path: Path, infra: dict[str, Any], env: str = ENV, public_name: str | None = PUBLIC_NAME
) -> None:
    """An environment directory like inventory/production, with this test's data."""
    config = yaml.safe_load((ROOT / "inventory" / "production" / "aws_ec2.yml").read_text())
    config["regions"] = [REGION]
    config["filters"]["tag:Env"] = env
    group_vars = path / "group_vars" / "all"
    group_vars.mkdir(parents=True)
    (path / "aws_ec2.yml").write_text(yaml.safe_dump(config))
    environment = {
        "app_env": env,
        "aws_region": REGION,
        "deploy_notice_topic": "deploykit-{{ app_env }}-deploy-notices",
    }
    if public_name is not None:
        environment["app_public_url"] = f"https://{public_name}"
    (group_vars / "environment.yml").write_text(yaml.safe_dump(environment))
    (group_vars / "provision.yml").write_text(yaml.safe_dump(infra))


def _import_certificate(endpoint: str, name: str) -> str:
    """A self-signed certificate for `name`, imported into moto's ACM (the HTTPS listener needs one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _client("acm", endpoint).import_certificate(
        Certificate=certificate.public_bytes(serialization.Encoding.PEM),
        PrivateKey=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )["CertificateArn"]


def _target_group(elbv2) -> dict[str, Any]:
    (group,) = elbv2.describe_target_groups(Names=[f"{PREFIX}-web"])["TargetGroups"]
    return group


def _targets(elbv2) -> set[str]:
    arn = _target_group(elbv2)["TargetGroupArn"]
    return {
        t["Target"]["Id"]
        for t in elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    }


def _fleet(ec2) -> list[dict[str, Any]]:
    filters = [{"Name": "tag:Env", "Values": [ENV]}, {"Name": "tag:Role", "Values": ["web"]}]
    reservations = ec2.describe_instances(Filters=filters)["Reservations"]
    return [instance for reservation in reservations for instance in reservation["Instances"]]


@pytest.fixture(scope="module")
def provisioned(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Provisioned:
    """An empty account with a VPC, provisioned twice, checked once for the webhook, then scaled down."""
    ec2, ssm = _client("ec2", moto_endpoint), _client("ssm", moto_endpoint)
    # What the environment owns before provisioning: its network and a Debian AMI (no key pair).
    vpc_id = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.20.{number}.0/24", AvailabilityZone=f"{REGION}{zone}")[
            "Subnet"
        ]["SubnetId"]
        for number, zone in ((1, "a"), (2, "b"), (3, "a"), (4, "a"), (5, "b"))
    ]
    ami_id = ec2.register_image(
        Name="debian-12-amd64-20250101-1234",
        Architecture="x86_64",
        RootDeviceName="/dev/xvda",
        VirtualizationType="hvm",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}],
    )["ImageId"]
    # A secret set by hand before the first run: provisioning must keep it.
    ssm.put_parameter(Name=f"/deploykit/{ENV}/DATABASE_URL", Value=KNOWN_DATABASE_URL, Type="SecureString")

    infra = {
        "provision_vpc_id": vpc_id,
        "provision_web_subnet_ids": subnets[:2],
        "provision_codebuild_subnet_ids": subnets[2:3],
        "provision_web_ami_id": ami_id,
        "provision_web_instance_count": 2,
        "aws_load_balancer_subnet_ids": subnets[3:],
        "aws_load_balancer_certificate_arn": _import_certificate(moto_endpoint, PUBLIC_NAME),
        "provision_codebuild_source_location": "https://github.com/example/deploykit.git",
        # Optional per-environment settings, given where an environment gives them.
        "provision_ssh_cidrs": [SSH_CIDR],
        "provision_web_ssm_enabled": True,
    }
    inventory = tmp_path_factory.mktemp("inventory") / ENV
    _write_inventory(inventory, infra)
    env = _tool_env(moto_endpoint)

    first = _playbook(env, inventory, "--skip-tags", FIRST_RUN_SKIPS)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    # Someone subscribes to the deploy notices (docs/aws.md) between the runs.
    _client("sns", moto_endpoint).subscribe(
        TopicArn=NOTICE_TOPIC_ARN, Protocol="email", Endpoint="ops@example.com"
    )
    second = _playbook(env, inventory, "--skip-tags", SECOND_RUN_SKIPS)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    # Check mode: the webhook module reads the project from moto (BatchGetProjects answers) and
    # reports what it would create, without calling CreateWebhook (which moto cannot answer).
    check_webhook = _playbook(env, inventory, "--check", "--tags", "codebuild_webhook")
    assert check_webhook.returncode == 0, check_webhook.stdout[-4000:] + check_webhook.stderr[-4000:]
    tagged = {tags: _playbook(env, inventory, "--tags", tags) for tags in DOCUMENTED_TAGS}
    instances = _fleet(ec2)
    targets = _targets(_client("elbv2", moto_endpoint))
    scale_down = _playbook(env, inventory, "--tags", "network,ec2", "-e", "provision_web_instance_count=1")
    assert scale_down.returncode == 0, scale_down.stdout[-4000:] + scale_down.stderr[-4000:]
    return Provisioned(
        endpoint=moto_endpoint,
        env=env,
        inventory=inventory,
        vpc_id=vpc_id,
        web_subnet_ids=subnets[:2],
        codebuild_subnet_ids=subnets[2:3],
        public_subnet_ids=subnets[3:],
        ami_id=ami_id,
        first=first,
        second=second,
        check_webhook=check_webhook,
        tagged=tagged,
        instances_after_second_run=instances,
        targets_after_second_run=targets,
        scale_down=scale_down,
    )


def _render_policy(name: str, **extra: Any) -> dict[str, Any]:
    """A policy document of the repository, rendered with this test's account, region and names."""
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 - JSON
    environment.filters["to_json"] = json.dumps
    values = {
        "partition": "aws",
        "account_id": ACCOUNT,
        "region": REGION,
        "ecr_repository": "deploykit/app",
        "codebuild_project_name": CODEBUILD_VARS["codebuild_project_name"],
        "codebuild_deploy_project_name": CODEBUILD_VARS["codebuild_deploy_project_name"],
        "started_projects": [CODEBUILD_VARS["codebuild_deploy_project_name"]],
        "ssm_prefix": f"/deploykit/{ENV}",
        "deploy_lock_parameter": f"/deploykit/{ENV}/deploy-lock",
        "app": "deploykit",
        "env": ENV,
        "web_log_group": f"/deploykit/{ENV}/app",
        "codecommit_repository_arn": "",
        "deploy_notice_topic": NOTICE_TOPIC,
        **extra,
    }
    return json.loads(environment.from_string((POLICIES / name).read_text()).render(**values))


def _security_group(provisioned: Provisioned, name: str) -> dict[str, Any]:
    filters = [{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [provisioned.vpc_id]}]
    (group,) = provisioned.client("ec2").describe_security_groups(Filters=filters)["SecurityGroups"]
    return group


def _ingress(group: dict[str, Any]) -> set[tuple[str, int, int, str]]:
    """(protocol, from port, to port, source) for every source of every inbound rule."""
    rules = set()
    for permission in group["IpPermissions"]:
        sources = [r["CidrIp"] for r in permission.get("IpRanges", [])]
        sources += [r["CidrIpv6"] for r in permission.get("Ipv6Ranges", [])]
        sources += [p["GroupId"] for p in permission.get("UserIdGroupPairs", [])]
        for source in sources:
            rules.add((permission["IpProtocol"], permission["FromPort"], permission["ToPort"], source))
    return rules


def _parameter(provisioned: Provisioned, name: str) -> dict[str, Any]:
    return provisioned.client("ssm").get_parameter(Name=f"/deploykit/{ENV}/{name}", WithDecryption=True)[
        "Parameter"
    ]


def _tag(resource: dict[str, Any], key: str) -> str | None:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags", [])}.get(key)


# ---------------------------------------------------------------------------------------------
# ECR


def test_ecr_repository_has_immutable_tags_and_scans_on_push(provisioned):
    (repository,) = provisioned.client("ecr").describe_repositories(repositoryNames=["deploykit/app"])[
        "repositories"
    ]
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}


def test_ecr_lifecycle_policy_keeps_held_images_and_the_last_30(provisioned):
    text = provisioned.client("ecr").get_lifecycle_policy(repositoryName="deploykit/app")[
        "lifecyclePolicyText"
    ]
    held, rest = json.loads(text)["rules"]
    assert held["selection"] == {
        "tagStatus": "tagged",
        "tagPrefixList": ["held-"],
        "countType": "imageCountMoreThan",
        "countNumber": 1000,
    }
    assert rest["selection"] == {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 30}
    assert [rule["action"] for rule in (held, rest)] == [{"type": "expire"}] * 2


# ---------------------------------------------------------------------------------------------
# IAM (moto stores the documents; it enforces none of them)


# Each CodeBuild project's role, its policy, and the project its trust admits.
CODEBUILD_ROLES = {
    "codebuild": ("codebuild-service-role", CODEBUILD_VARS["codebuild_project_name"]),
    "codebuild-deploy": ("codebuild-deploy-role", CODEBUILD_VARS["codebuild_deploy_project_name"]),
}


@pytest.mark.parametrize("role", CODEBUILD_ROLES)
def test_each_codebuild_role_is_assumable_by_its_own_project_of_this_account_only(provisioned, role):
    document = provisioned.client("iam").get_role(RoleName=f"{PREFIX}-{role}")["Role"][
        "AssumeRolePolicyDocument"
    ]
    project = CODEBUILD_ROLES[role][1]
    assert document == _render_policy("codebuild-trust.json.j2", trusted_project=project)
    (statement,) = document["Statement"]
    assert statement["Principal"] == {"Service": "codebuild.amazonaws.com"}
    assert statement["Condition"] == {
        "StringEquals": {"aws:SourceAccount": ACCOUNT},
        "ArnLike": {"aws:SourceArn": f"arn:aws:codebuild:{REGION}:{ACCOUNT}:project/{project}"},
    }


@pytest.mark.parametrize("role", CODEBUILD_ROLES)
def test_each_codebuild_role_has_the_repository_policy_document(provisioned, role):
    subnet_arns = [f"arn:aws:ec2:{REGION}:{ACCOUNT}:subnet/{s}" for s in provisioned.codebuild_subnet_ids]
    policy = CODEBUILD_ROLES[role][0]
    document = provisioned.client("iam").get_role_policy(RoleName=f"{PREFIX}-{role}", PolicyName=policy)[
        "PolicyDocument"
    ]
    assert document == _render_policy(f"{policy}.json.j2", codebuild_subnet_arns=subnet_arns)


def test_the_deploy_notices_topic_is_made_and_keeps_the_subscriptions_made_by_hand(provisioned):
    sns = provisioned.client("sns")
    assert NOTICE_TOPIC_ARN in [t["TopicArn"] for t in sns.list_topics()["Topics"]]
    assert (
        sns.get_topic_attributes(TopicArn=NOTICE_TOPIC_ARN)["Attributes"]["DisplayName"]
        == f"deploykit {ENV} deploys"
    )
    tags = sns.list_tags_for_resource(ResourceArn=NOTICE_TOPIC_ARN)["Tags"]
    assert {tag["Key"]: tag["Value"] for tag in tags} == {"App": "deploykit", "Env": ENV}
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=NOTICE_TOPIC_ARN)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [("email", "ops@example.com")]


def test_deploy_role_may_publish_to_the_deploy_notices_topic_only(provisioned):
    publishes = [
        s for s in _deploy_policy(provisioned)["Statement"] if any(a.startswith("sns:") for a in _actions(s))
    ]
    assert [(s["Action"], s["Resource"]) for s in publishes] == [("sns:Publish", NOTICE_TOPIC_ARN)]


def test_deploy_role_may_write_only_the_deploy_lock_parameter(provisioned):
    writes = [
        s
        for s in _deploy_policy(provisioned)["Statement"]
        if {"ssm:PutParameter", "ssm:DeleteParameter"} & set(_actions(s))
    ]
    assert [s["Resource"] for s in writes] == [
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/deploykit/{ENV}/deploy-lock"
    ]


def test_build_role_touches_no_parameter_and_no_fleet(provisioned):
    # tests/test_trust_boundaries.py evaluates the documents; here, as provisioned.
    actions = {a for s in _codebuild_policy(provisioned)["Statement"] for a in _actions(s)}
    assert not {a for a in actions if a.startswith(("ssm:", "secretsmanager:", "kms:", "sts:", "iam:"))}
    assert not {a for a in actions if a.startswith("ec2:")}


def _codebuild_policy(provisioned: Provisioned) -> dict[str, Any]:
    return provisioned.client("iam").get_role_policy(
        RoleName=f"{PREFIX}-codebuild", PolicyName="codebuild-service-role"
    )["PolicyDocument"]


def _deploy_policy(provisioned: Provisioned) -> dict[str, Any]:
    return provisioned.client("iam").get_role_policy(
        RoleName=f"{PREFIX}-codebuild-deploy", PolicyName="codebuild-deploy-role"
    )["PolicyDocument"]


def _statement(document: dict[str, Any], sid: str) -> dict[str, Any]:
    (statement,) = [s for s in document["Statement"] if s.get("Sid") == sid]
    return statement


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else action


def test_deploy_role_may_read_the_console_of_its_environments_instances_only(provisioned):
    # The host keys of the fleet (deploykit/known_hosts.py): GetConsoleOutput, nothing else, and only
    # on instances tagged as this environment's.
    statement = _statement(_deploy_policy(provisioned), "ReadTheFleetsHostKeysFromTheConsole")
    assert _actions(statement) == ["ec2:GetConsoleOutput"]
    assert statement["Resource"] == f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*"
    assert statement["Condition"] == {
        "StringEquals": {"aws:ResourceTag/App": "deploykit", "aws:ResourceTag/Env": ENV}
    }


def test_codebuild_role_may_ask_whether_a_tag_is_pushed_in_the_one_repository(provisioned):
    statement = _statement(_codebuild_policy(provisioned), "SeeWhetherTheTagIsPushed")
    assert _actions(statement) == ["ecr:DescribeImages"]
    assert statement["Resource"] == f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/deploykit/app"


def test_deploy_role_reads_the_deploy_key_and_needs_no_kms_statement(provisioned):
    document = _deploy_policy(provisioned)
    reads = _statement(document, "ReadTheEnvironmentsParameters")
    assert "ssm:GetParameter" in _actions(reads)
    assert fnmatch.fnmatchcase(
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{DEPLOY_KEY_PARAMETER}", reads["Resource"]
    )
    # SecureStrings under the AWS-managed key aws/ssm, whose key policy lets the account's principals
    # decrypt through SSM: an IAM statement for KMS would add nothing.
    assert not [a for s in document["Statement"] for a in _actions(s) if a.startswith("kms:")]


def test_codebuild_roles_of_a_github_source_may_not_clone_from_codecommit(provisioned):
    for document in (_codebuild_policy(provisioned), _deploy_policy(provisioned)):
        assert not [a for s in document["Statement"] for a in _actions(s) if "codecommit" in a]


def test_web_role_has_the_repository_policy_documents_and_no_managed_policy(provisioned):
    iam = provisioned.client("iam")
    role = iam.get_role(RoleName=f"{PREFIX}-web")["Role"]
    assert role["AssumeRolePolicyDocument"] == json.loads((POLICIES / "ec2-trust.json").read_text())
    document = iam.get_role_policy(RoleName=f"{PREFIX}-web", PolicyName="web-instance-role")["PolicyDocument"]
    assert document == _render_policy("web-instance-role.json.j2")
    # Session Manager (provision_web_ssm_enabled here) through the scoped inline policy, not
    # AmazonSSMManagedInstanceCore, which may read every parameter, the deploy key among them.
    ssm = iam.get_role_policy(RoleName=f"{PREFIX}-web", PolicyName="web-instance-ssm")["PolicyDocument"]
    assert ssm == _render_policy("web-instance-ssm.json.j2")
    assert iam.list_attached_role_policies(RoleName=f"{PREFIX}-web")["AttachedPolicies"] == []


def test_the_containers_log_group_exists_with_its_retention(provisioned):
    groups = provisioned.client("logs").describe_log_groups(logGroupNamePrefix=f"/deploykit/{ENV}/app")
    assert [(g["logGroupName"], g.get("retentionInDays")) for g in groups["logGroups"]] == [
        (f"/deploykit/{ENV}/app", 30)
    ]


def test_web_instance_profile_holds_the_web_role(provisioned):
    profile = provisioned.client("iam").get_instance_profile(InstanceProfileName=f"{PREFIX}-web")[
        "InstanceProfile"
    ]
    assert [role["RoleName"] for role in profile["Roles"]] == [f"{PREFIX}-web"]


# ---------------------------------------------------------------------------------------------
# Security groups


def test_web_group_admits_http_from_the_load_balancer_only_and_ssh_from_codebuild_and_operators(provisioned):
    codebuild_group = _security_group(provisioned, f"{PREFIX}-codebuild")["GroupId"]
    load_balancer_group = _security_group(provisioned, f"{PREFIX}-lb")["GroupId"]
    assert _ingress(_security_group(provisioned, f"{PREFIX}-web")) == {
        ("tcp", 80, 80, load_balancer_group),
        ("tcp", 22, 22, codebuild_group),
        ("tcp", 22, 22, SSH_CIDR),
    }


def test_codebuild_group_admits_nothing(provisioned):
    assert _ingress(_security_group(provisioned, f"{PREFIX}-codebuild")) == set()


@pytest.mark.parametrize("role", ["web", "codebuild", "lb"])
def test_groups_allow_all_egress(provisioned, role):
    egress = _security_group(provisioned, f"{PREFIX}-{role}")["IpPermissionsEgress"]
    assert [(p["IpProtocol"], [r["CidrIp"] for r in p["IpRanges"]]) for p in egress] == [
        ("-1", ["0.0.0.0/0"])
    ]


# ---------------------------------------------------------------------------------------------
# SSM parameters (moto stores SecureString values unencrypted)


def test_secret_key_is_generated_as_a_securestring_when_absent(provisioned):
    parameter = _parameter(provisioned, "DJANGO_SECRET_KEY")
    assert parameter["Type"] == "SecureString"
    assert re.fullmatch(r"[A-Za-z0-9_-]{50}", parameter["Value"])


def test_secret_key_is_not_regenerated_by_the_second_run(provisioned):
    assert _parameter(provisioned, "DJANGO_SECRET_KEY")["Version"] == 1


def test_existing_parameter_keeps_its_value(provisioned):
    parameter = _parameter(provisioned, "DATABASE_URL")
    assert parameter["Value"] == KNOWN_DATABASE_URL
    assert parameter["Version"] == 1


def test_secret_values_never_appear_in_the_output(provisioned):
    secrets = [_parameter(provisioned, "DJANGO_SECRET_KEY")["Value"], KNOWN_DATABASE_URL]
    for run in provisioned.runs:
        for secret in secrets:
            assert secret not in run.stdout
            assert secret not in run.stderr
    # The task itself ran and was censored, not skipped.
    results = provisioned.first.results("Ensure the app's secrets exist in SSM Parameter Store")
    assert results["censored"].startswith("the output has been hidden")


# ---------------------------------------------------------------------------------------------
# The deploy key (moto makes real ed25519 key pairs; it does not encrypt the SecureString)


def _key_pair(provisioned: Provisioned, name: str = KEY_NAME) -> dict[str, Any]:
    (pair,) = provisioned.client("ec2").describe_key_pairs(KeyNames=[name], IncludePublicKey=True)["KeyPairs"]
    return pair


def _deploy_key(provisioned: Provisioned) -> dict[str, Any]:
    return provisioned.client("ssm").get_parameter(Name=DEPLOY_KEY_PARAMETER, WithDecryption=True)[
        "Parameter"
    ]


def test_the_play_makes_the_instances_key_pair_when_there_is_none(provisioned):
    pair = _key_pair(provisioned)
    assert pair["KeyType"] == "ed25519"
    assert (_tag(pair, "App"), _tag(pair, "Env")) == ("deploykit", ENV)


def test_the_deploy_key_is_the_private_half_of_the_key_pair_as_a_securestring(provisioned, tmp_path):
    parameter = _deploy_key(provisioned)
    assert parameter["Type"] == "SecureString"
    # ssh-keygen -y derives the public half, as ssh-add would read the key (a key moto made for this test).
    private = tmp_path / "deploy-key"
    private.touch(mode=0o600)
    private.write_text(parameter["Value"] + "\n")
    public = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(private)], capture_output=True, text=True, check=True
    )
    assert public.stdout.split()[:2] == _key_pair(provisioned)["PublicKey"].split()[:2]


def test_the_second_run_keeps_the_key_pair_and_the_deploy_key(provisioned):
    assert _deploy_key(provisioned)["Version"] == 1
    # One key pair of that name, the one the instances were launched with.
    assert {i["KeyName"] for i in provisioned.instances_after_second_run} == {KEY_NAME}


def test_the_deploy_key_never_appears_in_the_output(provisioned):
    key = _deploy_key(provisioned)["Value"]
    body = [line for line in key.splitlines() if line and not line.startswith("-----")]
    assert body
    for run in provisioned.runs:
        for line in body:
            assert line not in run.stdout
            assert line not in run.stderr
    for task in (
        "Ensure the instances' key pair exists",
        "Ensure the deploy key is stored in SSM Parameter Store",
    ):
        assert provisioned.first.results(task)["censored"].startswith("the output has been hidden")


# ---------------------------------------------------------------------------------------------
# EC2 instances


def test_instances_are_tagged_and_named_for_the_inventory(provisioned):
    fleet = [i for i in provisioned.instances_after_second_run if i["State"]["Name"] == "running"]
    assert sorted(_tag(i, "Name") for i in fleet) == [f"{PREFIX}-web-1", f"{PREFIX}-web-2"]
    for instance in fleet:
        assert (_tag(instance, "App"), _tag(instance, "Env"), _tag(instance, "Role")) == (
            "deploykit",
            ENV,
            "web",
        )


def test_instances_are_spread_over_the_web_subnets(provisioned):
    by_name = {_tag(i, "Name"): i for i in provisioned.instances_after_second_run}
    assert [by_name[f"{PREFIX}-web-{n}"]["SubnetId"] for n in (1, 2)] == provisioned.web_subnet_ids


def test_instances_run_the_ami_type_key_profile_and_group_asked_for(provisioned):
    web_group = _security_group(provisioned, f"{PREFIX}-web")["GroupId"]
    for instance in provisioned.instances_after_second_run:
        assert instance["ImageId"] == provisioned.ami_id
        assert instance["InstanceType"] == "t3.small"
        assert instance["KeyName"] == KEY_NAME
        assert instance["IamInstanceProfile"]["Arn"].endswith(f":instance-profile/{PREFIX}-web")
        assert [g["GroupId"] for g in instance["SecurityGroups"]] == [web_group]
        assert instance["MetadataOptions"]["HttpTokens"] == "required"


def test_second_run_launches_no_more_instances(provisioned):
    assert len(provisioned.instances_after_second_run) == 2


def test_inventory_finds_the_provisioned_hosts(provisioned):
    result = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(provisioned.inventory), "--list", "--yaml", "--export"],
        cwd=ROOT,
        env=provisioned.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    groups = yaml.safe_load(result.stdout)["all"]["children"]
    # After the scale-down run below: web-2 was terminated, so only web-1 is deployed to.
    assert set(groups["role_web"]["hosts"]) == {f"{PREFIX}-web-1"}


def test_lowering_the_count_terminates_the_highest_numbered_instance(provisioned):
    states = {_tag(i, "Name"): i["State"]["Name"] for i in _fleet(provisioned.client("ec2"))}
    assert states == {f"{PREFIX}-web-1": "running", f"{PREFIX}-web-2": "terminated"}


# ---------------------------------------------------------------------------------------------
# The load balancer (moto's ELBv2 and ACM: it stores what is asked and checks the certificate
# exists; it runs no health check and serves no traffic)

LB_DEFAULTS = yaml.safe_load((ROOT / "roles" / "aws_load_balancer" / "defaults" / "main.yml").read_text())


def _load_balancer(provisioned: Provisioned) -> dict[str, Any]:
    (balancer,) = provisioned.client("elbv2").describe_load_balancers(Names=[PREFIX])["LoadBalancers"]
    return balancer


def _listeners(provisioned: Provisioned) -> dict[int, dict[str, Any]]:
    arn = _load_balancer(provisioned)["LoadBalancerArn"]
    listeners = provisioned.client("elbv2").describe_listeners(LoadBalancerArn=arn)["Listeners"]
    return {listener["Port"]: listener for listener in listeners}


def test_target_group_settings_are_plain_literals_other_code_can_read():
    # The local stand-in's HAProxy reads these with a YAML parser: no Jinja in them.
    assert {
        key: LB_DEFAULTS[key]
        for key in LB_DEFAULTS
        if key.endswith(("_port", "_path", "_seconds", "_threshold"))
    } == {
        "aws_load_balancer_target_port": 80,
        "aws_load_balancer_health_check_path": "/readyz/",
        "aws_load_balancer_health_check_interval_seconds": 10,
        "aws_load_balancer_health_check_timeout_seconds": 5,
        "aws_load_balancer_healthy_threshold": 2,
        "aws_load_balancer_unhealthy_threshold": 2,
        "aws_load_balancer_deregistration_delay_seconds": 30,
    }


def test_load_balancer_is_internet_facing_in_the_public_subnets_with_its_own_group(provisioned):
    balancer = _load_balancer(provisioned)
    assert (balancer["Type"], balancer["Scheme"], balancer["IpAddressType"]) == (
        "application",
        "internet-facing",
        "ipv4",
    )
    assert sorted(zone["SubnetId"] for zone in balancer["AvailabilityZones"]) == sorted(
        provisioned.public_subnet_ids
    )
    assert balancer["SecurityGroups"] == [_security_group(provisioned, f"{PREFIX}-lb")["GroupId"]]


def test_load_balancer_group_admits_https_and_http_from_anywhere(provisioned):
    assert _ingress(_security_group(provisioned, f"{PREFIX}-lb")) == {
        ("tcp", 443, 443, "0.0.0.0/0"),
        ("tcp", 80, 80, "0.0.0.0/0"),
    }


def test_target_group_checks_the_apps_readiness_probe_on_the_instances_port(provisioned):
    group = _target_group(provisioned.client("elbv2"))
    assert (group["Protocol"], group["Port"], group["TargetType"], group["VpcId"]) == (
        "HTTP",
        LB_DEFAULTS["aws_load_balancer_target_port"],
        "instance",
        provisioned.vpc_id,
    )
    assert (
        group["HealthCheckProtocol"],
        group["HealthCheckPath"],
        group["HealthCheckIntervalSeconds"],
        group["HealthCheckTimeoutSeconds"],
        group["HealthyThresholdCount"],
        group["UnhealthyThresholdCount"],
        group["Matcher"],
    ) == ("HTTP", "/readyz/", 10, 5, 2, 2, {"HttpCode": "200"})
    attributes = provisioned.client("elbv2").describe_target_group_attributes(
        TargetGroupArn=group["TargetGroupArn"]
    )
    delay = {a["Key"]: a["Value"] for a in attributes["Attributes"]}["deregistration_delay.timeout_seconds"]
    assert delay == "30"


def test_target_group_holds_the_running_web_instances(provisioned):
    running = {
        i["InstanceId"] for i in provisioned.instances_after_second_run if i["State"]["Name"] == "running"
    }
    assert len(running) == 2
    assert provisioned.targets_after_second_run == running


def test_lowering_the_count_deregisters_the_terminated_instance(provisioned):
    by_name = {_tag(i, "Name"): i["InstanceId"] for i in _fleet(provisioned.client("ec2"))}
    assert _targets(provisioned.client("elbv2")) == {by_name[f"{PREFIX}-web-1"]}


def test_https_listener_forwards_to_the_target_group_with_the_certificate_and_a_tls13_policy(provisioned):
    https = _listeners(provisioned)[443]
    assert https["Protocol"] == "HTTPS"
    assert https["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    (certificate,) = https["Certificates"]
    (stored,) = provisioned.client("acm").list_certificates()["CertificateSummaryList"]
    assert certificate["CertificateArn"] == stored["CertificateArn"]
    (action,) = https["DefaultActions"]
    assert (action["Type"], action["TargetGroupArn"]) == (
        "forward",
        _target_group(provisioned.client("elbv2"))["TargetGroupArn"],
    )


def test_http_listener_redirects_to_https_with_301(provisioned):
    http = _listeners(provisioned)[80]
    assert http["Protocol"] == "HTTP"
    (action,) = http["DefaultActions"]
    assert action["Type"] == "redirect"
    assert action["RedirectConfig"] == {
        "Protocol": "HTTPS",
        "Port": "443",
        "Host": "#{host}",
        "Path": "/#{path}",
        "Query": "#{query}",
        "StatusCode": "HTTP_301",
    }
    assert set(_listeners(provisioned)) == {443, 80}


def test_the_play_says_where_to_point_the_public_name(provisioned):
    message = provisioned.first.results("Show where to point the public name")["msg"]
    assert _load_balancer(provisioned)["DNSName"] in message
    assert f"Point {PUBLIC_NAME} at it with a CNAME record" in message
    assert "manages no DNS" in message


# ---------------------------------------------------------------------------------------------
# CodeBuild (CreateProject and BatchGetProjects in moto; UpdateProject and webhooks with Stubber)


def test_codebuild_build_project_is_created_as_specified(provisioned):
    (project,) = provisioned.client("codebuild").batch_get_projects(names=["deploykit"])["projects"]
    assert project["source"] == {
        "type": "GITHUB",
        "location": "https://github.com/example/deploykit.git",
        "gitCloneDepth": 1,
        "buildspec": "buildspec.yml",
    }
    assert project["environment"] == {
        "type": "LINUX_CONTAINER",
        "image": "aws/codebuild/standard:7.0",
        "computeType": "BUILD_GENERAL1_SMALL",
        "privilegedMode": True,
        # Nothing about the deploy: no environment, no key parameter.
        "environmentVariables": [{"name": "ECR_REPOSITORY", "value": "deploykit/app", "type": "PLAINTEXT"}],
    }
    # LOCAL_CUSTOM_CACHE: without it buildspec.yml's cache.paths (pip's cache) caches nothing.
    assert project["cache"] == {
        "type": "LOCAL",
        "modes": ["LOCAL_DOCKER_LAYER_CACHE", "LOCAL_SOURCE_CACHE", "LOCAL_CUSTOM_CACHE"],
    }
    # Outside the VPC: what the push brings has no network path to the instances.
    assert "vpcConfig" not in project or not project["vpcConfig"].get("subnets")
    assert project["serviceRole"] == f"arn:aws:iam::{ACCOUNT}:role/{PREFIX}-codebuild"
    assert project["artifacts"] == {"type": "NO_ARTIFACTS"}


def test_codebuild_deploy_project_is_created_as_specified(provisioned):
    name = CODEBUILD_VARS["codebuild_deploy_project_name"]
    (project,) = provisioned.client("codebuild").batch_get_projects(names=[name])["projects"]
    codebuild_group = _security_group(provisioned, f"{PREFIX}-codebuild")["GroupId"]
    # The buildspec is the text of buildspec-deploy.yml, stored in the project: not a path in the source.
    assert project["source"] == {
        "type": "GITHUB",
        "location": "https://github.com/example/deploykit.git",
        "gitCloneDepth": 1,
        "buildspec": (ROOT / "buildspec-deploy.yml").read_text().rstrip("\n"),
    }
    assert project["environment"] == {
        "type": "LINUX_CONTAINER",
        "image": "aws/codebuild/standard:7.0",
        "computeType": "BUILD_GENERAL1_SMALL",
        "privilegedMode": False,
        "environmentVariables": [
            {"name": "DEPLOY_ENV", "value": ENV, "type": "PLAINTEXT"},
            # The parameter's name, which buildspec-deploy.yml reads the key from; not the key.
            {"name": "DEPLOY_SSH_KEY_PARAMETER", "value": DEPLOY_KEY_PARAMETER, "type": "PLAINTEXT"},
        ],
    }
    assert project["vpcConfig"] == {
        "vpcId": provisioned.vpc_id,
        "subnets": provisioned.codebuild_subnet_ids,
        "securityGroupIds": [codebuild_group],
    }
    assert project["serviceRole"] == f"arn:aws:iam::{ACCOUNT}:role/{PREFIX}-codebuild-deploy"


@pytest.mark.parametrize("project", ["codebuild_project_name", "codebuild_deploy_project_name"])
def test_each_project_runs_one_build_at_a_time(provisioned, project):
    # Set with the stand-in's UpdateProject (deploykit/moto_server.py); the second run, which does
    # run the task (tag codebuild_limit), changes nothing (test_second_run_changes_nothing_...).
    name = CODEBUILD_VARS[project]
    (stored,) = provisioned.client("codebuild").batch_get_projects(names=[name])["projects"]
    assert stored["concurrentBuildLimit"] == 1
    assert (
        provisioned.second.results("Ensure each project runs one build at a time")["results"][0]["changed"]
        is False
    )


def test_a_build_that_succeeds_starts_the_deploy_with_its_image_and_commit(provisioned):
    events = provisioned.client("events")
    rule = events.describe_rule(Name=f"{PREFIX}-deploy-on-build")
    assert json.loads(rule["EventPattern"]) == {
        "source": ["aws.codebuild"],
        "detail-type": ["CodeBuild Build State Change"],
        "detail": {"build-status": ["SUCCEEDED"], "project-name": [CODEBUILD_VARS["codebuild_project_name"]]},
    }
    (target,) = events.list_targets_by_rule(Rule=f"{PREFIX}-deploy-on-build")["Targets"]
    deploy = CODEBUILD_VARS["codebuild_deploy_project_name"]
    assert target["Arn"] == f"arn:aws:codebuild:{REGION}:{ACCOUNT}:project/{deploy}"
    assert target["RoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/{PREFIX}-events"
    exported = "$.detail.additional-information.exported-environment-variables"
    assert target["InputTransformer"]["InputPathsMap"] == {
        "image": f"{exported}[0].value",
        "commit": f"{exported}[1].value",
    }
    # What StartBuild receives, once EventBridge has put the event's values in.
    template = target["InputTransformer"]["InputTemplate"]
    filled = json.loads(template.replace("<image>", "r/deploykit/app:abc").replace("<commit>", "f00d"))
    assert filled == {
        "sourceVersion": "f00d",
        "environmentVariablesOverride": [
            {"name": "IMAGE_URI", "value": "r/deploykit/app:abc", "type": "PLAINTEXT"}
        ],
    }


def test_second_run_changes_nothing_moto_can_answer(provisioned):
    assert provisioned.second.changed_tasks() == []
    assert provisioned.second.report["stats"]["localhost"]["changed"] == 0


@pytest.mark.parametrize("tags", DOCUMENTED_TAGS)
def test_documented_partial_runs_run_their_tasks_and_change_nothing_after_a_full_run(provisioned, tags):
    run = provisioned.tagged[tags]
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    for task in DOCUMENTED_TAGS[tags]:
        assert run.results(task).get("skipped") is not True
    assert run.changed_tasks() == []
    # Nothing outside the tags ran: no instance task, no CodeBuild task.
    ran = [task["task"]["name"] for task in run.report["plays"][0]["tasks"]]
    assert not [
        name for name in ran if "web instances are running" in name or "CodeBuild project exists" in name
    ]


def test_a_github_project_has_no_codecommit_rule(provisioned):
    result = provisioned.first.results("Ensure no CodeCommit rule starts the build of a GitHub project")
    assert result["changed"] is False
    rules = provisioned.client("events").list_rules(NamePrefix=PREFIX)["Rules"]
    assert [rule["Name"] for rule in rules] == [f"{PREFIX}-deploy-on-build"]


def test_webhook_task_asks_for_the_filter_groups_of_codebuild_yml(provisioned):
    result = provisioned.check_webhook.results("Ensure pushes that pass the filter groups start a build")
    assert result["changed"] is True
    assert result["operation"] == "CreateWebhook"
    assert result["webhook"]["filterGroups"] == CODEBUILD_VARS["codebuild_webhook_filter_groups"]


# ---------------------------------------------------------------------------------------------
# community.aws.codebuild_project's second run, with Stubber (moto answers UpdateProject with 500)


@pytest.mark.parametrize(
    ("task", "name"),
    [
        ("Ensure the CodeBuild project exists", CODEBUILD_VARS["codebuild_project_name"]),
        ("Ensure the CodeBuild deploy project exists", CODEBUILD_VARS["codebuild_deploy_project_name"]),
    ],
)
def test_codebuild_project_second_run_sends_update_project_and_reports_no_change(provisioned, task, name):
    from ansible_collections.community.aws.plugins.modules import codebuild_project

    params = provisioned.first.results(task)["invocation"]["module_args"]
    (stored,) = provisioned.client("codebuild").batch_get_projects(names=[name])["projects"]
    # As AWS describes a project: with lastModified (the module drops it before comparing) and
    # the default queue timeout (moto says 0, below the API's minimum of 5).
    aws_says = {
        "lastModified": datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
        "queuedTimeoutInMinutes": 480,
    }
    project = {**stored, **aws_says}
    client = _client("codebuild")
    with Stubber(client) as stub:
        stub.add_response("batch_get_projects", {"projects": [copy.deepcopy(project)]}, {"names": [name]})
        expected = {
            key: stored[key]
            for key in ("name", "description", "source", "artifacts", "cache", "environment", "serviceRole")
        }
        expected |= {"timeoutInMinutes": 60, "tags": stored["tags"]}
        # The deploy project runs in the VPC; the build project has no VPC configuration to send.
        expected |= {"vpcConfig": stored["vpcConfig"]} if "vpcConfig" in stored else {}
        stub.add_response("update_project", {"project": copy.deepcopy(project)}, expected)
        _, changed = codebuild_project.create_or_update_project(client=client, params=params)
        stub.assert_no_pending_responses()
    assert changed is False


# ---------------------------------------------------------------------------------------------
# plugins/modules/codebuild_build_limit.py: what the stand-in's UpdateProject cannot show


def _load_module(name: str):
    path = ROOT / "plugins" / "modules" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"deploykit_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build_limit = _load_module("codebuild_build_limit")


# ---------------------------------------------------------------------------------------------
# plugins/modules/codebuild_webhook.py, with Stubber


webhook = _load_module("codebuild_webhook")
PUSH_TO_MAIN = CODEBUILD_VARS["codebuild_webhook_filter_groups"]
PROJECT_ARN = f"arn:aws:codebuild:{REGION}:{ACCOUNT}:project/deploykit"
PROVIDER_SECRET = "webhook-secret-from-the-provider"  # noqa: S105 - a made-up value to look for


def _project(hook: dict[str, Any] | None = None) -> dict[str, Any]:
    project = {"name": "deploykit", "arn": PROJECT_ARN}
    if hook is not None:
        project["webhook"] = hook
    return project


def _hook(groups: list[list[dict[str, Any]]], **extra: Any) -> dict[str, Any]:
    return {
        "url": "https://api.github.com/repos/example/deploykit/hooks/1",
        "payloadUrl": f"https://codebuild.{REGION}.amazonaws.com/webhooks?t=abc",
        "buildType": "BUILD",
        "filterGroups": groups,
        **extra,
    }


@pytest.fixture
def codebuild() -> Iterator[tuple[Any, Stubber]]:
    client = _client("codebuild")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def _describes(stub: Stubber, project: dict[str, Any] | None) -> None:
    stub.add_response(
        "batch_get_projects", {"projects": [project] if project else []}, {"names": ["deploykit"]}
    )


def test_build_limit_is_removed_with_the_apis_minus_one(codebuild):
    client, stub = codebuild
    _describes(stub, {**_project(), "concurrentBuildLimit": 1})
    stub.add_response(
        "update_project", {"project": _project()}, {"name": "deploykit", "concurrentBuildLimit": -1}
    )
    assert build_limit.ensure_limit(client, "deploykit", None, check_mode=False) == (True, 1)


def test_build_limit_in_check_mode_reads_and_changes_nothing(codebuild):
    client, stub = codebuild
    _describes(stub, _project())
    assert build_limit.ensure_limit(client, "deploykit", 1, check_mode=True) == (True, None)


@pytest.mark.parametrize(
    ("project", "limit", "message"),
    [
        pytest.param(None, 1, "CodeBuild project deploykit does not exist; create it first", id="no-project"),
        pytest.param(_project(), 0, "limit must be 1 or more (or null for none), not 0", id="zero"),
    ],
)
def test_build_limit_refuses_before_any_update(codebuild, project, limit, message):
    client, stub = codebuild
    if limit >= 1:
        _describes(stub, project)
    with pytest.raises(build_limit.BuildLimitError, match=re.escape(message)):
        build_limit.ensure_limit(client, "deploykit", limit, check_mode=False)


def test_webhook_is_created_when_the_project_has_none(codebuild):
    client, stub = codebuild
    _describes(stub, _project())
    stub.add_response(
        "create_webhook",
        {"webhook": _hook(PUSH_TO_MAIN)},
        {"projectName": "deploykit", "filterGroups": PUSH_TO_MAIN, "buildType": "BUILD"},
    )
    outcome = webhook.ensure_webhook(client, "deploykit", PUSH_TO_MAIN)
    assert (outcome.changed, outcome.operation) == (True, "CreateWebhook")


def test_no_call_is_made_when_the_filter_groups_are_equal(codebuild):
    client, stub = codebuild
    # As the API may return them: another order, excludeMatchedPattern left out when false.
    reordered = [[{"type": "HEAD_REF", "pattern": "^refs/heads/main$"}, {"type": "EVENT", "pattern": "PUSH"}]]
    _describes(stub, _project(_hook(reordered)))
    # Stubber answers only what was queued: any CreateWebhook/UpdateWebhook would raise here.
    outcome = webhook.ensure_webhook(client, "deploykit", PUSH_TO_MAIN)
    assert (outcome.changed, outcome.operation) == (False, None)


@pytest.mark.parametrize(
    ("current", "build_type"),
    [
        pytest.param(
            [[{"type": "EVENT", "pattern": "PUSH"}, {"type": "HEAD_REF", "pattern": "^refs/heads/develop$"}]],
            "BUILD",
            id="other-branch",
        ),
        pytest.param(
            [[{"type": "EVENT", "pattern": "PUSH"}, {"type": "HEAD_REF", "pattern": "^refs/heads/main$",
                                                      "excludeMatchedPattern": True}]],
            "BUILD",
            id="excluded-instead-of-included",
        ),
        pytest.param(
            [*PUSH_TO_MAIN, [{"type": "EVENT", "pattern": "PULL_REQUEST_MERGED"}]], "BUILD", id="extra-group"
        ),
        pytest.param(PUSH_TO_MAIN, "BUILD_BATCH", id="other-build-type"),
    ],
)  # fmt: skip
def test_webhook_is_updated_when_it_differs(codebuild, current, build_type):
    client, stub = codebuild
    _describes(stub, _project(_hook(current, buildType=build_type)))
    stub.add_response(
        "update_webhook",
        {"webhook": _hook(PUSH_TO_MAIN)},
        {"projectName": "deploykit", "filterGroups": PUSH_TO_MAIN, "buildType": "BUILD"},
    )
    outcome = webhook.ensure_webhook(client, "deploykit", PUSH_TO_MAIN)
    assert (outcome.changed, outcome.operation) == (True, "UpdateWebhook")


def test_check_mode_reports_the_change_without_making_it(codebuild):
    client, stub = codebuild
    _describes(stub, _project())
    outcome = webhook.ensure_webhook(client, "deploykit", PUSH_TO_MAIN, check_mode=True)
    assert (outcome.changed, outcome.operation) == (True, "CreateWebhook")
    assert outcome.webhook["filterGroups"] == PUSH_TO_MAIN


def test_webhook_is_deleted_when_absent_is_asked(codebuild):
    client, stub = codebuild
    _describes(stub, _project(_hook(PUSH_TO_MAIN)))
    stub.add_response("delete_webhook", {}, {"projectName": "deploykit"})
    outcome = webhook.ensure_webhook(client, "deploykit", state="absent")
    assert (outcome.changed, outcome.operation) == (True, "DeleteWebhook")


def test_no_call_is_made_to_delete_a_webhook_that_does_not_exist(codebuild):
    client, stub = codebuild
    _describes(stub, _project())
    assert webhook.ensure_webhook(client, "deploykit", state="absent").changed is False


def test_the_webhook_secret_is_never_returned(codebuild):
    client, stub = codebuild
    _describes(stub, _project())
    stub.add_response(
        "create_webhook",
        {"webhook": _hook(PUSH_TO_MAIN, secret=PROVIDER_SECRET)},
        {"projectName": "deploykit", "filterGroups": PUSH_TO_MAIN, "buildType": "BUILD"},
    )
    outcome = webhook.ensure_webhook(client, "deploykit", PUSH_TO_MAIN)
    assert "secret" not in outcome.webhook
    assert PROVIDER_SECRET not in json.dumps(outcome.webhook)


def test_a_missing_project_is_an_error_and_nothing_is_created(codebuild):
    client, stub = codebuild
    _describes(stub, None)
    with pytest.raises(webhook.WebhookError, match="deploykit does not exist"):
        webhook.ensure_webhook(client, "deploykit", PUSH_TO_MAIN)


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        pytest.param(
            [[{"type": "HEAD_REF", "pattern": "^refs/heads/main$"}]], "no EVENT filter", id="no-event"
        ),
        pytest.param([[{"type": "EVENT"}]], "needs a type and a pattern", id="no-pattern"),
        pytest.param(
            [[{"type": "EVENT", "pattern": "PUSH", "exclude": True}]], "unknown keys", id="unknown-key"
        ),
        pytest.param([], "non-empty list of groups", id="no-groups"),
    ],
)
def test_malformed_filter_groups_are_refused_before_any_write(codebuild, groups, message):
    client, stub = codebuild
    _describes(stub, _project())
    with pytest.raises(webhook.WebhookError, match=message):
        webhook.ensure_webhook(client, "deploykit", groups)


def test_ansible_doc_reads_the_module_documentation():
    result = subprocess.run(
        [str(BIN / "ansible-doc"), "-M", str(ROOT / "plugins" / "modules"), "--json", "codebuild_webhook"],
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    options = json.loads(result.stdout)["codebuild_webhook"]["doc"]["options"]
    assert {"project_name", "filter_groups", "build_type", "state", "region"} <= options.keys()


# ---------------------------------------------------------------------------------------------
# The deploy key when the key pair or the parameter already exists (moto; only the deploy_key tasks)

UNUSED_CERTIFICATE = f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/00000000-0000-0000-0000-000000000000"
# Required inputs the deploy_key runs never use: the play checks them before any task.
_UNUSED_INFRA = {
    "provision_vpc_id": "vpc-00000000000000000",
    "provision_web_subnet_ids": ["subnet-00000000000000000"],
    "provision_codebuild_subnet_ids": ["subnet-00000000000000001"],
    "provision_web_ami_id": "ami-00000000000000000",
    "provision_web_instance_count": 1,
    "aws_load_balancer_subnet_ids": ["subnet-00000000000000002", "subnet-00000000000000003"],
    "aws_load_balancer_certificate_arn": UNUSED_CERTIFICATE,
    "provision_codebuild_source_location": "https://github.com/example/deploykit.git",
}


def _deploy_key_run(moto_endpoint: str, tmp_path: Path, env: str) -> Run:
    inventory = tmp_path / env
    _write_inventory(inventory, _UNUSED_INFRA, env=env)
    return _playbook(_tool_env(moto_endpoint), inventory, "--tags", "deploy_key")


def test_a_key_pair_whose_private_key_is_not_in_ssm_is_refused_before_any_change(moto_endpoint, tmp_path):
    env = "provkeya"
    ec2, ssm = _client("ec2", moto_endpoint), _client("ssm", moto_endpoint)
    before = ec2.create_key_pair(KeyName=f"deploykit-{env}", KeyType="rsa")["KeyPairId"]
    run = _deploy_key_run(moto_endpoint, tmp_path, env)
    assert run.returncode != 0
    message = run.results("Check that a key pair that exists has its private key in SSM")["msg"]
    assert (
        f"deploykit-{env} exists, but its private key is not in SSM at /deploykit/{env}/DEPLOY_SSH_KEY"
        in message
    )
    assert run.changed_tasks() == []
    wanted = [{"Key": "Name", "Values": [f"/deploykit/{env}/DEPLOY_SSH_KEY"]}]
    assert ssm.describe_parameters(ParameterFilters=wanted)["Parameters"] == []
    (after,) = ec2.describe_key_pairs(KeyNames=[f"deploykit-{env}"])["KeyPairs"]
    assert after["KeyPairId"] == before


def test_a_key_pair_with_its_private_key_in_ssm_is_taken_as_it_is(moto_endpoint, tmp_path):
    # An RSA pair made by hand: the play's key type (ed25519) must not make the module replace it.
    env = "provkeyb"
    ec2, ssm = _client("ec2", moto_endpoint), _client("ssm", moto_endpoint)
    pair = ec2.create_key_pair(KeyName=f"deploykit-{env}", KeyType="rsa")
    ssm.put_parameter(Name=f"/deploykit/{env}/DEPLOY_SSH_KEY", Value=pair["KeyMaterial"], Type="SecureString")
    run = _deploy_key_run(moto_endpoint, tmp_path, env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert run.changed_tasks() == []
    (after,) = ec2.describe_key_pairs(KeyNames=[f"deploykit-{env}"])["KeyPairs"]
    assert (after["KeyPairId"], after["KeyType"]) == (pair["KeyPairId"], "rsa")
    stored = ssm.get_parameter(Name=f"/deploykit/{env}/DEPLOY_SSH_KEY", WithDecryption=True)["Parameter"]
    assert (stored["Value"], stored["Version"]) == (pair["KeyMaterial"], 1)
    assert pair["KeyMaterial"].splitlines()[1] not in run.stdout + run.stderr


def test_a_stored_deploy_key_without_its_key_pair_is_refused_before_any_change(moto_endpoint, tmp_path):
    env = "provkeyc"
    ssm = _client("ssm", moto_endpoint)
    ssm.put_parameter(Name=f"/deploykit/{env}/DEPLOY_SSH_KEY", Value="not a key", Type="SecureString")
    run = _deploy_key_run(moto_endpoint, tmp_path, env)
    assert run.returncode != 0
    message = run.results("Check that a stored deploy key has its key pair in EC2")["msg"]
    assert f"but the key pair deploykit-{env} does not exist" in message
    assert run.changed_tasks() == []
    named = [{"Name": "key-name", "Values": [f"deploykit-{env}"]}]
    assert _client("ec2", moto_endpoint).describe_key_pairs(Filters=named)["KeyPairs"] == []


# ---------------------------------------------------------------------------------------------
# The load balancer's inputs, refused before any change (moto; the whole play, a fresh environment)

LB_ENV = "provlb"


@pytest.mark.parametrize(
    ("changes", "public_name", "message"),
    [
        pytest.param(
            {"aws_load_balancer_certificate_arn": None},
            PUBLIC_NAME,
            "missing required arguments: aws_load_balancer_certificate_arn",
            id="no-certificate",
        ),
        pytest.param(
            {"aws_load_balancer_certificate_arn": ""},
            PUBLIC_NAME,
            'aws_load_balancer_certificate_arn "" is not the ARN of an ACM certificate in us-east-1',
            id="empty-certificate",
        ),
        pytest.param(
            {"aws_load_balancer_certificate_arn": UNUSED_CERTIFICATE.replace(REGION, "eu-west-1")},
            PUBLIC_NAME,
            "is not the ARN of an ACM certificate in us-east-1",
            id="certificate-of-another-region",
        ),
        pytest.param(
            {},
            "",
            'aws_load_balancer_public_name (the host name of the environment\'s app_public_url) "" is not',
            id="empty-public-name",
        ),
        pytest.param({}, None, "'app_public_url' is undefined", id="no-public-name"),
        pytest.param(
            {"aws_load_balancer_health_check_path": "/"},
            PUBLIC_NAME,
            'aws_load_balancer_health_check_path "/" is not one of the app\'s probes',
            id="health-check-path-the-app-does-not-serve",
        ),
        pytest.param(
            {"provision_http_cidrs": ["10.0.0.0/16"]},
            PUBLIC_NAME,
            "provision_http_cidrs is no longer read",
            id="removed-http-cidrs",
        ),
    ],
)
def test_bad_load_balancer_inputs_are_refused_before_any_change(
    moto_endpoint, tmp_path, changes, public_name, message
):
    ec2 = _client("ec2", moto_endpoint)
    vpc_id = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    infra = {**_UNUSED_INFRA, "provision_vpc_id": vpc_id, **changes}
    infra = {key: value for key, value in infra.items() if value is not None}
    inventory = tmp_path / LB_ENV
    _write_inventory(inventory, infra, env=LB_ENV, public_name=public_name)
    run = _playbook(_tool_env(moto_endpoint), inventory)
    assert run.returncode != 0
    assert message in run.failure_messages()
    assert run.changed_tasks() == []
    _assert_nothing_made(moto_endpoint, vpc_id, LB_ENV)


def _assert_nothing_made(endpoint: str, vpc_id: str, env: str) -> None:
    """Nothing of the environment exists: no group in its VPC but the default, no role, no balancer."""
    in_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
    groups = _client("ec2", endpoint).describe_security_groups(Filters=in_vpc)["SecurityGroups"]
    assert [g["GroupName"] for g in groups] == ["default"]
    roles = _client("iam", endpoint).list_roles()["Roles"]
    assert not [r["RoleName"] for r in roles if r["RoleName"].startswith(f"deploykit-{env}")]
    balancers = _client("elbv2", endpoint).describe_load_balancers()["LoadBalancers"]
    names = [b["LoadBalancerName"] for b in balancers]
    assert not [name for name in names if name.startswith(f"deploykit-{env}")]


# ---------------------------------------------------------------------------------------------
# The inventory and the names given with -e, refused before anything asks AWS (moto; the whole play)

CHECKS_ENV = "provchecks"
CHECK_INVENTORY = "check-inventory | Ensure the inventory is one of the environments"
CHECK_EXTRA_VARS = "check-extra-vars | Ensure no name given with -e is a misspelt setting"
# The environments as the refusal lists them: the directories of inventory/ with an aws_ec2.yml.
ENVIRONMENTS = ", ".join(sorted(path.parent.name for path in (ROOT / "inventory").glob("*/aws_ec2.yml")))
# The optional inputs vars/provision.yml documents: read through default(), defined nowhere.
OPTIONAL_INPUTS = {
    "provision_ssh_cidrs": ["192.0.2.0/24"],
    "provision_web_instance_type": "t3.medium",
    "provision_web_root_volume_size": 30,
    "provision_web_ssm_enabled": True,
    "provision_web_key_name": "deploykit-provchecks",
    "provision_codebuild_source_type": "GITHUB",
}


def _tasks_run(run: Run) -> list[str]:
    return [task["task"]["name"] for task in run.report["plays"][0]["tasks"]]


def test_a_misspelt_name_given_with_e_is_refused_before_anything_asks_aws(moto_endpoint, tmp_path):
    # Read by nobody, it would leave the fleet at the inventory's count.
    vpc_id = _client("ec2", moto_endpoint).create_vpc(CidrBlock="10.41.0.0/16")["Vpc"]["VpcId"]
    inventory = tmp_path / CHECKS_ENV
    _write_inventory(inventory, {**_UNUSED_INFRA, "provision_vpc_id": vpc_id}, env=CHECKS_ENV)
    run = _playbook(_tool_env(moto_endpoint), inventory, "-e", "provision_web_instance_coutn=3")
    assert run.returncode != 0
    assert (
        "-e provision_web_instance_coutn is not a setting of this project: did you mean "
        "provision_web_instance_count or provision_web_instance_type?"
    ) in run.failure_messages()
    assert _tasks_run(run) == [CHECK_INVENTORY, CHECK_EXTRA_VARS]
    _assert_nothing_made(moto_endpoint, vpc_id, CHECKS_ENV)


def test_an_inventory_without_an_environment_is_refused_naming_the_environments(moto_endpoint, tmp_path):
    vpc_id = _client("ec2", moto_endpoint).create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    inventory = tmp_path / CHECKS_ENV
    _write_inventory(inventory, {**_UNUSED_INFRA, "provision_vpc_id": vpc_id}, env=CHECKS_ENV)
    environment = inventory / "group_vars" / "all" / "environment.yml"
    environment.write_text(yaml.safe_dump({"aws_region": REGION, "app_public_url": f"https://{PUBLIC_NAME}"}))
    run = _playbook(_tool_env(moto_endpoint), inventory)
    assert run.returncode != 0
    assert (
        f"The inventory {inventory} names no environment (app_env, aws_region). "
        f"Pass -i inventory/<environment>, one of: {ENVIRONMENTS}."
    ) in run.failure_messages()
    assert _tasks_run(run) == [CHECK_INVENTORY]
    _assert_nothing_made(moto_endpoint, vpc_id, CHECKS_ENV)


def test_the_optional_inputs_given_with_e_are_not_taken_for_misspelt_names(tmp_path):
    # Close to required names (provision_web_instance_type to provision_web_instance_count), they
    # are known because vars/provision.yml reads them through default().
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(
        "- name: Provision's check of the names given with -e\n  hosts: localhost\n  connection: local\n"
        "  gather_facts: false\n  tasks:\n    - name: Include the check\n"
        f"      ansible.builtin.import_tasks: {ROOT}/playbooks/tasks/check-extra-vars.yml\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook), "-e", json.dumps(OPTIONAL_INPUTS)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# A CodeCommit source: an EventBridge rule instead of the webhook (moto answers events and IAM)

CC_ENV = "provcc"
CC_PREFIX = f"deploykit-{CC_ENV}"
# A project of its own, so that this module's GitHub project stays as the tests above expect it.
CC_PROJECT = "deploykit-codecommit"
CC_DEPLOY_PROJECT = "deploykit-codecommit-deploy"
CC_REPOSITORY = "deploykit-source"
CC_URL = f"https://git-codecommit.{REGION}.amazonaws.com/v1/repos/{CC_REPOSITORY}"
CC_REPOSITORY_ARN = f"arn:aws:codecommit:{REGION}:{ACCOUNT}:{CC_REPOSITORY}"
CC_RULE = f"{CC_PREFIX}-codecommit-push"
# The parts a CodeCommit source touches; the webhook task runs too (it must remove, not create).
CC_FIRST_TAGS = "iam,network,codebuild_project,codebuild_webhook,codebuild_events"
# The second run: what is new for CodeCommit (the EventBridge role, its policy, the rule); the main
# fixture shows the rest of the play changing nothing.
CC_SECOND_TAGS = "codebuild_webhook,codebuild_events"


@dataclass
class CodeCommitProvisioned:
    endpoint: str
    first: Run
    second: Run

    def client(self, service: str):
        return _client(service, self.endpoint)


def _codecommit_infra(vpc_id: str, subnet_id: str, **changes: Any) -> dict[str, Any]:
    return {
        **_UNUSED_INFRA,
        "provision_vpc_id": vpc_id,
        "provision_web_subnet_ids": [subnet_id],
        "provision_codebuild_subnet_ids": [subnet_id],
        "provision_codebuild_source_type": "CODECOMMIT",
        "provision_codebuild_source_location": CC_URL,
        **changes,
    }


@pytest.fixture(scope="module")
def codecommit(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> CodeCommitProvisioned:
    ec2 = _client("ec2", moto_endpoint)
    vpc_id = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.30.1.0/24")["Subnet"]["SubnetId"]
    inventory = tmp_path_factory.mktemp("inventory") / CC_ENV
    _write_inventory(inventory, _codecommit_infra(vpc_id, subnet_id), env=CC_ENV)
    env = _tool_env(moto_endpoint)
    project = (
        "-e",
        f"codebuild_project_name={CC_PROJECT}",
        "-e",
        f"codebuild_deploy_project_name={CC_DEPLOY_PROJECT}",
    )
    first = _playbook(env, inventory, "--tags", CC_FIRST_TAGS, *project)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    second = _playbook(env, inventory, "--tags", CC_SECOND_TAGS, *project)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    return CodeCommitProvisioned(moto_endpoint, first, second)


def _push_event(reference: str, *, kind: str = "branch", event: str = "referenceUpdated") -> dict[str, Any]:
    """A CodeCommit Repository State Change event, in the shape CodeCommit sends it."""
    return {
        "version": "0",
        "id": "01234567-0123-0123-0123-012345678901",
        "detail-type": "CodeCommit Repository State Change",
        "source": "aws.codecommit",
        "account": ACCOUNT,
        "time": "2026-12-01T09:00:00Z",
        "region": REGION,
        "resources": [CC_REPOSITORY_ARN],
        "detail": {
            "event": event,
            "repositoryName": CC_REPOSITORY,
            "repositoryId": "12345678-1234-1234-1234-123456789012",
            "referenceType": kind,
            "referenceName": reference,
            "referenceFullName": f"refs/{'heads' if kind == 'branch' else 'tags'}/{reference}",
            "commitId": "3f2c1e9d8b7a0123456789abcdef0123456789ab",
            "oldCommitId": "1a2b3c4d5e6f0123456789abcdef0123456789ab",
        },
    }


def _rule(codecommit: CodeCommitProvisioned) -> dict[str, Any]:
    return codecommit.client("events").describe_rule(Name=CC_RULE)


def test_codecommit_rule_matches_the_repositorys_deploy_branch(codecommit):
    rule = _rule(codecommit)
    assert rule["State"] == "ENABLED"
    assert json.loads(rule["EventPattern"]) == {
        "source": ["aws.codecommit"],
        "detail-type": ["CodeCommit Repository State Change"],
        "resources": [CC_REPOSITORY_ARN],
        "detail": {
            "event": ["referenceCreated", "referenceUpdated"],
            "referenceType": ["branch"],
            # From codebuild.yml's filter group, HEAD_REF ^refs/heads/main$.
            "referenceName": ["main"],
        },
    }


@pytest.mark.parametrize(
    ("event", "matches"),
    [
        pytest.param(_push_event("main"), True, id="push-to-main"),
        pytest.param(_push_event("main", event="referenceCreated"), True, id="main-created"),
        pytest.param(_push_event("main", event="referenceDeleted"), False, id="main-deleted"),
        pytest.param(_push_event("feature/x"), False, id="other-branch"),
        pytest.param(_push_event("main", kind="tag"), False, id="tag-named-main"),
    ],
)
def test_codecommit_rule_matches_a_push_to_main_only(codecommit, event, matches):
    # moto's server has no TestEventPattern; its own EventBridge matcher (what its PutEvents routes
    # with) evaluates the stored pattern here, in process. AWS's matcher is not consulted.
    from moto.events.models import EventPattern

    assert EventPattern.load(_rule(codecommit)["EventPattern"]).matches_event(event) is matches


def test_codecommit_rule_starts_the_project_with_the_pushed_commit(codecommit):
    (target,) = codecommit.client("events").list_targets_by_rule(Rule=CC_RULE)["Targets"]
    assert target["Arn"] == f"arn:aws:codebuild:{REGION}:{ACCOUNT}:project/{CC_PROJECT}"
    assert target["RoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/{CC_PREFIX}-events"
    transformer = target["InputTransformer"]
    assert transformer["InputPathsMap"] == {"commit": "$.detail.commitId"}
    # What EventBridge sends for a push (its substitution, done here by hand): a StartBuild request
    # that botocore's own validation accepts, building exactly the pushed commit.
    commit = _push_event("main")["detail"]["commitId"]
    request = json.loads(transformer["InputTemplate"].replace("<commit>", commit))
    assert request == {"sourceVersion": commit}
    client = _client("codebuild")
    shape = client.meta.service_model.operation_model("StartBuild").input_shape
    botocore.validate.validate_parameters({"projectName": CC_PROJECT, **request}, shape)


def test_eventbridge_role_may_start_the_two_projects_and_nothing_else(codecommit):
    iam = codecommit.client("iam")
    role = iam.get_role(RoleName=f"{CC_PREFIX}-events")["Role"]
    assert role["AssumeRolePolicyDocument"] == _render_policy("events-trust.json.j2")
    document = iam.get_role_policy(RoleName=f"{CC_PREFIX}-events", PolicyName="events-start-build")[
        "PolicyDocument"
    ]
    assert document == _render_policy(
        "events-start-build.json.j2", started_projects=[CC_DEPLOY_PROJECT, CC_PROJECT]
    )
    (statement,) = document["Statement"]
    assert (statement["Action"], statement["Resource"]) == (
        "codebuild:StartBuild",
        [f"arn:aws:codebuild:{REGION}:{ACCOUNT}:project/{name}" for name in (CC_DEPLOY_PROJECT, CC_PROJECT)],
    )


def test_codecommit_build_may_clone_the_repository_only(codecommit):
    document = codecommit.client("iam").get_role_policy(
        RoleName=f"{CC_PREFIX}-codebuild", PolicyName="codebuild-service-role"
    )["PolicyDocument"]
    statement = _statement(document, "CloneTheCodeCommitSource")
    assert (_actions(statement), statement["Resource"]) == (["codecommit:GitPull"], CC_REPOSITORY_ARN)


def test_codecommit_project_clones_the_repository_and_has_no_webhook(codecommit):
    (project,) = codecommit.client("codebuild").batch_get_projects(names=[CC_PROJECT])["projects"]
    assert project["source"]["type"] == "CODECOMMIT"
    assert project["source"]["location"] == CC_URL
    assert "webhook" not in project
    result = codecommit.first.results("Ensure pushes that pass the filter groups start a build")
    assert (result["changed"], result["operation"]) == (False, None)


def test_second_codecommit_run_changes_nothing(codecommit):
    assert codecommit.second.changed_tasks() == []


@pytest.mark.parametrize(
    ("changes", "extra", "message"),
    [
        pytest.param(
            {"provision_codebuild_source_location": "https://github.com/example/deploykit.git"},
            {},
            "is not the HTTPS clone URL of a CodeCommit repository in us-east-1",
            id="github-url",
        ),
        pytest.param(
            {"provision_codebuild_source_location": CC_URL.replace(REGION, "eu-west-1")},
            {},
            "is not the HTTPS clone URL of a CodeCommit repository in us-east-1",
            id="repository-of-another-region",
        ),
        pytest.param(
            {},
            {"codebuild_webhook_filter_groups": [[{"type": "EVENT", "pattern": "PUSH"},
                                                  {"type": "HEAD_REF", "pattern": "^refs/heads/rel/.*$"}]]},
            "must be exactly EVENT PUSH and HEAD_REF",
            id="branch-pattern",
        ),
        pytest.param(
            {},
            {"codebuild_webhook_filter_groups": [[{"type": "EVENT", "pattern": "PUSH"},
                                                  {"type": "HEAD_REF", "pattern": "^refs/heads/main$"},
                                                  {"type": "FILE_PATH", "pattern": "^django_app/"}]]},
            "must be exactly EVENT PUSH and HEAD_REF",
            id="file-path-filter",
        ),
        pytest.param(
            {},
            {"codebuild_webhook_filter_groups": [[{"type": "EVENT", "pattern": "PULL_REQUEST_MERGED"},
                                                  {"type": "HEAD_REF", "pattern": "^refs/heads/main$"}]]},
            "must be exactly EVENT PUSH and HEAD_REF",
            id="not-a-push",
        ),
    ],
)  # fmt: skip
def test_codecommit_inputs_the_rule_cannot_honour_are_refused_before_any_change(
    moto_endpoint, tmp_path, changes, extra, message
):
    inventory = tmp_path / CC_ENV
    infra = _codecommit_infra("vpc-00000000000000000", "subnet-00000000000000000", **changes)
    _write_inventory(inventory, infra, env=CC_ENV)
    args = ("-e", json.dumps(extra)) if extra else ()
    run = _playbook(_tool_env(moto_endpoint), inventory, "--tags", CC_FIRST_TAGS, *args)
    assert run.returncode != 0
    assert message in run.stdout
    assert run.changed_tasks() == []
