"""The local Application Load Balancer: HAProxy in a container, configured from moto's target group."""

from __future__ import annotations

import datetime
import os
import re
import socket
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from deploykit import images, network, pki
from deploykit.system import CACHE, DOCKER, SetupError, run, say

PUBLIC_NAME = "app.deploykit.localhost"
CA_CERT = pki.CA_CERT
IMAGE = images.LOAD_BALANCER.tag
CONTAINER = "deploykit-lb"
# Labelled like the stand-in's hosts (deploykit/standin.py OWNER_LABEL/OWNER): `standin down` removes it.
LABELS = {"org.deploykit.owner": "standin", "org.deploykit.standin.role": "load-balancer"}
# ALB's default idle timeout; it bounds both sides of a proxied connection.
IDLE_TIMEOUT_SECONDS = 60
# ALB gives up connecting to a target after 10 s.
CONNECT_TIMEOUT_SECONDS = 10
BACKEND = "targets"
# The variables of roles/aws_load_balancer/defaults/main.yml this module reads, in that role's names.
SETTINGS_KEYS = (
    "aws_load_balancer_target_port",
    "aws_load_balancer_health_check_path",
    "aws_load_balancer_health_check_interval_seconds",
    "aws_load_balancer_health_check_timeout_seconds",
    "aws_load_balancer_healthy_threshold",
    "aws_load_balancer_unhealthy_threshold",
    "aws_load_balancer_deregistration_delay_seconds",
)
# Inside the container: the configuration folder is mounted read-only, the runtime folder writable.
_ETC, _RUN, _SOCKET = "/etc/haproxy", "/run/haproxy", "admin.sock"
_RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Site:
    """Where one load balancer runs: the stand-in's by default, a test's own otherwise."""

    name: str = CONTAINER
    address: str = network.LB_ADDRESS
    https_port: int = 8443
    http_port: int = 8080
    directory: Path = CACHE / "standin" / "lb"

    @property
    def https_url(self) -> str:
        return f"https://{PUBLIC_NAME}:{self.https_port}/"

    @property
    def http_url(self) -> str:
        return f"http://{PUBLIC_NAME}:{self.http_port}/"


SITE = Site()
HTTPS_URL, HTTP_URL = SITE.https_url, SITE.http_url


@dataclass(frozen=True)
class Target:
    id: str
    ip: str
    port: int


def target_group_settings(path: Path) -> dict[str, Any]:
    """The target group's settings from a role defaults file; a missing key names the file and key."""
    data = yaml.safe_load(path.read_text()) or {}
    missing = [key for key in SETTINGS_KEYS if key not in data]
    if missing:
        raise SetupError(f"{path} does not define {', '.join(missing)}")
    return {key: data[key] for key in SETTINGS_KEYS}


def ensure_target_group(elbv2: Any, ec2: Any, *, vpc_id: str, name: str, settings: dict[str, Any]) -> str:
    """Create the target group, or bring its settings in line; return its ARN."""
    if not ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Vpcs"]:
        raise SetupError(f"VPC {vpc_id} does not exist in the EC2 API the target group is made in")
    health = {
        "HealthCheckProtocol": "HTTP",
        "HealthCheckPort": "traffic-port",
        "HealthCheckPath": settings["aws_load_balancer_health_check_path"],
        "HealthCheckIntervalSeconds": int(settings["aws_load_balancer_health_check_interval_seconds"]),
        "HealthCheckTimeoutSeconds": int(settings["aws_load_balancer_health_check_timeout_seconds"]),
        "HealthyThresholdCount": int(settings["aws_load_balancer_healthy_threshold"]),
        "UnhealthyThresholdCount": int(settings["aws_load_balancer_unhealthy_threshold"]),
        "Matcher": {"HttpCode": "200"},
    }
    try:
        arn = elbv2.describe_target_groups(Names=[name])["TargetGroups"][0]["TargetGroupArn"]
        elbv2.modify_target_group(TargetGroupArn=arn, HealthCheckEnabled=True, **health)
    except elbv2.exceptions.TargetGroupNotFoundException:
        arn = elbv2.create_target_group(
            Name=name,
            Protocol="HTTP",
            Port=int(settings["aws_load_balancer_target_port"]),
            VpcId=vpc_id,
            TargetType="instance",
            HealthCheckEnabled=True,
            **health,
        )["TargetGroups"][0]["TargetGroupArn"]
    delay = str(int(settings["aws_load_balancer_deregistration_delay_seconds"]))
    elbv2.modify_target_group_attributes(
        TargetGroupArn=arn, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": delay}]
    )
    return arn


