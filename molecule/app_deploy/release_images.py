"""The releases the app_deploy and default scenarios deploy, built from the project's app and pushed
to the project's registry (the ECR stand-in).

    python release_images.py push             build A, B and C, push them, print their URIs as JSON
    python release_images.py migrate TAG      apply the migrations of release TAG to the database

A and B are the app as it is, with different versions. C is B plus a migration that nobody
applies: a realistic broken release, whose readiness check answers 503 "unapplied migrations"
for as long as it runs.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY") or Path(__file__).resolve().parents[2])
sys.path.insert(0, str(PROJECT))

from deploykit import app_image, network, postgres, registry  # noqa: E402
from deploykit.system import DOCKER, run  # noqa: E402

# One repository per distro: `make molecule` runs the distros side by side, and a push of one run
# must not move the tags that the other run's hosts have just deployed (its idempotence would fail).
DISTRO = os.environ.get("MOLECULE_DISTRO") or "debian12"
REPOSITORY = f"deploykit/molecule-app-{DISTRO}"
LOCAL = f"deploykit-molecule/app-{DISTRO}"
# What the hosts pull, as the scenarios' group_vars name it (app_deploy_image_repository).
IMAGE_REPOSITORY = f"{registry.ADDRESS}/{REPOSITORY}"
RELEASES = {
    "release-a": {"version": "1.0.0+molecule.a", "revision": "a" * 40},
    "release-b": {"version": "2.0.0+molecule.b", "revision": "b" * 40},
}
BROKEN = "release-c"
MIGRATIONS = PROJECT / "django_app" / "releases" / "migrations"
UNAPPLIED = "9999_molecule_unapplied"


def _latest_migration() -> str:
    names = sorted(p.stem for p in MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.py"))
    if not names:
        raise SystemExit(f"no migrations in {MIGRATIONS}")
    return names[-1]


def _build_broken(base: str, tag: str) -> None:
    migration = f'''"""Shipped with release C of the app_deploy scenario and never applied."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("releases", "{_latest_migration()}")]

    operations = [
        migrations.AddField(model_name="deploy", name="molecule_note", field=models.TextField(null=True)),
    ]
'''
    with tempfile.TemporaryDirectory(prefix="deploykit-release-c-") as context:
        Path(context, f"{UNAPPLIED}.py").write_text(migration)
        Path(context, "Dockerfile").write_text(
            f"FROM {base}\nCOPY {UNAPPLIED}.py /app/releases/migrations/{UNAPPLIED}.py\n"
        )
        run([DOCKER, "build", "--quiet", "--tag", tag, context], env={**os.environ, "DOCKER_BUILDKIT": "1"})


def push() -> dict[str, str]:
    uris = {}
    for tag, release in RELEASES.items():
        local = f"{LOCAL}:{tag}"
        app_image.build(
            local, version=release["version"], revision=release["revision"], build_id=f"molecule-{tag}"
        )
        uris[tag] = registry.push(local, REPOSITORY, tag)
    _build_broken(f"{LOCAL}:release-b", f"{LOCAL}:{BROKEN}")
    uris[BROKEN] = registry.push(f"{LOCAL}:{BROKEN}", REPOSITORY, BROKEN)
    return uris


def database_url_for_hosts() -> str:
    """The database URL as the test hosts (and containers inside them) reach it."""
    return postgres.database_url().replace("@127.0.0.1:", f"@{network.GATEWAY}:")


def migrate(tag: str) -> None:
    # `--env NAME` takes the value from this process: the password stays out of the command line,
    # which an error message would show.
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_hosts(),
        "DJANGO_SECRET_KEY": "molecule-migrate-only",
        "DJANGO_ALLOWED_HOSTS": "localhost",
    }
    run(
        [
            DOCKER,
            "run",
            "--rm",
            "--network",
            network.NAME,
            "--env",
            "DATABASE_URL",
            "--env",
            "DJANGO_SECRET_KEY",
            "--env",
            "DJANGO_ALLOWED_HOSTS",
            f"{LOCAL}:{tag}",
            "python",
            "manage.py",
            "migrate",
            "--noinput",
        ],
        env=env,
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["push"]:
        print(json.dumps(push()))
    elif argv[:1] == ["migrate"] and len(argv) == 2:
        migrate(argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
