"""The fleet's SSH host keys, read out of band from EC2, written as a known_hosts file.

A CodeBuild container starts with an empty known_hosts, and host key checking stays on: accepting
whatever key answers first would let anything on the path between the build and an instance pose as
that instance. cloud-init on Debian's and Ubuntu's AMIs prints the instance's host keys to its serial
console at first boot, between `-----BEGIN SSH HOST KEY KEYS-----` and `-----END SSH HOST KEY
KEYS-----`, and EC2's GetConsoleOutput returns that console through the AWS API, with no traffic to
the instance. This module finds the instances as the inventory does (the regions and filters of its
aws_ec2.yml), reads each one's console and writes one `<private address> <key type> <key>` line per
key. An instance whose console shows no host keys (yet) fails the whole file, naming the instance:
a deploy to it would stop at its first SSH connection anyway.

CLI: python -m deploykit.known_hosts --inventory inventory/production --output FILE [--wait SECONDS]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
END = "-----END SSH HOST KEY KEYS-----"
# A public key as OpenSSH writes it: its type, then the base64 of its wire form, which starts with
# the type again. Console lines may carry a prefix (`ec2: `) or be interleaved with kernel messages;
# a key that is cut or run into other text does not parse whole, and is left out.
KEY = re.compile(r"(?P<type>(?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+)\s+(?P<blob>AAAA[A-Za-z0-9+/]+={0,3})(?=\s|$)")
# What inventory/<env>/aws_ec2.yml must connect to for these lines to be the ones ssh looks up.
ADDRESS_VARIABLE = "private_ip_address"
EXIT_MISSING, EXIT_USAGE = 1, 2


class InventoryError(Exception):
    """The inventory file cannot be read as this module needs it."""


class HostKeysMissing(Exception):
    """Some instances' consoles show no host keys; the message names each one."""


@dataclass(frozen=True)
class FleetQuery:
    """What an aws_ec2.yml asks EC2 for: the regions and the DescribeInstances filters."""

    regions: tuple[str, ...]
    filters: tuple[tuple[str, tuple[str, ...]], ...]

    def boto_filters(self) -> list[dict[str, Any]]:
        return [{"Name": name, "Values": list(values)} for name, values in self.filters]


@dataclass(frozen=True)
class Instance:
    instance_id: str
    name: str
    address: str
    region: str

    def describe(self) -> str:
        return f"{self.name} ({self.instance_id}, {self.address}, {self.region})"


def load_query(inventory: Path) -> FleetQuery:
    """The regions and filters of `inventory` (a directory holding aws_ec2.yml, or the file itself)."""
    path = inventory / "aws_ec2.yml" if inventory.is_dir() else inventory
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise InventoryError(f"cannot read {path}: {error.strerror}") from error
    regions = config.get("regions")
    if not regions or not isinstance(regions, list):
        raise InventoryError(f"{path}: `regions` must list the fleet's regions")
    # ssh looks the host up under the address it connects to; these lines carry the private one.
    host = (config.get("compose") or {}).get("ansible_host")
    if host != ADDRESS_VARIABLE:
        raise InventoryError(
            f"{path}: compose.ansible_host is {host!r}; this tool writes known_hosts lines for "
            f"{ADDRESS_VARIABLE}, the address the inventory must connect to"
        )
    filters = []
    for name, value in (config.get("filters") or {}).items():
        values = value if isinstance(value, list) else [value]
        filters.append((str(name), tuple(str(item) for item in values)))
    return FleetQuery(tuple(str(region) for region in regions), tuple(filters))


def find_instances(client: Any, query: FleetQuery, region: str) -> list[Instance]:
    """The instances of one region that match the inventory's filters, in name order."""
    found = []
    for page in client.get_paginator("describe_instances").paginate(Filters=query.boto_filters()):
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
                address = instance.get("PrivateIpAddress")
                if not address:
                    continue
                name = tags.get("Name") or address
                found.append(Instance(instance["InstanceId"], name, address, region))
    return sorted(found, key=lambda item: (item.name, item.instance_id))


def _wire_fields(raw: bytes) -> list[bytes] | None:
    """The length-prefixed fields of a public key's wire form; None unless they fill it exactly."""
    fields, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            return None
        length = int.from_bytes(raw[offset : offset + 4], "big")
        offset += 4
        if offset + length > len(raw):
            return None
        fields.append(raw[offset : offset + length])
        offset += length
    return fields


def _is_public_key(key_type: str, blob: str) -> bool:
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return False
    fields = _wire_fields(raw)
    # The type, then at least the key itself; an Ed25519 key is 32 bytes.
    if not fields or len(fields) < 2 or fields[0] != key_type.encode("ascii"):
        return False
    return key_type != "ssh-ed25519" or (len(fields) == 2 and len(fields[1]) == 32)