def register_targets(elbv2: Any, arn: str, instance_ids: list[str]) -> list[str]:
    """Make the target group's targets exactly `instance_ids`; return what changed."""
    health = elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    current = {entry["Target"]["Id"] for entry in health}
    wanted = set(instance_ids)
    changes = []
    if new := sorted(wanted - current):
        elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": i} for i in new])
        changes.append(f"registered {', '.join(new)}")
    if stale := sorted(current - wanted):
        elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": i} for i in stale])
        changes.append(f"deregistered {', '.join(stale)}")
    return changes


def read_target_group(elbv2: Any, ec2: Any, arn: str) -> tuple[dict[str, Any], list[Target]]:
    """The target group and its targets with their private IPs, as the API holds them."""
    group = elbv2.describe_target_groups(TargetGroupArns=[arn])["TargetGroups"][0]
    attributes = elbv2.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]
    delay = {a["Key"]: a["Value"] for a in attributes}.get("deregistration_delay.timeout_seconds", "300")
    # Not a field of the API's target group: an attribute, carried along under a name of ours.
    group = {**group, "DeregistrationDelaySeconds": int(delay)}
    health = elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    ports = {entry["Target"]["Id"]: entry["Target"].get("Port", group["Port"]) for entry in health}
    if not ports:
        return group, []
    ips = {}
    for reservation in ec2.describe_instances(InstanceIds=sorted(ports))["Reservations"]:
        for instance in reservation["Instances"]:
            # ALB sends nothing to a stopped or terminated instance (Target.InvalidState).
            if instance["State"]["Name"] == "running":
                ips[instance["InstanceId"]] = instance["PrivateIpAddress"]
    return group, [Target(i, ips[i], ports[i]) for i in sorted(ips)]


def render_config(group: dict[str, Any], targets: list[Target], *, https_port: int = SITE.https_port) -> str:
    """HAProxy's configuration for an ALB with an HTTPS listener, an HTTP redirect and this target group."""
    interval = group["HealthCheckIntervalSeconds"]
    # ALB's redirect keeps host, path and query; the port is the one clients reach (published on loopback).
    port = "" if https_port == 443 else f":{https_port}"
    lines = [
        "# Written by deploykit/loadbalancer.py from the target group moto holds; edits are overwritten.",
        "global",
        f"    stats socket {_RUN}/{_SOCKET} mode 600 level admin expose-fd listeners",
        # Servers keep their health across a reload; new ones start down (see _server_state).
        f"    server-state-file {_ETC}/server-state",
        "    ssl-default-bind-options ssl-min-ver TLSv1.2",
        # A deregistered target's in-flight requests may finish for the deregistration delay, then
        # the old worker is stopped: HAProxy's closest match to ALB's draining.
        f"    hard-stop-after {group.get('DeregistrationDelaySeconds', 300)}s",
        "defaults",
        "    mode http",
        "    load-server-state-from-file global",
        f"    timeout connect {CONNECT_TIMEOUT_SECONDS}s",
        f"    timeout client {IDLE_TIMEOUT_SECONDS}s",
        f"    timeout server {IDLE_TIMEOUT_SECONDS}s",
        f"    timeout http-keep-alive {IDLE_TIMEOUT_SECONDS}s",
        f"    timeout check {group['HealthCheckTimeoutSeconds']}s",
        # ALB never retries a request on another target, and neither does this stand-in.
        "    retries 0",
        "    no option redispatch",
        "",
        "frontend https",
        f"    bind :443 ssl crt {_ETC}/site.pem alpn h2,http/1.1",
        # Set, never passed through, as ALB does: the app trusts these.
        "    option forwardfor",
        "    http-request set-header X-Forwarded-Proto https",
        "    http-request set-header X-Forwarded-Port 443",
        f"    default_backend {BACKEND}",
        "",
        "frontend http",
        "    bind :80",
        "    http-request redirect code 301 location"
        f" https://%[req.hdr(host),field(1,:)]{port}%[capture.req.uri]",
        "",
        f"backend {BACKEND}",
        "    balance roundrobin",
        "    option httpchk",
        # ALB's health checks name the target's private IP as Host (targets.map: instance id -> IP).
        f"    http-check send meth GET uri {group['HealthCheckPath']} ver HTTP/1.1"
        f" hdr Host %[srv_name,map({_ETC}/targets.map)]",
        f"    http-check expect status {group.get('Matcher', {}).get('HttpCode', '200')}",
        f"    default-server check inter {interval}s"
        f" fall {group['UnhealthyThresholdCount']} rise {group['HealthyThresholdCount']}",
    ]
    lines += [f"    server {t.id} {t.ip}:{t.port}" for t in targets]
    return "\n".join(lines) + "\n"


