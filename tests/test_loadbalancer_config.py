"""The load balancer stand-in's configuration, and its target group in moto (no engine needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import boto3
import pytest

from deploykit import loadbalancer, network, standin
from deploykit.loadbalancer import Target
from deploykit.system import SetupError

FIXTURE = Path(__file__).parent / "fixtures" / "aws_load_balancer_defaults.yml"
GROUP = {
    "Port": 80,
    "HealthCheckPath": "/readyz/",
    "HealthCheckIntervalSeconds": 10,
    "HealthCheckTimeoutSeconds": 5,
    "HealthyThresholdCount": 2,
    "UnhealthyThresholdCount": 3,
    "Matcher": {"HttpCode": "200"},
    "DeregistrationDelaySeconds": 30,
}
TARGETS = [Target("i-0aaa", "172.30.0.101", 80), Target("i-0bbb", "172.30.0.102", 8000)]


def _lines(config: str) -> list[str]:
    return [line.strip() for line in config.splitlines()]


def _section(config: str, name: str) -> list[str]:
    """The lines of one section (`frontend https`, `backend targets`...), up to the next blank line."""
    text = config.split(f"\n{name}\n", 1)[1].split("\n\n", 1)[0]
    return _lines(text)


def test_https_listener_terminates_tls_12_and_up_and_sets_forwarded_headers() -> None:
    config = loadbalancer.render_config(GROUP, TARGETS)
    https = _section(config, "frontend https")
    assert "bind :443 ssl crt /etc/haproxy/site.pem alpn h2,http/1.1" in https
    assert "ssl-default-bind-options ssl-min-ver TLSv1.2" in _lines(config)
    assert "option forwardfor" in https
    assert "http-request set-header X-Forwarded-Proto https" in https
    assert "http-request set-header X-Forwarded-Port 443" in https


def test_http_listener_redirects_to_the_published_https_port_keeping_host_and_path() -> None:
    http = _section(loadbalancer.render_config(GROUP, TARGETS, https_port=8443), "frontend http")
    assert "bind :80" in http
    redirect = next(line for line in http if line.startswith("http-request redirect"))
    assert "code 301" in redirect
    assert redirect.endswith("location https://%[req.hdr(host),field(1,:)]:8443%[capture.req.uri]")


def test_redirect_to_port_443_names_no_port() -> None:
    http = _section(loadbalancer.render_config(GROUP, TARGETS, https_port=443), "frontend http")
    assert any(line.endswith("https://%[req.hdr(host),field(1,:)]%[capture.req.uri]") for line in http)


def test_backend_has_one_server_per_target_with_the_groups_health_check() -> None:
    backend = _section(loadbalancer.render_config(GROUP, TARGETS), "backend targets")
    assert "balance roundrobin" in backend
    assert "option httpchk" in backend
    assert "http-check expect status 200" in backend
    assert "default-server check inter 10s fall 3 rise 2" in backend
    send = next(line for line in backend if line.startswith("http-check send"))
    assert send.startswith("http-check send meth GET uri /readyz/ ver HTTP/1.1")
    assert "server i-0aaa 172.30.0.101:80" in backend
    assert "server i-0bbb 172.30.0.102:8000" in backend


def test_timeouts_follow_alb_and_the_target_group() -> None:
    lines = _lines(loadbalancer.render_config(GROUP, TARGETS))
    for line in ("timeout client 60s", "timeout server 60s", "timeout check 5s", "hard-stop-after 30s"):
        assert line in lines


def test_no_retry_on_another_target() -> None:
    lines = _lines(loadbalancer.render_config(GROUP, TARGETS))
    assert "retries 0" in lines
    assert "no option redispatch" in lines


def test_no_targets_gives_a_backend_without_servers() -> None:
    backend = _section(loadbalancer.render_config(GROUP, []), "backend targets")
    assert not [line for line in backend if re.match(r"server\s", line)]


def test_health_checks_name_each_targets_private_ip_as_host() -> None:
    assert loadbalancer.render_map(TARGETS) == "i-0aaa 172.30.0.101\ni-0bbb 172.30.0.102\n"


def test_settings_are_read_from_the_roles_defaults_file() -> None:
    settings = loadbalancer.target_group_settings(FIXTURE)
    assert settings["aws_load_balancer_health_check_path"] == "/readyz/"
    assert settings["aws_load_balancer_deregistration_delay_seconds"] == 30
    assert set(settings) == set(loadbalancer.SETTINGS_KEYS)


def test_a_missing_setting_names_the_file_and_the_key(tmp_path: Path) -> None:
    partial = tmp_path / "main.yml"
    lines = FIXTURE.read_text().splitlines()
    partial.write_text("\n".join(line for line in lines if "unhealthy_threshold" not in line))
    with pytest.raises(SetupError, match=rf"{partial} does not define aws_load_balancer_unhealthy_threshold"):
        loadbalancer.target_group_settings(partial)


def test_constants_name_the_public_site() -> None:
    assert loadbalancer.HTTPS_URL == "https://app.deploykit.localhost:8443/"
    assert loadbalancer.HTTP_URL == "http://app.deploykit.localhost:8080/"
    assert loadbalancer.SITE.address == network.LB_ADDRESS == "172.30.0.90"
    # Written out in loadbalancer.py (standin.py will import it, not the other way round); kept equal here.
    assert loadbalancer.LABELS[standin.OWNER_LABEL] == standin.OWNER


@pytest.fixture(scope="module")
def aws(request: pytest.FixtureRequest, moto_server: Any) -> tuple[Any, Any, str, list[str]]:
    """moto's ELBv2 and EC2 (the stand-in for AWS), a VPC and three instances in it."""
    endpoint = moto_server(request)
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # moto's dummy keys
    elbv2, ec2 = (
        boto3.client(s, endpoint_url=endpoint, region_name="us-east-1", **keys) for s in ("elbv2", "ec2")
    )
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.0.0/24")["Subnet"]["SubnetId"]
    image = ec2.describe_images()["Images"][0]["ImageId"]
    created = ec2.run_instances(ImageId=image, MinCount=3, MaxCount=3, SubnetId=subnet)["Instances"]
    return elbv2, ec2, vpc, sorted(i["InstanceId"] for i in created)


