import logging
import re

from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from releases.models import Deploy
from releases.release import current_release

logger = logging.getLogger(__name__)

HISTORY_LENGTH = 20


@require_safe
@never_cache
def index(request: HttpRequest) -> HttpResponse:
    """The operator's page: the release that answered, the host it runs on, and the recent deploys."""
    try:
        history = list(Deploy.objects.all()[:HISTORY_LENGTH])
    except DatabaseError as exc:
        # The release part is what an operator needs most while the database is down.
        logger.warning("deploy history unavailable: %s", _describe(exc))
        history = None
    return render(request, "releases/index.html", {"release": current_release(), "history": history})


@require_safe
@never_cache
def version(request: HttpRequest) -> JsonResponse:
    return JsonResponse(current_release().as_dict())


@require_safe
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers, and which release it is. Touches nothing else, so a database
    outage never restarts it.

    The release is in the answer so that a probe that reaches a host's nginx with any Host header
    and over plain HTTP (the deploy's plan, a check straight to one host) can still tell which
    release serves there; /version.json says the same but only to allowed hosts over HTTPS.
    """
    return JsonResponse({"status": "ok", **current_release().as_dict()})


@require_safe
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database answers and every migration this code expects has been applied."""
    try:
        unapplied = _unapplied_migrations()
    except DatabaseError as exc:
        return _unavailable(f"database unreachable: {_describe(exc)}")
    if unapplied:
        return _unavailable(f"unapplied migrations: {', '.join(unapplied)}", unapplied_migrations=unapplied)
    return JsonResponse({"status": "ok"})


def _unapplied_migrations() -> list[str]:
    connection.ensure_connection()
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, _backwards in plan]


def _describe(exc: DatabaseError) -> str:
    """The error's class and first words, without the password should a driver ever echo it."""
    message = " ".join(str(exc).split())
    password = connection.settings_dict.get("PASSWORD")
    if password:
        # Whole-word matches only: a short password must not blank out letters of ordinary words.
        message = re.sub(rf"(?<!\w){re.escape(password)}(?!\w)", "***", message)
    return f"{type(exc).__name__}: {message}"[:300]


def _unavailable(reason: str, **details: object) -> JsonResponse:
    return JsonResponse({"status": "unavailable", "reason": reason, **details}, status=503)
