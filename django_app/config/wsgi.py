"""WSGI entry point; gunicorn imports it once in its master process (preload_app)."""

import os

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

try:
    application = get_wsgi_application()
except ImproperlyConfigured as exc:
    # One line an operator reads in `docker logs`, and a prompt non-zero exit, instead of a
    # traceback that ends in the message. SystemExit is not caught by gunicorn's preload.
    raise SystemExit(f"configuration error: {exc}") from None