def render_map(targets: list[Target]) -> str:
    """Instance id -> private IP, for the Host header of the health checks."""
    return "".join(f"{t.id} {t.ip}\n" for t in targets)


def _servers(config: str) -> dict[str, str]:
    """The active servers a configuration names: instance id -> address."""
    return dict(re.findall(r"^    server (\S+) (\S+)$", config, flags=re.MULTILINE))


def _serves(site: Site) -> bool:
    """Whether the site's container mounts this site's configuration directory."""
    result = run(
        [DOCKER, "container", "inspect", "--format", "{{range .Mounts}}{{.Source}} {{end}}", site.name],
        check=False,
    )
    return str(site.directory / "etc") in result.stdout.split()


def _container_state(site: Site) -> str | None:
    result = run([DOCKER, "container", "inspect", "--format", "{{.State.Status}}", site.name], check=False)
    return result.stdout.strip() if result.returncode == 0 else None


@cache
def _haproxy_ids() -> tuple[int, int]:
    """The uid and gid of the image's haproxy user: the files mounted read-only must be theirs."""
    out = run([DOCKER, "run", "--rm", "--entrypoint", "sh", IMAGE, "-c", "id -u; id -g"]).stdout.split()
    return int(out[0]), int(out[1])


def _ensure_certificate(site: Site) -> bool:
    """Write the certificate for the public name (with chain and key) unless a fit one is there."""
    pem, now = site.directory / "etc" / "site.pem", datetime.datetime.now(datetime.UTC)
    ca_key, ca = pki.load_ca()
    if pem.exists():
        current = x509.load_pem_x509_certificate(pem.read_bytes())
        names = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        fit = names.get_values_for_type(x509.DNSName) == [PUBLIC_NAME] and current.issuer == ca.subject
        if fit and current.not_valid_after_utc - now > _RENEW_BEFORE:
            return False
    key, cert = pki.server_certificate(ca_key, ca, PUBLIC_NAME, [x509.DNSName(PUBLIC_NAME)], now)
    pki.write_private(pem, pki.pem_cert(cert) + pki.pem_cert(ca) + pki.pem_key(key))
    os.chown(pem, *_haproxy_ids())
    return True


