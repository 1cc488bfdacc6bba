"""Production settings: required values have no defaults, security settings are on unless turned off."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import database_options, env

REQUIRED = ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL")

# An empty value is as wrong as a missing one (an empty ALLOWED_HOSTS would answer 400 to everything),
# and naming every missing variable at once saves a redeploy per variable.
_missing = [name for name in REQUIRED if not env.str(name, default="").strip()]
if _missing:
    raise ImproperlyConfigured(
        f"missing required environment variable(s): {', '.join(_missing)} "
        "(production settings take them from the environment and have no defaults)"
    )

SECRET_KEY = env.str("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")

DATABASES = {"default": database_options(env.db("DATABASE_URL"))}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", default=60)
# A persistent connection that died while idle is replaced before a request uses it.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# Whoever ends TLS says so in X-Forwarded-Proto: the load balancer, which nginx believes alone
# (edge_proxy_trusted_proxies), or nginx itself where it ends TLS. nginx overwrites a client's value.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# On by default so that `check --deploy` is clean; no environment turns them off, the local ones
# included (tests/test_environment_parity.py).
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=True)
