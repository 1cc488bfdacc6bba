"""Base images that cannot be pulled here, built from Debian's archive.

No public registry answers on these machines, so each Debian suite is bootstrapped with
debootstrap into a root filesystem image, and the images the project needs are built from
it with ordinary Dockerfiles under images/. Each image carries a label with the hash of its
recipe; an image whose label matches is up to date and is not built again.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deploykit.system import DOCKER, ROOT, SetupError, run, say

RECIPE_LABEL = "org.deploykit.recipe"
DEBIAN_MIRROR = os.environ.get("DEPLOYKIT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITES = {"bookworm": "debian12", "trixie": "debian13"}
# The python3 minor version each suite ships: Debian's archive fixes it for the suite's lifetime.
DEBIAN_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}
# The app image's local base: the Debian release and Python minor of the production base, which is
# the default BASE_IMAGE in django_app/Dockerfile (tests/test_base_image.py holds the two together).
PYTHON_BASE_SUITE = "trixie"


@dataclass(frozen=True)
class Image:
    tag: str
    dockerfile_dir: Path
    suite: str


PYTHON_BASE = Image(
    f"deploykit/python:{DEBIAN_PYTHON[PYTHON_BASE_SUITE]}-{PYTHON_BASE_SUITE}",
    ROOT / "images" / "python-base",
    PYTHON_BASE_SUITE,
)
HOSTS = {
    distro: Image(f"deploykit/host:{distro}", ROOT / "images" / "host", suite)
    for suite, distro in SUITES.items()
}
LOAD_BALANCER = Image("deploykit/lb:bookworm", ROOT / "images" / "lb", "bookworm")
ALL_IMAGES = (PYTHON_BASE, *HOSTS.values(), LOAD_BALANCER)


def rootfs_tag(suite: str) -> str:
    return f"deploykit/debian-rootfs:{suite}"


def _label(tag: str) -> str | None:
    result = run(
        [DOCKER, "image", "inspect", "--format", f'{{{{index .Config.Labels "{RECIPE_LABEL}"}}}}', tag],
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def _recipe_hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def ensure_rootfs(suite: str) -> str:
    """Bootstrap a minimal Debian root filesystem and import it as an image."""
    tag = rootfs_tag(suite)
    recipe = _recipe_hash("minbase", suite, DEBIAN_MIRROR)
    if _label(tag) == recipe:
        return tag
    say(f"bootstrapping Debian {suite} (debootstrap, about a minute)")
    with tempfile.TemporaryDirectory(prefix=f"deploykit-{suite}-") as target:
        run(["debootstrap", "--variant=minbase", suite, target, DEBIAN_MIRROR])
        # Package lists and caches only make the image larger; each Dockerfile runs apt-get update.
        for sub in ("var/lib/apt/lists", "var/cache/apt"):
            run(["find", f"{target}/{sub}", "-type", "f", "-delete"])
        tar = subprocess.Popen(["tar", "-C", target, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [DOCKER, "import", "--change", f"LABEL {RECIPE_LABEL}={recipe}", "-", tag],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        tar.wait()
        if tar.returncode != 0 or imported.returncode != 0:
            raise SetupError(f"importing the {suite} root filesystem failed: {imported.stderr.strip()}")
    return tag


def ensure_image(image: Image) -> None:
    """Build one derived image unless an image of the same recipe is already there."""
    dockerfile = (image.dockerfile_dir / "Dockerfile").read_text()
    extra = sorted(p.name + p.read_text() for p in image.dockerfile_dir.iterdir() if p.name != "Dockerfile")
    base = ensure_rootfs(image.suite)
    recipe = _recipe_hash(dockerfile, *extra, base, _label(base) or "")
    if _label(image.tag) == recipe:
        say(f"{image.tag} is up to date")
        return
    say(f"building {image.tag}")
    run(
        [
            DOCKER,
            "build",
            "--build-arg",
            f"ROOTFS={base}",
            "--label",
            f"{RECIPE_LABEL}={recipe}",
            "--tag",
            image.tag,
            str(image.dockerfile_dir),
        ],
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
    )


def ensure_images() -> None:
    for image in ALL_IMAGES:
        ensure_image(image)
