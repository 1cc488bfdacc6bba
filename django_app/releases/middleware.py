from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from releases import views

PROBES = {"/healthz": views.healthz, "/readyz": views.readyz}


class HealthProbeMiddleware:
    """Answers the health probes before any other middleware sees the request.

    Load balancers, Docker and the rollout probe with an IP address, `localhost` or a container
    name as Host, over plain HTTP. ALLOWED_HOSTS would answer those with 400, SECURE_SSL_REDIRECT
    with 301, and a probe that cannot pass takes a healthy release out of service.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # path_info never reads the Host header (request.get_host() is what validates it).
        probe = PROBES.get(request.path_info.rstrip("/"))
        if probe is not None:
            return probe(request)
        return self.get_response(request)
