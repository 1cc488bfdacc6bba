"""The local stand-in for AWS: moto for the APIs, systemd containers for the EC2 instances.

`python -m deploykit.standin up` starts moto_server on 127.0.0.1:4566 and boots N "EC2 hosts":
containers from deploykit/host:<distro> on the project network, each with its own Docker volume
at /var/lib/docker and an `admin` user with passwordless sudo and the stand-in's SSH key (what
cloud-init makes on a Debian AMI). Each host is registered in moto as a running EC2 instance whose
private IP is the container's address, so inventory/local/aws_ec2.yml finds them exactly as
inventory/production/aws_ec2.yml finds real instances. The host keys go to a known_hosts file of
the stand-in's own, read out of band and confirmed with ssh-keyscan: host key checking stays on.

What the stand-in makes carries the label org.deploykit.owner=standin (containers, volumes) or the
tag ManagedBy=deploykit-standin (EC2 resources in moto); `down` removes exactly that and leaves the
platform (network, registry, PostgreSQL) alone. State lives in .cache/standin/.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deploykit import images, loadbalancer, network, postgres
from deploykit import registry as image_registry
from deploykit.system import CACHE, DOCKER, ROOT, SetupError, main_guard, run, say

STATE_DIR = CACHE / "standin"
SSH_KEY = STATE_DIR / "id_ed25519"
KNOWN_HOSTS = STATE_DIR / "known_hosts"
ENV_FILE = STATE_DIR / "env"
STATE_FILE = STATE_DIR / "state.json"
MOTO_PID = STATE_DIR / "moto.pid"
MOTO_LOG = STATE_DIR / "moto.log"
# Each registered instance's serial console, as deploykit.moto_server answers GetConsoleOutput.
CONSOLE_DIR = STATE_DIR / "console"
# provision_deploy_key_parameter (playbooks/vars/provision.yml) for the local environment.
DEPLOY_KEY_PARAMETER = "/deploykit/local/DEPLOY_SSH_KEY"
# provision_ecr_repository (playbooks/vars/provision.yml): the app image's repository.
ECR_REPOSITORY = "deploykit/app"
BENCH_INVENTORY = STATE_DIR / "bench-inventory"
# ansible.cfg's fact_caching_connection: facts are cached per host name, and a new host of an old
# name must not inherit the facts (addresses, interpreter) of the one before.
FACT_CACHE = CACHE / "ansible-facts"
# Outside STATE_DIR, so that `down` can remove the directory while it holds the lock.
_LOCK = CACHE / "standin.lock"

# 4566 is the port local AWS endpoints customarily use; moto's own default (5000) is a common
# development port and the conventional port of plain registries.
MOTO_PORT = int(os.environ.get("DEPLOYKIT_MOTO_PORT", "4566"))
ENDPOINT = f"http://127.0.0.1:{MOTO_PORT}"
REGION = "us-east-1"
# moto accepts any key; "testing" maps to its default account 123456789012, whose ECR login
# password the registry stand-in expects (deploykit/registry.py).
_DUMMY_KEY = "testing"

OWNER_LABEL = "org.deploykit.owner"
OWNER = "standin"
DISTRO_LABEL = "org.deploykit.standin.distro"
MANAGED_BY = {"Key": "ManagedBy", "Value": "deploykit-standin"}
HOST_PREFIX = "deploykit-web-"
USER = "admin"
DEFAULT_HOSTS = 3
DEFAULT_DISTRO = "debian12"
# The fleet's default mix: hosts take the Debian releases in turn (web-1 Debian 12, web-2 Debian
# 13, ...), so every rollout crosses both releases the roles support.
MIXED = "mixed"
INSTANCE_TYPE = "t3.small"
TAGS = {"App": "deploykit", "Env": "local", "Role": "web"}
# inventory/local's deploy_notice_topic: the SNS topic the deploys publish their notices to, which
# provisioning makes on AWS (roles/aws_notices).
NOTICE_TOPIC = f"{TAGS['App']}-{TAGS['Env']}-deploy-notices"
# The web instances' target group, named as provisioning names it on AWS (aws_load_balancer).
TARGET_GROUP = f"{TAGS['App']}-{TAGS['Env']}-web"
LOAD_BALANCER_DEFAULTS = ROOT / "roles" / "aws_load_balancer" / "defaults" / "main.yml"
# Instances registered without containers, for benchmarks, live in another Env and in RFC 2544's
# benchmarking range: they never appear in inventory/local, so nothing ever tries to reach them.
BENCH_ENV = "bench"
BENCH_CIDR = "198.18.0.0/16"
BENCH_PREFIX = "deploykit-bench-"

# How the host images boot systemd here (PLATFORM.md): --privileged fails on these machines.
# systempaths=unconfined leaves /proc/sys writable, which Debian 13's Docker needs to set up the
# networks of the containers it runs.
HOST_RUN_OPTIONS = (
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
    "--cgroupns", "host", "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run", "--tmpfs", "/run/lock",
)  # fmt: skip
BOOT_TIMEOUT_SECONDS = 90
# Hosts take fixed addresses from .100 up (Docker hands other containers addresses from .2 up):
# moto 5.2 never frees the address of a terminated instance, so a new host must never land on
# one, which Docker's own allocation (it reuses an address at once) cannot promise.
HOST_ADDRESSES = tuple(str(address) for address in ipaddress.ip_network(network.SUBNET).hosts())[99:]
# Variables that would send the AWS tools elsewhere or clash with the stand-in's keys (the
# aws_ec2 inventory refuses a profile together with keys; AWS_URL overrides its endpoint).
_UNSET = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_URL",
    "EC2_URL",
)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Makes the user a Debian AMI's cloud-init makes; prints what it changed, nothing when in place.
_PROVISION_USER = r"""
set -eu
if ! id -u "$USER_NAME" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash --groups sudo "$USER_NAME"
  echo "user"
