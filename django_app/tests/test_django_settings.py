"""Settings come from the environment: production refuses to start without its required variables,
and its security settings pass `check --deploy` unless turned off on purpose."""

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parents[1]

REQUIRED_ENV = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "app.example.test",
    # Never connected to: importing settings and `check --deploy` do not open a connection.
    "DATABASE_URL": "postgres://app:app@db.invalid:5432/app",
}


def _python(*args: str, env: dict[str, str], cwd: Path = APP_DIR) -> subprocess.CompletedProcess[str]:
    """Run Python in a fresh process with only `env` on top of an environment free of app settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "APP_"))}
    return subprocess.run(
        [sys.executable, *args], env={**clean, **env}, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _python(
        "manage.py",
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        "--settings=config.settings.production",
        env=env,
    )


def test_production_settings_load_with_the_required_variables():
    assert _python("-c", "import config.settings.production", env=REQUIRED_ENV).returncode == 0


@pytest.mark.parametrize("name", sorted(REQUIRED_ENV))
def test_production_settings_refuse_a_missing_variable(name):
    env = {k: v for k, v in REQUIRED_ENV.items() if k != name}

    result = _python("-c", "import config.settings.production", env=env)

    assert result.returncode != 0
    assert f"missing required environment variable(s): {name} " in result.stderr


def test_production_settings_refuse_an_empty_secret_key():
    result = _python(
        "-c", "import config.settings.production", env={**REQUIRED_ENV, "DJANGO_SECRET_KEY": " "}
    )

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_manage_py_names_a_missing_variable_in_one_line():
    env = {k: v for k, v in REQUIRED_ENV.items() if k != "DJANGO_SECRET_KEY"}

    result = _python("manage.py", "migrate", "--check", env=env)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "configuration error: missing required environment variable(s): DJANGO_SECRET_KEY "
        "(production settings take them from the environment and have no defaults)"
    ]


def test_check_deploy_is_clean_with_only_the_required_variables():
    result = _check_deploy(REQUIRED_ENV)

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "check_id"),
    [
        # "0" must read as false: bool("0") is True, the bug env.bool avoids.
        ("DJANGO_SECURE_SSL_REDIRECT", "0", "security.W008"),
        ("DJANGO_SECURE_SSL_REDIRECT", "false", "security.W008"),
        ("DJANGO_SECURE_HSTS_SECONDS", "0", "security.W004"),
        ("DJANGO_SECURE_HSTS_PRELOAD", "off", "security.W021"),
        ("DJANGO_CSRF_COOKIE_SECURE", "false", "security.W016"),
        ("DJANGO_DEBUG", "true", "security.W018"),
    ],
)
def test_check_deploy_reports_a_security_setting_turned_off(variable, value, check_id):
    result = _check_deploy({**REQUIRED_ENV, variable: value})

    assert result.returncode != 0
    assert check_id in result.stderr


def test_test_settings_refuse_to_run_without_a_database_url(tmp_path):
    # A copy of the settings package with no .cache/postgres-url beside it, and no DATABASE_URL.
    shutil.copytree(APP_DIR / "config", tmp_path / "django_app" / "config")

    result = _python("-c", "import config.settings.test", env={}, cwd=tmp_path / "django_app")

    assert result.returncode != 0
    assert "DATABASE_URL is not set" in result.stderr