def test_target_group_is_made_once_with_the_roles_settings(aws: tuple[Any, Any, str, list[str]]) -> None:
    elbv2, ec2, vpc, _ = aws
    settings = loadbalancer.target_group_settings(FIXTURE)
    arn = loadbalancer.ensure_target_group(elbv2, ec2, vpc_id=vpc, name="lb-unit", settings=settings)
    again = loadbalancer.ensure_target_group(
        elbv2,
        ec2,
        vpc_id=vpc,
        name="lb-unit",
        settings={**settings, "aws_load_balancer_healthy_threshold": 3},
    )
    assert again == arn
    group = elbv2.describe_target_groups(TargetGroupArns=[arn])["TargetGroups"][0]
    assert (group["Protocol"], group["Port"], group["HealthCheckPath"]) == ("HTTP", 80, "/readyz/")
    assert (group["HealthCheckIntervalSeconds"], group["HealthCheckTimeoutSeconds"]) == (10, 5)
    assert (group["HealthyThresholdCount"], group["UnhealthyThresholdCount"]) == (3, 2)
    attributes = elbv2.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]
    assert {"Key": "deregistration_delay.timeout_seconds", "Value": "30"} in attributes


def test_a_missing_vpc_is_named(aws: tuple[Any, Any, str, list[str]]) -> None:
    elbv2, ec2, _, _ = aws
    settings = loadbalancer.target_group_settings(FIXTURE)
    with pytest.raises(SetupError, match="VPC vpc-0000000000000000 does not exist"):
        loadbalancer.ensure_target_group(
            elbv2, ec2, vpc_id="vpc-0000000000000000", name="x", settings=settings
        )


def test_targets_become_exactly_the_instances_given(aws: tuple[Any, Any, str, list[str]]) -> None:
    elbv2, ec2, vpc, instances = aws
    settings = loadbalancer.target_group_settings(FIXTURE)
    arn = loadbalancer.ensure_target_group(elbv2, ec2, vpc_id=vpc, name="lb-targets", settings=settings)
    assert loadbalancer.register_targets(elbv2, arn, instances[:2]) == [
        f"registered {', '.join(instances[:2])}"
    ]
    assert loadbalancer.register_targets(elbv2, arn, instances[:2]) == []
    changes = loadbalancer.register_targets(elbv2, arn, instances[1:])
    assert changes == [f"registered {instances[2]}", f"deregistered {instances[0]}"]
    group, targets = loadbalancer.read_target_group(elbv2, ec2, arn)
    assert [t.id for t in targets] == instances[1:]
    assert group["DeregistrationDelaySeconds"] == 30
    # A stopped instance gets no traffic, registered or not (ALB: Target.InvalidState).
    ec2.stop_instances(InstanceIds=[instances[2]])
    assert [t.id for t in loadbalancer.read_target_group(elbv2, ec2, arn)[1]] == [instances[1]]
