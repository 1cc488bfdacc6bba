"""The stand-in for ECR's registry: Debian's docker-registry (CNCF distribution 2.8) with TLS.

The project makes its own CA; the registry's certificate names the address test hosts use (the
project network's gateway) and loopback. Like ECR, the registry wants a login: user `AWS` and the
password that the ECR API stand-in (moto) hands out in GetAuthorizationToken, so the same login
task serves both worlds. State lives under /var/lib/deploykit so images survive a fresh clone.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography import x509

from deploykit import network, pki
from deploykit.system import DOCKER, SetupError, run, say

STATE = pki.STATE
PKI = pki.PKI
CA_CERT = pki.CA_CERT
PORT = 5443
ADDRESS = f"{network.GATEWAY}:{PORT}"
USER = "AWS"
# What moto's GetAuthorizationToken returns for its default account (`AWS:<account>-auth-token`).
PASSWORD = "123456789012-auth-token"  # noqa: S105 - a fixed value of the local stand-in, not a secret
_DIR = STATE / "registry"
# The registry's storage root (distribution's filesystem driver): the ECR API stand-in reads and
# removes tags there where distribution 2.8's HTTP API has no call (deploykit/ecr_registry.py).
DATA = _DIR / "data"
# The registry as this machine reaches it (its certificate names loopback too).
URL = f"https://127.0.0.1:{PORT}"
_PID = _DIR / "registry.pid"
_LOG = _DIR / "registry.log"


def _ensure_pki() -> None:
    cert, key = PKI / "registry.crt", PKI / "registry.key"
    if CA_CERT.exists() and cert.exists() and key.exists():
        return
    say(f"making the project CA and the registry's certificate in {PKI}")
    PKI.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca = pki.new_ca(now)
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address(network.GATEWAY)),
    ]
    server_key, server = pki.server_certificate(ca_key, ca, "deploykit registry", names, now)
    pki.write_private(pki.CA_KEY, pki.pem_key(ca_key))
    pki.write_private(key, pki.pem_key(server_key))
    CA_CERT.write_bytes(pki.pem_cert(ca))
    cert.write_bytes(pki.pem_cert(server) + pki.pem_cert(ca))


def _config() -> Path:
    htpasswd = _DIR / "htpasswd"
    run(["htpasswd", "-Bbc", str(htpasswd), USER, PASSWORD])
    config = _DIR / "config.yml"
    config.write_text(
        f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {DATA}
  delete:
    enabled: true
http:
  addr: 0.0.0.0:{PORT}
  tls:
    certificate: {PKI / "registry.crt"}
    key: {PKI / "registry.key"}
auth:
  htpasswd:
    realm: deploykit-registry
    path: {htpasswd}
"""
    )
    return config


def answers() -> bool:
    """True when our registry serves TLS with our CA (401 without a login is an answer)."""
    context = ssl.create_default_context(cafile=str(CA_CERT)) if CA_CERT.exists() else None
    if context is None:
        return False
    try:
        urllib.request.urlopen(f"{URL}/v2/", context=context, timeout=2)
    except urllib.error.HTTPError as error:
        return error.code == 401
    except (urllib.error.URLError, OSError):
        return False
    return True


def _stop_stale() -> None:
    if not _PID.exists():
        return
    try:
        os.kill(int(_PID.read_text()), signal.SIGTERM)
        time.sleep(1)
    except (ProcessLookupError, ValueError):
        pass
    _PID.unlink(missing_ok=True)


def stop() -> None:
    """Stop the registry (the end-to-end tests' registry outage); ensure_registry() starts it again."""
    _stop_stale()


def _trust_on_this_host() -> None:
    """Let the engine on this machine push to the address the test hosts pull from."""
    target = Path("/etc/docker/certs.d") / ADDRESS / "ca.crt"
    if not target.exists() or target.read_bytes() != CA_CERT.read_bytes():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(CA_CERT.read_bytes())


def ensure_registry() -> str:
    """Start the registry unless it already answers; return its address for image names."""
    network.ensure_network()
    _DIR.mkdir(parents=True, exist_ok=True)
    _ensure_pki()
    _trust_on_this_host()
    if answers():
        return ADDRESS
    _stop_stale()
    config = _config()
    say(f"starting the registry on {ADDRESS} (log: {_LOG})")
    with _LOG.open("ab") as log:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _PID.write_text(str(process.pid))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if answers():
            return ADDRESS
        if process.poll() is not None:
            break
        time.sleep(0.3)
    tail = "\n".join(_LOG.read_text(errors="replace").splitlines()[-10:])
    raise SetupError(f"the registry did not answer on port {PORT}; last log lines:\n{tail}")


def push(local_tag: str, repository: str, tag: str) -> str:
    """Tag a local image into the registry and push it; return the image URI."""
    uri = f"{ADDRESS}/{repository}:{tag}"
    config_dir = _DIR / "docker-config"  # a login of our own, not written to the user's ~/.docker
    config_dir.mkdir(exist_ok=True)
    env = {**os.environ, "DOCKER_CONFIG": str(config_dir)}
    run([DOCKER, "login", "--username", USER, "--password-stdin", ADDRESS], input_text=PASSWORD, env=env)
    run([DOCKER, "tag", local_tag, uri])
    run([DOCKER, "push", uri], env=env)
    return uri


def tags(repository: str) -> list[str]:
    """The tags `repository` has in the registry, as its v2 API lists them (none: an empty list)."""
    context = ssl.create_default_context(cafile=str(CA_CERT))
    request = urllib.request.Request(f"{URL}/v2/{repository}/tags/list")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return sorted(json.load(response).get("tags") or [])
    except urllib.error.HTTPError as error:
        if error.code == 404:  # a repository nothing was pushed to yet
            return []
        raise
