"""URLs. /healthz/ and /readyz/ are answered by releases.middleware.HealthProbeMiddleware."""

from django.urls import path

from releases import views

urlpatterns = [
    path("", views.index, name="index"),
    path("version.json", views.version, name="version"),
]
