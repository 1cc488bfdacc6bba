"""Settings shared by every environment; each value comes from the environment or is a constant."""

import socket
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parents[2]

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=[])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.staticfiles",
    "releases",
]

MIDDLEWARE = [
    # First, so that probes are answered before anything checks the Host header or the scheme.
    "releases.middleware.HealthProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": []},
    },
]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# The release this process serves. The image sets these from its build arguments; the deploy
# sets APP_HOST_NAME (the EC2 host, since a container's own hostname is its id) and APP_IMAGE.
APP_RELEASE = {
    "version": env.str("APP_VERSION", default="dev"),
    "git_commit": env.str("APP_GIT_COMMIT", default="unknown"),
    "build_id": env.str("APP_BUILD_ID", default="local"),
    "build_time": env.str("APP_BUILD_TIME", default=""),
    "image": env.str("APP_IMAGE", default=""),
}
APP_HOST_NAME = env.str("APP_HOST_NAME", default="") or socket.gethostname()


def database_options(config: dict) -> dict:
    """A database config with a connect timeout, so a dead database fails a probe instead of hanging it."""
    options = {
        "connect_timeout": env.int("DJANGO_DB_CONNECT_TIMEOUT", default=5),
        **config.get("OPTIONS", {}),
    }
    return {**config, "OPTIONS": options}


# One JSON object per line on stdout, for the container log driver. The gunicorn logs use the
# same field names (gunicorn.conf.py).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
        },
    },
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "json"},
    },
    "root": {"handlers": ["stdout"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
    "loggers": {
        # Without handlers of its own, "django" propagates to root: no plain-text console or mail_admins.
        "django": {"handlers": [], "level": "INFO"},
    },
}
