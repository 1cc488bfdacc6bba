from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from releases.models import Deploy
from releases.release import current_release


class Command(BaseCommand):
    help = "Record one deploy of the release this container runs in the deploy history."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--host", help="host the release went to (default: APP_HOST_NAME or this hostname)"
        )
        parser.add_argument("--actor", default="", help="who or what deployed it: a user, a build id")
        parser.add_argument("--image", help="image reference that was deployed (default: APP_IMAGE)")

    def handle(
        self, *args: object, host: str | None, actor: str, image: str | None, **options: object
    ) -> None:
        release = current_release()
        built_at = None
        if release.build_time:
            # parse_datetime returns None for text it cannot read and raises for impossible dates.
            try:
                built_at = parse_datetime(release.build_time)
            except ValueError:
                built_at = None
            if built_at is None:
                raise CommandError(f"APP_BUILD_TIME is not an RFC 3339 time: {release.build_time!r}")
        deploy = Deploy.objects.create(
            version=release.version,
            git_commit=release.git_commit,
            build_id=release.build_id,
            built_at=built_at,
            image=image or release.image,
            host=host or release.host,
            actor=actor,
        )
        self.stdout.write(
            f"recorded deploy {deploy.pk}: {deploy.version} ({deploy.short_commit}) on {deploy.host}"
            f" by {deploy.actor or 'unknown'} at {deploy.deployed_at.isoformat(timespec='seconds')}"
        )
