"""The release this process serves, as the image and the deploy described it in the environment."""

from dataclasses import asdict, dataclass

from django.conf import settings


@dataclass(frozen=True)
class Release:
    version: str
    git_commit: str
    build_id: str
    build_time: str
    image: str
    host: str

    @property
    def short_commit(self) -> str:
        return self.git_commit[:12]

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def current_release() -> Release:
    return Release(host=settings.APP_HOST_NAME, **settings.APP_RELEASE)
