"""The project's own PostgreSQL cluster (Debian's packages): the app's database locally.

A separate cluster on its own port leaves the machine's default cluster alone. It listens on
every address but admits password logins only from loopback and the 172.16.0.0/12 range that
the project's Docker networks use, so containers and test hosts reach it at their gateway.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from deploykit.system import CACHE, SetupError, run, say

CLUSTER = "deploykit"
PORT = 5433
ROLE = "deploykit"
DATABASE = "deploykit"
URL_FILE = CACHE / "postgres-url"
# The role's password, kept for the machine: every checkout (a CI clone beside a working tree)
# shares the one cluster, and a new password per checkout would lock the others out.
PASSWORD_FILE = Path("/var/lib/deploykit/postgres-password")
DOCKER_NETWORKS = "172.16.0.0/12"


def _version() -> str:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise SetupError(
            "PostgreSQL server not installed; run `make setup` (it installs Debian's postgresql)"
        )
    return versions[-1].parts[-3]


def _cluster_status(version: str) -> str | None:
    """'online', 'down', or None when the cluster does not exist."""
    result = run(["pg_lsclusters", "--no-header"])
    for line in result.stdout.splitlines():
        fields = line.split()
        if fields[:2] == [version, CLUSTER]:
            return fields[3]
    return None


def _psql(sql: str, version: str) -> str:
    # SQL goes through stdin so the generated password never appears in a process listing.
    result = run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            f"/usr/lib/postgresql/{version}/bin/psql",
            "-p",
            str(PORT),
            "-v",
            "ON_ERROR_STOP=1",
            "-qtA",
            "-f",
            "-",
        ],
        input_text=sql,
    )
    return result.stdout.strip()


def _password() -> str:
    if PASSWORD_FILE.exists():
        return PASSWORD_FILE.read_text().strip()
    password = secrets.token_urlsafe(24)
    if URL_FILE.exists():  # a checkout set up before the password was kept for the machine
        match = re.match(r"postgres://[^:]+:([^@]+)@", URL_FILE.read_text())
        password = match.group(1) if match else password
    PASSWORD_FILE.parent.mkdir(parents=True, exist_ok=True)
    PASSWORD_FILE.touch(mode=0o600)
    PASSWORD_FILE.write_text(password + "\n")
    return password


def ensure_cluster() -> str:
    """Create and start the cluster, its role and database; return the database URL."""
    version = _version()
    status = _cluster_status(version)
    if status is None:
        say(f"creating PostgreSQL {version} cluster '{CLUSTER}' on port {PORT}")
        run(
            [
                "pg_createcluster",
                "--port",
                str(PORT),
                version,
                CLUSTER,
                "--",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
            ]
        )
        run(["pg_conftool", version, CLUSTER, "set", "listen_addresses", "*"])
        hba = Path(f"/etc/postgresql/{version}/{CLUSTER}/pg_hba.conf")
        with hba.open("a") as file:
            file.write(
                f"# deploykit: the project's containers and test hosts\n"
                f"host all all {DOCKER_NETWORKS} scram-sha-256\n"
            )
    if status != "online":
        run(["pg_ctlcluster", version, CLUSTER, "start"])
        say(f"PostgreSQL cluster '{CLUSTER}' started on port {PORT}")
    password = _password()
    # Constants and a token_urlsafe password only: nothing here comes from user input.
    _psql(
        f"""
        SELECT 'CREATE ROLE {ROLE} LOGIN CREATEDB'
          WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') \\gexec
        ALTER ROLE {ROLE} WITH LOGIN CREATEDB PASSWORD '{password}';
        SELECT 'CREATE DATABASE {DATABASE} OWNER {ROLE}'
          WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE}') \\gexec
        """,  # noqa: S608
        version,
    )
    url = f"postgres://{ROLE}:{password}@127.0.0.1:{PORT}/{DATABASE}"
    CACHE.mkdir(exist_ok=True)
    URL_FILE.touch(mode=0o600)
    URL_FILE.write_text(url + "\n")
    return url


def database_url() -> str:
    """The URL that `make setup` recorded; the tests and the demo read it."""
    if not URL_FILE.exists():
        raise SetupError(f"{URL_FILE} is missing; run `make setup` to start the project's PostgreSQL")
    return URL_FILE.read_text().strip()