fi
sudoers=/etc/sudoers.d/90-cloud-init-users
line="$USER_NAME ALL=(ALL) NOPASSWD:ALL"
if [ "$(cat "$sudoers" 2>/dev/null)" != "$line" ]; then
  printf '%s\n' "$line" >"$sudoers"
  chmod 0440 "$sudoers"
  echo "sudo"
fi
keys="/home/$USER_NAME/.ssh/authorized_keys"
if [ "$(cat "$keys" 2>/dev/null)" != "$PUBLIC_KEY" ]; then
  install -d -m 0700 -o "$USER_NAME" -g "$USER_NAME" "/home/$USER_NAME/.ssh"
  printf '%s\n' "$PUBLIC_KEY" >"$keys"
  chown "$USER_NAME:$USER_NAME" "$keys"
  chmod 0600 "$keys"
  echo "authorized_keys"
fi
"""


@dataclass
class Host:
    """One stand-in host: a container and, once registered, its EC2 instance."""

    name: str
    distro: str = DEFAULT_DISTRO
    container_id: str = ""
    state: str = "missing"
    ip: str = ""
    instance_id: str = ""
    instance_state: str = ""


# ---------------------------------------------------------------------------------------------
# Environment for the tools


def environment() -> dict[str, str]:
    """The variables that send boto3, amazon.aws and the aws_ec2 inventory to the stand-in."""
    return {
        "AWS_ENDPOINT_URL": ENDPOINT,
        "AWS_ACCESS_KEY_ID": _DUMMY_KEY,
        "AWS_SECRET_ACCESS_KEY": _DUMMY_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        # With no usable credentials botocore would ask the instance metadata address
        # (169.254.169.254); nothing here may send traffic there.
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def ssh_environment() -> dict[str, str]:
    """What an operator's deploy by hand needs to reach the hosts, as on AWS: the deploy key and the
    hosts' known keys. A build has neither: the deploy stage loads the key from SSM into an agent
    and reads the host keys from the console (buildspec-deploy.yml), and the local runner drops these."""
    return {"ANSIBLE_PRIVATE_KEY_FILE": str(SSH_KEY), "DEPLOYKIT_KNOWN_HOSTS": str(KNOWN_HOSTS)}


def tool_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default: this process's environment) pointed at the stand-in and its hosts."""
    env = {key: value for key, value in (os.environ if base is None else base).items() if key not in _UNSET}
    env.update(environment())
    env.update(ssh_environment())
    return env


def env_script() -> str:
    lines = [
        "# The local AWS stand-in (python -m deploykit.standin). Load with:",
        '#   eval "$(.venv/bin/python -m deploykit.standin env)"   or   . .cache/standin/env',
        f"unset {' '.join(_UNSET)}",
        *(f"export {key}={shlex.quote(value)}" for key, value in (environment() | ssh_environment()).items()),
    ]
    return "\n".join(lines) + "\n"


def _write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=mode)
    path.write_text(text)
    return True


def write_env_file() -> Path:
    _write_if_changed(ENV_FILE, env_script())
    return ENV_FILE


# ---------------------------------------------------------------------------------------------
# moto


