#!/usr/bin/env python3
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    # Production unless told otherwise: a forgotten setting fails closed, never into a debug mode.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # The rollout's one-off `migrate` container: one readable line, as config/wsgi.py gives gunicorn.
        sys.exit(f"configuration error: {exc}")


if __name__ == "__main__":
    main()