def _admin(site: Site, command: str) -> str:
    """One command to HAProxy's runtime API over the stats socket the container exposes."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(5)
        conn.connect(str(site.directory / "run" / _SOCKET))
        conn.sendall(command.encode() + b"\n")
        return b"".join(iter(lambda: conn.recv(65536), b"")).decode()


def _server_state(site: Site, config: str, running: bool) -> str:
    """The running servers' state, plus a DOWN line for each new target.

    HAProxy 2.6 has no per-server initial state (newer versions' `init-state`): a server it has no
    state for starts UP and is taken out only by its first failed check. ALB sends a newly
    registered target nothing before it passed its checks: each new server is loaded from this
    file as DOWN with no health, and needs `rise` good checks first.
    """
    dump = _admin(site, f"show servers state {BACKEND}").strip().splitlines() if running else []
    lines = ["1", "# be_id be_name srv_id srv_name srv_addr srv_op_state ... (show servers state)"]
    # A target keeps its health only at the same address: at another one it is a new target.
    known = {(f[3], f"{f[4]}:{f[18]}"): line for line in dump[2:] if len(f := line.split()) > 18}
    for number, (name, address) in enumerate(_servers(config).items(), start=1000):
        if (name, address) in known:
            lines.append(known[name, address])
        else:
            ip, port = address.rsplit(":", 1)
            lines.append(f"1 {BACKEND} {number} {name} {ip} 0 0 1 1 0 1 0 0 6 0 0 0 - {port} - 0 0 - - 0")
    return "\n".join(lines) + "\n"


def _validate(site: Site, candidate: str, running: bool) -> None:
    """`haproxy -c` on the candidate file, before it replaces the configuration in use."""
    check = ["haproxy", "-c", "-q", "-f", f"{_ETC}/{candidate}"]
    if running:
        result = run([DOCKER, "exec", site.name, *check], check=False)
    else:
        result = run(
            [DOCKER, "run", "--rm", *_mounts(site), "--entrypoint", check[0], IMAGE, *check[1:]], check=False
        )
    if result.returncode != 0:
        raise SetupError(f"HAProxy rejects the rendered configuration:\n{result.stdout}{result.stderr}")


def _mounts(site: Site) -> list[str]:
    return ["-v", f"{site.directory / 'etc'}:{_ETC}:ro", "-v", f"{site.directory / 'run'}:{_RUN}"]


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    os.chown(path, *_haproxy_ids())


def ensure(elbv2: Any, ec2: Any, target_group_arn: str, *, site: Site = SITE) -> list[str]:
    """Bring the load balancer in line with the target group; return what changed."""
    etc, rundir = site.directory / "etc", site.directory / "run"
    for folder in (etc, rundir):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, *_haproxy_ids())
    changes = []
    if _ensure_certificate(site):
        changes.append(f"certificate for {PUBLIC_NAME} issued by the project CA")
    group, targets = read_target_group(elbv2, ec2, target_group_arn)
    config = render_config(group, targets, https_port=site.https_port)
    live = etc / "haproxy.cfg"
    before = live.read_text() if live.exists() else ""
    state = _container_state(site)
    # A container another checkout started (a leftover, same name) serves that checkout's files:
    # this one's candidate configuration is not in it. It is replaced, not reloaded.
    running = state == "running" and _serves(site)
    if running and config == before and not changes:
        return changes
    # The running process read the map at its start: writing it now changes nothing until the reload.
    _write(etc / "targets.map", render_map(targets))
    _write(etc / "haproxy.cfg.new", config)
    _validate(site, "haproxy.cfg.new", running)
    old, new = (_servers(before) if running else {}), _servers(config)
    _write(etc / "server-state", _server_state(site, config, running))
    (etc / "haproxy.cfg.new").replace(live)
    if running:
        # Master-worker: new workers take the listening sockets over, old ones finish their requests.
        worker = _worker(site)
        run([DOCKER, "kill", "--signal", "USR2", site.name])
        try:
            _wait_for_worker(site, other_than=worker)
        except SetupError:
            _write(live, before)  # what still runs, so that the next ensure() tries again
            raise
        changes.append(f"{site.name}: reloaded")
    else:
        if state is not None:
            run([DOCKER, "rm", "--force", site.name])
        _start(site)
        _wait_for_worker(site, other_than=None)
        changes.append(f"{site.name}: started on {site.https_url}")
    changes += [f"{site.name}: target {name} added at {new[name]}" for name in new if name not in old]
    changes += [f"{site.name}: target {name} removed" for name in old if name not in new]
    return changes


def _start(site: Site) -> None:
    say(f"starting the load balancer {site.name} on {site.https_url}")
    labels = [arg for key, value in LABELS.items() for arg in ("--label", f"{key}={value}")]
    run([
        DOCKER, "run", "--detach", "--name", site.name, *labels,
        "--network", network.NAME, "--ip", site.address,
        "--publish", f"127.0.0.1:{site.https_port}:443", "--publish", f"127.0.0.1:{site.http_port}:80",
        *_mounts(site), "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        IMAGE,
    ])  # fmt: skip


def _worker(site: Site) -> str | None:
    """The process id of the worker that answers the runtime API (None: no worker answers)."""
    try:
        return re.findall(r"^Pid: (\d+)$", _admin(site, "show info"), flags=re.MULTILINE)[0]
    except (OSError, IndexError):
        return None


def _wait_for_worker(site: Site, other_than: str | None, timeout: float = 15) -> None:
    """Wait until a worker other than `other_than` answers: the one on the new configuration."""
    deadline = time.monotonic() + timeout
    while _worker(site) in (None, other_than):
        if time.monotonic() > deadline:
            logs = run([DOCKER, "logs", "--tail", "15", site.name], check=False)
            raise SetupError(f"{site.name} did not load its configuration:\n{logs.stdout}{logs.stderr}")
        time.sleep(0.1)


def _stats(site: Site) -> list[dict[str, str]]:
    lines = _admin(site, "show stat").strip().splitlines()
    header = lines[0].lstrip("# ").split(",")
    return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]


def status(site: Site = SITE) -> dict[str, Any]:
    """The container's state and each target's health as HAProxy sees it (UP, DOWN, `DOWN 1/2`...)."""
    state = _container_state(site)
    servers = {
        row["svname"]: {"address": row["addr"], "status": row["status"], "check": row["check_status"]}
        for row in (_stats(site) if state == "running" else [])
        if row["pxname"] == BACKEND and row["svname"] != "BACKEND"
    }
    return {"container": state or "absent", "url": site.https_url, "targets": servers}


def remove(site: Site = SITE) -> bool:
    """Remove the load balancer's container (its configuration and certificate stay for the next start)."""
    if _container_state(site) is None:
        return False
    run([DOCKER, "rm", "--force", site.name])
    return True