def moto_answers() -> bool:
    """True when a moto server answers on the stand-in's port (its config API is moto's own)."""
    try:
        with _NO_PROXY.open(f"{ENDPOINT}/moto-api/config", timeout=2) as response:
            return "lambda" in json.loads(response.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _port_taken() -> bool:
    try:
        _NO_PROXY.open(f"{ENDPOINT}/", timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


def _pid_alive(pid: int) -> bool:
    """True when `pid` runs moto_server on the stand-in's port (a recycled pid does not count)."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    is_moto = any(argument.endswith(b"moto_server") for argument in arguments)
    return is_moto and str(MOTO_PORT).encode() in arguments and "State:\tZ" not in status


def moto_pid() -> int | None:
    """The pid of the moto server this stand-in started, when it still runs."""
    try:
        pid = int(MOTO_PID.read_text())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def moto_command(console_dir: Path, port: int, *, registry: bool = True) -> list[str]:
    """The command that serves the stand-in's AWS APIs: moto, with the instances' consoles and,
    unless `registry` is False, ECR's images answered from the local registry (as on AWS, one store)."""
    command = [sys.executable, "-m", "deploykit.moto_server", "--console-dir", str(console_dir)]
    if registry:
        command += ["--registry", image_registry.URL, "--registry-data", str(image_registry.DATA),
                    "--registry-ca", str(image_registry.CA_CERT)]  # fmt: skip
    return [*command, "-H", "127.0.0.1", "-p", str(port)]


def _listener_pid(port: int) -> int | None:
    """The process listening on 127.0.0.1:`port` (from /proc: no tool needed), or None."""
    wanted = f"0100007F:{port:04X}"
    inodes = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == wanted and fields[3] == "0A":  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if inodes and proc.name.isdigit():
            with contextlib.suppress(OSError):
                if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                    return int(proc.name)
    return None


def _terminate(pid: int) -> None:
    """SIGTERM, up to 10 s to end, then SIGKILL."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it when this process happens to be its parent


def _replace_foreign_moto() -> bool:
    """Stop a moto that answers on the stand-in's port but serves another stand-in's consoles (one a
    former checkout, or an earlier version without consoles, left running); return whether one was
    stopped. A moto of this stand-in's own, or anything that is not a moto server, is left alone."""
    pid = _listener_pid(MOTO_PORT)
    if pid is None or pid == moto_pid():
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    words = [word.decode(errors="replace") for word in command if word]
    if words == moto_command(CONSOLE_DIR, MOTO_PORT) or not any("moto_server" in word for word in words):
        return False
    say(f"stopping the moto on {ENDPOINT} that this stand-in did not start (pid {pid}: {' '.join(words)})")
    _terminate(pid)
    return True


def _start_moto() -> subprocess.Popen[bytes] | None:
    """Start moto_server detached unless this stand-in's moto already answers; return the new process."""
    if moto_answers() and not _replace_foreign_moto():
        return None
    if _port_taken():
        raise SetupError(f"port {MOTO_PORT} answers but not as moto; free it or set DEPLOYKIT_MOTO_PORT")
    CONSOLE_DIR.mkdir(parents=True, exist_ok=True)
    say(f"starting moto on {ENDPOINT} (log: {MOTO_LOG.relative_to(ROOT)})")
    env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}
    with MOTO_LOG.open("ab") as log:
        # A new session detaches moto from the caller's process group: it outlives `up`.
        process = subprocess.Popen(
            moto_command(CONSOLE_DIR, MOTO_PORT),
            cwd=ROOT,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    MOTO_PID.write_text(f"{process.pid}\n")
    return process


def _await_moto(process: subprocess.Popen[bytes] | None) -> bool:
    """Wait for a just-started moto; return whether one was started."""
    if process is None:
        return False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if moto_answers():
            # Lambda and Batch in moto would pull images from Docker Hub; nothing here may.
            request = urllib.request.Request(
                f"{ENDPOINT}/moto-api/config",
                data=json.dumps({"batch": {"use_docker": False}, "lambda": {"use_docker": False}}).encode(),
                method="POST",
            )
            _NO_PROXY.open(request, timeout=5).close()
            return True
        if process.poll() is not None:
            break
        time.sleep(0.2)
    tail = "\n".join(MOTO_LOG.read_text(errors="replace").splitlines()[-10:])
    raise SetupError(f"moto did not answer on {ENDPOINT}; last log lines:\n{tail}")


def ensure_moto() -> bool:
    """Start moto unless one answers on the stand-in's port; return whether it was started."""
    return _await_moto(_start_moto())


def stop_moto() -> bool:
    """Stop the moto server this stand-in started; return whether one ran."""
    pid = moto_pid()
    if pid is None:
        return False
    _terminate(pid)
    MOTO_PID.unlink(missing_ok=True)
    return True


def ec2_client(region: str = REGION) -> Any:
    """A boto3 EC2 client of the stand-in (explicit endpoint and keys: no environment needed)."""
    return client("ec2", region)


def client(service: str, region: str = REGION) -> Any:
    """A boto3 client of the stand-in's moto (explicit endpoint and keys: no environment needed)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name=region,
        aws_access_key_id=_DUMMY_KEY,
        aws_secret_access_key=_DUMMY_KEY,
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=3, read_timeout=120),
    )


def _tag_specs(resource: str, tags: Mapping[str, str]) -> list[dict[str, Any]]:
    pairs = [{"Key": key, "Value": value} for key, value in tags.items()]
    return [{"ResourceType": resource, "Tags": [*pairs, MANAGED_BY]}]


def _managed(name: str) -> list[dict[str, Any]]:
    return [
        {"Name": "tag:ManagedBy", "Values": [MANAGED_BY["Value"]]},
        {"Name": "tag:Name", "Values": [name]},
    ]


def _ensure_subnet(ec2: Any, name: str, cidr: str) -> str:
    """A VPC and one subnet, both `cidr`, tagged `name`; return the subnet id."""
    subnets = ec2.describe_subnets(Filters=_managed(name))["Subnets"]
    if subnets:
        return subnets[0]["SubnetId"]
    vpcs = ec2.describe_vpcs(Filters=_managed(name))["Vpcs"]
    vpc_id = (
        vpcs[0]["VpcId"]
        if vpcs
        else ec2.create_vpc(CidrBlock=cidr, TagSpecifications=_tag_specs("vpc", {"Name": name}))["Vpc"][
            "VpcId"
        ]
    )
    subnet = ec2.create_subnet(
        VpcId=vpc_id, CidrBlock=cidr, TagSpecifications=_tag_specs("subnet", {"Name": name})
    )
    return subnet["Subnet"]["SubnetId"]


def _ensure_image(ec2: Any, distro: str) -> str:
    """An AMI that names the host image the containers run; return its id."""
    name = f"deploykit-host-{distro}"
    found = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])["Images"]
    if found:
        return found[0]["ImageId"]
    return ec2.register_image(
        Name=name,
        Description=f"stand-in for a Debian AMI: containers run {images.HOSTS[distro].tag}",
        Architecture="x86_64",
        RootDeviceName="/dev/xvda",
        VirtualizationType="hvm",
    )["ImageId"]


def instances(ec2: Any, env: str, states: tuple[str, ...]) -> list[dict[str, Any]]:
    """The stand-in's instances in `env` (local, or bench) whose state is one of `states`."""
    filters = [
        {"Name": "tag:ManagedBy", "Values": [MANAGED_BY["Value"]]},
        {"Name": "tag:Env", "Values": [env]},
        {"Name": "instance-state-name", "Values": list(states)},
    ]
    return _describe_instances(ec2, filters)


def _describe_instances(ec2: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
    return [
        instance
        for page in pages
        for reservation in page["Reservations"]
        for instance in reservation["Instances"]
    ]


_LIVE = ("pending", "running", "stopping", "stopped")


def tag_value(instance: Mapping[str, Any], key: str) -> str:
    return next((tag["Value"] for tag in instance.get("Tags", []) if tag["Key"] == key), "")


def _register(ec2: Any, hosts: list[Host], changes: list[str]) -> list[str]:
    """Make each host exactly one running instance at the container's address; drop the rest.
    Return the ids of the instances made now."""
    from botocore.exceptions import BotoCoreError, ClientError

    subnet = _ensure_subnet(ec2, "deploykit-local", network.SUBNET)
    made: list[str] = []
    by_name: dict[str, list[dict[str, Any]]] = {}
    for instance in instances(ec2, TAGS["Env"], _LIVE):
        by_name.setdefault(tag_value(instance, "Name"), []).append(instance)
    stale: list[str] = []
    for host in hosts:
        keep = None
        for instance in by_name.pop(host.name, []):
            if keep is None and instance.get("PrivateIpAddress") == host.ip:
                keep = instance
            else:
                stale.append(instance["InstanceId"])
        if keep is not None and keep["State"]["Name"] in ("stopping", "stopped"):
            ec2.start_instances(InstanceIds=[keep["InstanceId"]])
            changes.append(f"{host.name}: started instance {keep['InstanceId']} again")
        if keep is not None:
            host.instance_id, host.instance_state = keep["InstanceId"], "running"
            continue
        try:
            created = ec2.run_instances(
                ImageId=_ensure_image(ec2, host.distro),
                InstanceType=INSTANCE_TYPE,
                MinCount=1,
                MaxCount=1,
                SubnetId=subnet,
                PrivateIpAddress=host.ip,
                TagSpecifications=_tag_specs("instance", {**TAGS, "Name": host.name}),
            )["Instances"][0]
        except (BotoCoreError, ClientError) as error:
            # moto answers HTTP 500 when a terminated instance still holds the address.
            raise SetupError(
                f"moto would not register {host.name} at {host.ip} ({error}); "
                "`python -m deploykit.standin down` and `up` start from a clean moto"
            ) from error
        host.instance_id, host.instance_state = created["InstanceId"], "running"
        made.append(host.instance_id)
        changes.append(f"{host.name}: registered as {host.instance_id} at {host.ip}")
    stale += [instance["InstanceId"] for leftover in by_name.values() for instance in leftover]
    if stale:
        ec2.terminate_instances(InstanceIds=stale)
        changes.append(f"terminated instances {', '.join(stale)}")
    return made


def register_fake_instances(count: int) -> int:
    """Keep exactly `count` running EC2 instances with no host behind them, for benchmarks.

    They carry Env=bench and addresses in 198.18.0.0/16, so inventory/local never lists them;
    bench_inventory() is inventory/local's file with Env=bench. Returns how many were added.
    """
    if not 0 <= count <= 60000:
        raise SetupError("the benchmark subnet holds at most 60000 instances")
    with _locked():
        ensure_moto()
        write_env_file()
        ec2 = ec2_client()
        existing = instances(ec2, BENCH_ENV, _LIVE)
        if len(existing) > count:
            extra = [instance["InstanceId"] for instance in existing[count:]]
            for start in range(0, len(extra), 500):
                ec2.terminate_instances(InstanceIds=extra[start : start + 500])
            return 0
        subnet = _ensure_subnet(ec2, "deploykit-bench", BENCH_CIDR)
        image = _ensure_image(ec2, DEFAULT_DISTRO)
        missing = count - len(existing)
        added = 0
        while added < missing:
            batch = min(100, missing - added)
            created = ec2.run_instances(
                ImageId=image,
                InstanceType=INSTANCE_TYPE,
                MinCount=batch,
                MaxCount=batch,
                SubnetId=subnet,
                TagSpecifications=_tag_specs("instance", {**TAGS, "Env": BENCH_ENV}),
            )["Instances"]
            # A Name per instance, as a real fleet has (the inventory's first hostname source).
            for offset, instance in enumerate(created):
                number = len(existing) + added + offset + 1
                ec2.create_tags(
                    Resources=[instance["InstanceId"]],
                    Tags=[{"Key": "Name", "Value": f"{BENCH_PREFIX}{number:05d}"}],
                )
            added += batch
        return added


def _bench_inventory_config() -> dict[str, Any]:
    import yaml

    config = yaml.safe_load((ROOT / "inventory" / "local" / "aws_ec2.yml").read_text())
    config["filters"]["tag:Env"] = BENCH_ENV
    return config


def _write_bench_inventory(directory: Path, config: dict[str, Any], what: str) -> Path:
    import yaml

    header = f"# Written by deploykit.standin: {what}.\n"
    _write_if_changed(directory / "aws_ec2.yml", header + yaml.safe_dump(config, sort_keys=False))
    return directory


def bench_inventory(directory: Path = BENCH_INVENTORY) -> Path:
    """Write inventory/local's aws_ec2.yml with Env=bench; return its directory for `-i`."""
    return _write_bench_inventory(directory, _bench_inventory_config(), "inventory/local with Env=bench")


def bench_bare_inventory(directory: Path | None = None) -> Path:
    """bench_inventory()'s file without what it builds per instance (hostnames, compose, groups):
    the aws_ec2 plugin alone on the same regions, filters and cache, as a baseline to measure against."""
    built = ("hostnames", "compose", "groups", "keyed_groups")
    config = {key: value for key, value in _bench_inventory_config().items() if key not in built}
    return _write_bench_inventory(
        directory or BENCH_INVENTORY.with_name("bench-inventory-bare"),
        config,
        "inventory/local with Env=bench, without hostnames, compose or groups",
    )


# ---------------------------------------------------------------------------------------------
# Containers


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([DOCKER, *args], check=check)


def host_name(index: int) -> str:
    return f"{HOST_PREFIX}{index}"


def _volume(name: str) -> str:
    return f"{name}-docker"


def containers() -> dict[str, Host]:
    """The stand-in's containers by name, as Docker reports them now."""
    # The load balancer carries the owner label too (down removes it), but is no host.
    ids = [
        line.split()[0]
        for line in _docker(
            "ps", "--all", "--filter", f"label={OWNER_LABEL}={OWNER}", "--format", "{{.ID}} {{.Names}}"
        ).stdout.splitlines()
        if line.split()[1].startswith(HOST_PREFIX)
    ]
    if not ids:
        return {}
    # A container removed between the two calls makes inspect exit 1 but print the others.
    found: dict[str, Host] = {}
    for data in json.loads(_docker("inspect", *ids, check=False).stdout or "[]"):
        name = data["Name"].lstrip("/")
        networks = data["NetworkSettings"]["Networks"] or {}
        found[name] = Host(
            name=name,
            distro=data["Config"]["Labels"].get(DISTRO_LABEL, DEFAULT_DISTRO),
            container_id=data["Id"][:12],
            state=data["State"]["Status"],
            ip=networks.get(network.NAME, {}).get("IPAddress", ""),
        )
    return found


def _volumes() -> list[str]:
    return _docker("volume", "ls", "--quiet", "--filter", f"label={OWNER_LABEL}={OWNER}").stdout.split()


def _forget_facts(name: str) -> None:
    for cached in (FACT_CACHE / name, *FACT_CACHE.glob(f"*_{name}")):
        cached.unlink(missing_ok=True)


def _remove_container(name: str) -> None:
    _docker("rm", "--force", name, check=False)
    _docker("volume", "rm", "--force", _volume(name), check=False)
    _forget_facts(name)


def _taken_addresses(ec2: Any | None) -> set[str]:
    """Addresses a new host must not take: other containers', and any that an instance in the
    stand-in's subnet ever held (moto answers `IP already in use` even after termination)."""
    attached = _docker("network", "inspect", "--format", "{{json .Containers}}", network.NAME).stdout
    taken = {entry["IPv4Address"].split("/")[0] for entry in (json.loads(attached) or {}).values()}
    if ec2 is not None:
        subnets = ec2.describe_subnets(Filters=_managed("deploykit-local"))["Subnets"]
        if subnets:
            in_subnet = [{"Name": "subnet-id", "Values": [subnets[0]["SubnetId"]]}]
            pages = ec2.get_paginator("describe_instances").paginate(Filters=in_subnet)
            taken |= {
                instance.get("PrivateIpAddress", "")
                for page in pages
                for reservation in page["Reservations"]
                for instance in reservation["Instances"]
            }
    return taken


def _create_container(name: str, distro: str, taken: set[str]) -> None:
    volume = _volume(name)
    labels = _docker("volume", "inspect", "--format", "{{json .Labels}}", volume, check=False)
    if labels.returncode == 0:
        if f'"{OWNER_LABEL}":"{OWNER}"' not in labels.stdout:
            raise SetupError(f"Docker volume {volume} exists but is not the stand-in's; remove or rename it")
        # A fresh instance starts from an empty disk, never from an earlier host's Docker state.
        _docker("volume", "rm", volume)
    _docker("volume", "create", "--label", f"{OWNER_LABEL}={OWNER}", volume)
    _forget_facts(name)
    for address in HOST_ADDRESSES:
        if address in taken:
            continue
        taken.add(address)
        result = _docker(
            "run",
            "--detach",
            "--name",
            name,
            "--hostname",
            name,
            "--network",
            network.NAME,
            "--ip",
            address,
            "--label",
            f"{OWNER_LABEL}={OWNER}",
            "--label",
            f"{DISTRO_LABEL}={distro}",
            *HOST_RUN_OPTIONS,
            "--volume",
            f"{volume}:/var/lib/docker",
            images.HOSTS[distro].tag,
            check=False,
        )
        if result.returncode == 0:
            return
        # A container that could not start stays behind as "created"; another took the address.
        _docker("rm", "--force", name, check=False)
        if "already in use" not in result.stderr:
            raise SetupError(f"starting {name} failed: {result.stderr.strip()}")
    raise SetupError(f"no free address left for {name} in {HOST_ADDRESSES[0]}-{HOST_ADDRESSES[-1]}")


def _ensure_key() -> str:
    if not SSH_KEY.exists():
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploykit-standin", "-f", str(SSH_KEY)])
    return SSH_KEY.with_suffix(".pub").read_text().strip()


def _provision(host: Host, public_key: str) -> list[str]:
    result = _docker(
        "exec",
        "--env",
        f"USER_NAME={USER}",
        "--env",
        f"PUBLIC_KEY={public_key}",
        host.name,
        "sh",
        "-c",
        _PROVISION_USER,
    )
    made = result.stdout.split()
    return [f"{host.name}: made {', '.join(made)} for {USER}"] if made else []


def _host_key(name: str) -> str | None:
    """The host's ed25519 key read inside the container: out of band, like an EC2 console log."""
    result = _docker("exec", name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub", check=False)
    return " ".join(result.stdout.split()[:2]) if result.returncode == 0 and result.stdout else None


def _scanned_key(ip: str) -> str | None:
    result = run(["ssh-keyscan", "-T", "2", "-t", "ed25519", ip], check=False)
    for line in result.stdout.splitlines():
        if line and not line.startswith("#"):
            return " ".join(line.split()[1:3])
    return None


def _await_ssh(hosts: list[Host]) -> dict[str, str]:
    """Wait until sshd on every host serves the key the host made; return known_hosts lines."""
    lines: dict[str, str] = {}
    pending = list(hosts)
    deadline = time.monotonic() + BOOT_TIMEOUT_SECONDS
    while pending:
        for host in list(pending):
            expected = _host_key(host.name)
            if expected is None:
                continue
            scanned = _scanned_key(host.ip)
            if scanned is None:
                continue
            if scanned != expected:
                raise SetupError(f"{host.ip} answers with another host key than {host.name} holds")
            lines[host.name] = f"{host.ip} {scanned}"
            pending.remove(host)
        if pending:
            if time.monotonic() > deadline:
                names = ", ".join(host.name for host in pending)
                raise SetupError(f"sshd did not answer within {BOOT_TIMEOUT_SECONDS}s on {names}")
            time.sleep(0.3)
    return lines


def _host_public_keys(name: str) -> list[str]:
    """Every public host key the host made, read inside the container (out of band)."""
    result = _docker("exec", name, "sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub", check=False)
    return [" ".join(line.split()[:2]) for line in result.stdout.splitlines() if len(line.split()) >= 2]


def console_output(name: str, keys: list[str]) -> str:
    """The serial console of a Debian AMI's first boot as far as the deploy reads it: cloud-init's
    fingerprints and host keys, between kernel lines, in the format cloud-init prints them."""
    with tempfile.NamedTemporaryFile("w", suffix=".pub") as listed:
        listed.write("".join(f"{key} root@{name}\n" for key in keys))
        listed.flush()
        fingerprints = run(["ssh-keygen", "-l", "-f", listed.name]).stdout.splitlines()
    rule = "#" * 61
    return "\n".join(
        [
            "[    0.000000] Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org)",
            f"[   11.412803] cloud-init[512]: Cloud-init v. 22.4.2 running 'modules:final' (stand-in {name})",
            f"<14>Dec  7 00:00:12 cloud-init: {rule}",
            "<14>Dec  7 00:00:12 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----",
            *(f"<14>Dec  7 00:00:12 cloud-init: {line}" for line in fingerprints),
            "<14>Dec  7 00:00:12 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----",
            f"<14>Dec  7 00:00:12 cloud-init: {rule}",
            "-----BEGIN SSH HOST KEY KEYS-----",
            *(f"{key} root@{name}" for key in keys),
            "-----END SSH HOST KEY KEYS-----",
            "[   12.004311] cloud-init[512]: Cloud-init v. 22.4.2 finished. Datasource DataSourceEc2Local.",
            "",
        ]
    )


def _write_consoles(fleet: list[Host], changes: list[str]) -> None:
    """Each host's console, where deploykit.moto_server answers GetConsoleOutput from."""
    for host in fleet:
        keys = _host_public_keys(host.name)
        if not keys:
            raise SetupError(f"{host.name} holds no SSH host keys in /etc/ssh")
        if _write_if_changed(CONSOLE_DIR / host.instance_id, console_output(host.name, keys)):
            changes.append(f"{host.name}: the console of {host.instance_id} shows its {len(keys)} host keys")


# ---------------------------------------------------------------------------------------------
# up, down, status


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One `up` or `down` at a time: two at once would both create the same hosts."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _check_image(distro: str) -> None:
    if _docker("image", "inspect", images.HOSTS[distro].tag, check=False).returncode != 0:
        raise SetupError(f"the host image {images.HOSTS[distro].tag} is missing; run `make setup` first")


def distro_of(index: int, distro: str) -> str:
    """The distro host number `index` (from 1) runs: `distro`, or the releases in turn for MIXED."""
    if distro != MIXED:
        return distro
    releases = sorted(images.HOSTS)
    return releases[(index - 1) % len(releases)]


def up(hosts: int = DEFAULT_HOSTS, distro: str = MIXED) -> list[Host]:
    """Bring the stand-in to moto plus `hosts` running, registered, reachable hosts."""
    if distro != MIXED and distro not in images.HOSTS:
        choices = ", ".join([MIXED, *sorted(images.HOSTS)])
        raise SetupError(f"unknown distro {distro!r}; choose one of {choices}")
    if hosts < 0:
        raise SetupError("--hosts must be 0 or more")
    with _locked():
        changes: list[str] = []
        moto = _start_moto()  # boots while the containers do
        network.ensure_network()
        public_key = _ensure_key()
        wanted = {host_name(index): distro_of(index, distro) for index in range(1, hosts + 1)}
        current = containers()
        for name, host in current.items():
            if wanted.get(name) != host.distro:
                _remove_container(name)
                changes.append(f"{name}: removed")
        for release in sorted(set(wanted.values())):
            _check_image(release)
        fleet: list[Host] = []
        taken: set[str] | None = None
        for name, release in wanted.items():
            host = current.get(name)
            if host is not None and host.distro == release and host.state != "running":
                if _docker("start", name, check=False).returncode == 0:
                    changes.append(f"{name}: started")
                else:  # its address went to another container meanwhile
                    _remove_container(name)
                    host = None
            if host is None or host.distro != release:
                if taken is None:  # a moto started just now holds no instance yet
                    taken = _taken_addresses(None if moto is not None else ec2_client())
                _create_container(name, release, taken)
                changes.append(f"{name}: created from {images.HOSTS[release].tag}")
            fleet.append(Host(name=name, distro=release))
        running = containers()
        for host in fleet:
            host.container_id, host.state, host.ip = (
                running[host.name].container_id,
                running[host.name].state,
                running[host.name].ip,
            )
            if not host.ip:
                raise SetupError(f"{host.name} has no address on the {network.NAME} network")
            changes += _provision(host, public_key)
        known = _await_ssh(fleet)
        if _write_if_changed(KNOWN_HOSTS, "".join(f"{known[host.name]}\n" for host in fleet)):
            changes.append(f"known_hosts: {len(fleet)} host keys")
        if _await_moto(moto):
            changes.append(f"moto started on {ENDPOINT}")
        made = _register(ec2_client(), fleet, changes)
        _write_consoles(fleet, changes)
        changes += _ensure_load_balancer(fleet, made)
        _ensure_app_parameters(changes)
        _ensure_repository(changes)
        _ensure_notice_topic(changes)
        if _write_if_changed(ENV_FILE, env_script()):
            changes.append(f"wrote {ENV_FILE.relative_to(ROOT)}")
        _write_if_changed(STATE_FILE, json.dumps(_state(fleet), indent=2) + "\n")
    for change in changes:
        say(change)
    say("stand-in up to date: nothing changed" if not changes else f"stand-in ready: {len(fleet)} hosts")
    return fleet


def load_balancer_settings() -> dict[str, Any]:
    """The target group's settings, from the provisioning role that makes the ALB on AWS."""
    return loadbalancer.target_group_settings(LOAD_BALANCER_DEFAULTS)


def detection_window_seconds() -> float:
    """How long the load balancer may keep sending requests to a host that stopped answering:
    unhealthy_threshold failed health checks, each waiting its timeout, an interval apart (HAProxy
    starts the next check an interval after the last one ended), plus two seconds for
    the checks' and the clients' scheduling on a busy machine (measured: up to 0.45 s past the
    nominal bound on 2 cores)."""
    settings = load_balancer_settings()
    return (
        settings["aws_load_balancer_unhealthy_threshold"]
        * (
            settings["aws_load_balancer_health_check_interval_seconds"]
            + settings["aws_load_balancer_health_check_timeout_seconds"]
        )
        + 2
    )


def _ensure_load_balancer(fleet: list[Host], made: list[str]) -> list[str]:
    """The target group in moto, as provisioning makes it on AWS, and HAProxy configured from it.

    Hosts are registered as targets when their instance is made (or the target group is), as
    provisioning registers new instances; a target deregistered by hand stays out until then, so
    the load balancer always follows what moto holds. Terminated instances leave it.
    """
    ec2, elbv2 = ec2_client(), client("elbv2")
    vpc_id = ec2.describe_subnets(Filters=_managed("deploykit-local"))["Subnets"][0]["VpcId"]
    existed = bool(_target_groups(elbv2))
    arn = loadbalancer.ensure_target_group(
        elbv2, ec2, vpc_id=vpc_id, name=TARGET_GROUP, settings=load_balancer_settings()
    )
    registered = {
        entry["Target"]["Id"]
        for entry in elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    }
    fleet_ids = {host.instance_id for host in fleet}
    wanted = (registered & fleet_ids) | set(made) if existed else fleet_ids
    changes = [
        f"target group {TARGET_GROUP}: {change}"
        for change in loadbalancer.register_targets(elbv2, arn, sorted(wanted))
    ]
    return changes + loadbalancer.ensure(elbv2, ec2, arn)


def _target_groups(elbv2: Any) -> list[dict[str, Any]]:
    try:
        return elbv2.describe_target_groups(Names=[TARGET_GROUP])["TargetGroups"]
    except elbv2.exceptions.TargetGroupNotFoundException:
        return []


def _ensure_app_parameters(changes: list[str]) -> None:
    """The app's secrets in the stand-in's SSM, created only when absent, as provision.yml does on AWS.

    The database is the platform's PostgreSQL, reached from the hosts at the network's gateway.
    """
    ssm = client("ssm")
    wanted = {
        f"/deploykit/{TAGS['Env']}/DJANGO_SECRET_KEY": lambda: secrets.token_urlsafe(50),
        f"/deploykit/{TAGS['Env']}/DATABASE_URL": lambda: postgres.database_url().replace(
            "@127.0.0.1:", f"@{network.GATEWAY}:"
        ),
    }
    for name, value in wanted.items():
        try:
            ssm.put_parameter(Name=name, Value=value(), Type="SecureString", Overwrite=False)
            changes.append(f"SSM parameter {name} created")
        except ssm.exceptions.ParameterAlreadyExists:
            pass
    # The deploy key, where provision.yml stores the private half of the instances' key pair on
    # AWS and where the deploy stage reads it from: the stand-in's hosts trust this key. Kept equal
    # to the key file, which a new stand-in state directory makes anew.
    name, key = DEPLOY_KEY_PARAMETER, SSH_KEY.read_text()
    try:
        stored = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        stored = None
    if stored != key:
        ssm.put_parameter(Name=name, Value=key, Type="SecureString", Overwrite=True)
        changes.append(f"SSM parameter {name} holds the stand-in's deploy key")


def _ensure_repository(changes: list[str]) -> None:
    """The app image's ECR repository, with immutable tags, as roles/aws_registry makes it on AWS
    (its images are the registry's: deploykit.ecr_registry). The deploy marks the images it holds
    there."""
    ecr = client("ecr")
    try:
        ecr.create_repository(repositoryName=ECR_REPOSITORY, imageTagMutability="IMMUTABLE")
        changes.append(f"ECR repository {ECR_REPOSITORY} created")
    except ecr.exceptions.RepositoryAlreadyExistsException:
        pass


def _ensure_notice_topic(changes: list[str]) -> None:
    """The deploy notices' SNS topic, named, tagged and titled as roles/aws_notices makes it on AWS."""
    sns = client("sns")
    topics = [
        topic["TopicArn"] for page in sns.get_paginator("list_topics").paginate() for topic in page["Topics"]
    ]
    if any(arn.rsplit(":", 1)[-1] == NOTICE_TOPIC for arn in topics):
        return
    sns.create_topic(
        Name=NOTICE_TOPIC,
        Attributes={"DisplayName": f"{TAGS['App']} {TAGS['Env']} deploys"},
        Tags=[{"Key": key, "Value": TAGS[key]} for key in ("App", "Env")],
    )
    changes.append(f"SNS topic {NOTICE_TOPIC} created")


def _state(fleet: list[Host]) -> dict[str, Any]:
    return {
        "endpoint": ENDPOINT,
        "region": REGION,
        "user": USER,
        "ssh_key": str(SSH_KEY),
        "known_hosts": str(KNOWN_HOSTS),
        "hosts": [asdict(host) for host in fleet],
    }


def leftovers() -> list[str]:
    """What the stand-in made that still exists: empty after `down`."""
    found = [f"container {name}" for name in containers()]
    if loadbalancer.status()["container"] != "absent":
        found.append(f"container {loadbalancer.CONTAINER}")
    found += [f"volume {name}" for name in _volumes()]
    pid = moto_pid()
    if pid is not None:
        found.append(f"moto process {pid}")
    return found


def down() -> None:
    """Remove the stand-in's containers, their volumes and its moto; verify none is left."""
    with _locked():
        for name in containers():
            _remove_container(name)
            say(f"{name}: removed")
        if loadbalancer.remove():
            say(f"{loadbalancer.CONTAINER}: removed")
        for volume in _volumes():
            _docker("volume", "rm", "--force", volume, check=False)
        if stop_moto():
            say("moto stopped")
        elif moto_answers():
            # A moto the stand-in did not start stays; only the stand-in's instances leave it.
            ec2 = ec2_client()
            ids = [i["InstanceId"] for env in (TAGS["Env"], BENCH_ENV) for i in instances(ec2, env, _LIVE)]
            for start in range(0, len(ids), 500):
                ec2.terminate_instances(InstanceIds=ids[start : start + 500])
            say(f"terminated {len(ids)} instances in the moto that was already running")
        left = leftovers()
        if left:
            raise SetupError(f"down left {', '.join(left)} behind")
        shutil.rmtree(STATE_DIR, ignore_errors=True)
    say("stand-in down: no container, volume or moto process left")


def _ssh_answers(host: Host) -> str:
    if host.state != "running" or not host.ip:
        return "-"
    result = subprocess.run(
        [
            "ssh",
            "-i",
            str(SSH_KEY),
            "-o",
            f"UserKnownHostsFile={KNOWN_HOSTS}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=3",
            f"{USER}@{host.ip}",
            "true",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=15,
    )
    if result.returncode == 0:
        return "ok"
    return "fails: " + (result.stderr.strip().splitlines() or ["?"])[-1]


def _foreign_instances(ec2: Any) -> list[dict[str, Any]]:
    """Running instances that inventory/local selects but the stand-in did not make."""
    filters = [
        {"Name": "tag:App", "Values": [TAGS["App"]]},
        {"Name": "tag:Env", "Values": [TAGS["Env"]]},
        {"Name": "instance-state-name", "Values": ["running"]},
    ]
    return [
        instance
        for instance in _describe_instances(ec2, filters)
        if tag_value(instance, MANAGED_BY["Key"]) != MANAGED_BY["Value"]
    ]


def status() -> None:
    pid = moto_pid()
    if pid is not None:
        print(f"moto: running on {ENDPOINT} (pid {pid}, log {MOTO_LOG.relative_to(ROOT)})")
    elif moto_answers():
        print(f"moto: running on {ENDPOINT} (not started by the stand-in)")
    else:
        print(f"moto: not running ({ENDPOINT})")
    registered: dict[str, dict[str, Any]] = {}
    foreign: list[dict[str, Any]] = []
    fake = 0
    if moto_answers():
        ec2 = ec2_client()
        registered = {tag_value(i, "Name"): i for i in instances(ec2, TAGS["Env"], _LIVE)}
        fake = len(instances(ec2, BENCH_ENV, ("running",)))
        foreign = _foreign_instances(ec2)
    hosts = sorted(containers().values(), key=lambda host: (len(host.name), host.name))
    if not hosts:
        print("hosts: none")
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(_ssh_answers, hosts))
    for host, ssh in zip(hosts, answers, strict=True):
        instance = registered.pop(host.name, None)
        ec2_text = f"{instance['InstanceId']} {instance['State']['Name']}" if instance else "not registered"
        print(f"{host.name}  {host.state}  {host.ip or '-'}  {host.distro}  ec2: {ec2_text}  ssh: {ssh}")
    for name, instance in registered.items():
        print(f"{name}  no container  ec2: {instance['InstanceId']} {instance['State']['Name']}")
    if fake:
        print(f"benchmark instances (Env={BENCH_ENV}, no hosts): {fake} running")
    for instance in foreign:
        name = tag_value(instance, "Name") or instance["InstanceId"]
        print(
            f"warning: {name} ({instance['InstanceId']}, {instance.get('PrivateIpAddress', '-')}) is in "
            "inventory/local but is no stand-in host: Ansible would try to reach it"
        )
    balancer = loadbalancer.status()
    print(f"load balancer: {balancer['container']}  {balancer['url']}  CA {loadbalancer.CA_CERT}")
    for target, health in balancer["targets"].items():
        print(f"  target {target}  {health['address']}  {health['status']}  (check: {health['check']})")


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploykit.standin", description="The local stand-in for AWS: moto and EC2 hosts."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="start moto and N hosts registered as EC2 instances")
    up_parser.add_argument("--hosts", type=int, default=DEFAULT_HOSTS, help="hosts to run (default: 3)")
    up_parser.add_argument(
        "--distro",
        choices=[MIXED, *sorted(images.HOSTS)],
        default=MIXED,
        help="every host on one release, or (default) Debian 12 and 13 in turn",
    )
    up_parser.add_argument(
        "--register-only",
        type=int,
        metavar="N",
        help="only keep N instances registered in moto with no hosts behind them (Env=bench), for benchmarks",
    )
    commands.add_parser("down", help="remove the hosts, their volumes and moto")
    commands.add_parser("status", help="moto, and each host's container, address, instance and SSH")
    commands.add_parser(
        "env", help="print the AWS_* exports for the tools (also written to .cache/standin/env)"
    )
    args = parser.parse_args(argv)

    def dispatch() -> None:
        if args.command == "up" and args.register_only is not None:
            added = register_fake_instances(args.register_only)
            inventory = bench_inventory().relative_to(ROOT)
            say(f"{args.register_only} instances in Env={BENCH_ENV} ({added} new); inventory: {inventory}")
        elif args.command == "up":
            up(args.hosts, args.distro)
        elif args.command == "down":
            down()
        elif args.command == "status":
            status()
        else:
            write_env_file()
            print(env_script(), end="")

    return main_guard(dispatch)


if __name__ == "__main__":
    sys.exit(main())
