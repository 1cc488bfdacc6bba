from django.db import models
from django.utils import timezone


class Deploy(models.Model):
    """One release switched into service on one host: the audit line every rollout leaves."""

    version = models.CharField(max_length=64)
    git_commit = models.CharField(max_length=64, blank=True)
    build_id = models.CharField(max_length=128, blank=True)
    built_at = models.DateTimeField(null=True, blank=True)
    image = models.CharField(max_length=255, blank=True)
    host = models.CharField(max_length=255)
    actor = models.CharField(max_length=128, blank=True)
    deployed_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ("-deployed_at", "-id")
        get_latest_by = "deployed_at"

    def __str__(self) -> str:
        return f"{self.version} on {self.host} at {self.deployed_at:%Y-%m-%d %H:%M:%S}"

    @property
    def short_commit(self) -> str:
        return self.git_commit[:12]