def host_keys(console: str) -> list[str]:
    """`<type> <base64>` of each host key in the console's last complete host key block."""
    lines = console.replace("\r", "").split("\n")
    block: list[str] | None = None
    current: list[str] | None = None
    for line in lines:
        if BEGIN in line:
            current = []
        elif END in line and current is not None:
            block, current = current, None
        elif current is not None:
            current.append(line)
    keys: list[str] = []
    for line in block or []:
        match = KEY.search(line)
        if match and _is_public_key(match["type"], match["blob"]):
            key = f"{match['type']} {match['blob']}"
            if key not in keys:
                keys.append(key)
    return keys


def _consoles(client: Any, instance_id: str) -> Iterator[str]:
    """The instance's console output: the latest (Nitro instances), then the buffered copy."""
    from botocore.exceptions import ClientError

    # Latest is refused on instance types outside the Nitro system; the buffered copy is what they
    # have. An error that is not about Latest (access, a missing instance) comes back from the call
    # below as well, and is raised there.
    with contextlib.suppress(ClientError):
        yield client.get_console_output(InstanceId=instance_id, Latest=True).get("Output") or ""
    yield client.get_console_output(InstanceId=instance_id).get("Output") or ""


def instance_keys(client: Any, instance: Instance) -> list[str]:
    for output in _consoles(client, instance.instance_id):
        keys = host_keys(output)
        if keys:
            return keys
    return []


def missing_message(missing: Sequence[Instance], waited: float) -> str:
    names = "; ".join(instance.describe() for instance in missing)
    after = f" after {waited:.0f} s" if waited else ""
    return (
        f"no SSH host keys in the console output of {names}{after}. cloud-init prints them once, at an "
        "instance's first boot; a new instance shows them a few minutes after launch, so run again then "
        "(or pass --wait). An instance rebooted or stopped since its first boot no longer shows them: "
        "docs/aws.md, 'The instances' host keys', says what to do."
    )


def collect(
    query: FleetQuery,
    client_for: Callable[[str], Any],
    *,
    wait_seconds: float = 0,
    poll_seconds: float = 15,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[Instance, list[str]]:
    """Each instance of the fleet and its host keys; HostKeysMissing names those without any."""
    clients = {region: client_for(region) for region in query.regions}
    fleet = [
        instance for region in query.regions for instance in find_instances(clients[region], query, region)
    ]
    started = clock()
    keys: dict[Instance, list[str]] = {}
    while True:
        for instance in fleet:
            if instance not in keys:
                found = instance_keys(clients[instance.region], instance)
                if found:
                    keys[instance] = found
        missing = [instance for instance in fleet if instance not in keys]
        if not missing:
            return {instance: keys[instance] for instance in fleet}
        waited = clock() - started
        if waited + poll_seconds > wait_seconds:
            raise HostKeysMissing(missing_message(missing, waited))
        sleep(poll_seconds)


def render(keys: Mapping[Instance, Sequence[str]], source: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [f"# Host keys of {source}, from EC2's console output (python -m deploykit.known_hosts), {stamp}"]
    for instance, host in keys.items():
        lines.append(f"# {instance.describe()}")
        lines += [f"{instance.address} {key}" for key in host]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` whole, so that ssh never reads half a file; public keys, so mode 0644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".known_hosts-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def ec2_client(region: str) -> Any:
    import boto3
    from botocore.config import Config

    # The endpoint comes from AWS_ENDPOINT_URL (a moto server) or is AWS's own.
    return boto3.client(
        "ec2",
        region_name=region,
        config=Config(connect_timeout=5, read_timeout=20, retries={"mode": "standard"}),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploykit.known_hosts", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--inventory", type=Path, required=True, help="inventory/<env> (its aws_ec2.yml)")
    parser.add_argument("--output", type=Path, required=True, help="the known_hosts file to write")
    parser.add_argument(
        "--wait", type=float, default=0, metavar="SECONDS",
        help="keep asking this long for instances whose console shows no host keys yet (default 0)",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None, client_for: Callable[[str], Any] = ec2_client) -> int:
    args = _parser().parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        query = load_query(args.inventory)
        keys = collect(query, client_for, wait_seconds=args.wait)
    except InventoryError as error:
        print(f"deploykit: {error}", file=sys.stderr)
        return EXIT_USAGE
    except HostKeysMissing as error:
        print(f"deploykit: {error}", file=sys.stderr)
        return EXIT_MISSING
    except (BotoCoreError, ClientError) as error:
        print(f"deploykit: cannot read the fleet's host keys from EC2: {error}", file=sys.stderr)
        return EXIT_MISSING
    write_atomically(args.output, render(keys, str(args.inventory)))
    count = sum(len(host) for host in keys.values())
    if keys:
        print(f"deploykit: {len(keys)} hosts, {count} host keys from EC2's console output -> {args.output}")
    else:
        print(f"deploykit: no running instance matches {args.inventory}; {args.output} lists no host")
    return 0


if __name__ == "__main__":
    sys.exit(main())
