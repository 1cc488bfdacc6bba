"""Test settings: the project's PostgreSQL cluster, never SQLite (the app runs on PostgreSQL)."""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import database_options, env

# The local platform's setup writes the cluster's URL here (a git-ignored folder at the repository root).
POSTGRES_URL_FILE = Path(__file__).resolve().parents[3] / ".cache" / "postgres-url"


def _database_url() -> str:
    url = env.str("DATABASE_URL", default="")
    if not url and POSTGRES_URL_FILE.is_file():
        url = POSTGRES_URL_FILE.read_text().strip()
    if not url:
        raise ImproperlyConfigured(
            f"DATABASE_URL is not set and {POSTGRES_URL_FILE} does not exist: the tests need PostgreSQL "
            "(set DATABASE_URL, or let the project's setup start its cluster and write that file)"
        )
    return url


SECRET_KEY = "tests-only-key-never-used-outside-the-test-suite"  # noqa: S105 -- signs nothing real
ALLOWED_HOSTS = ["app.example.test"]
DATABASES = {"default": database_options(env.db_url_config(_database_url()))}

# The manifest and STATIC_ROOT exist only after collectstatic (the image build): tests serve static
# files from the apps' folders, as runserver would.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
