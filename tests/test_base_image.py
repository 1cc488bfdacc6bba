"""The app image's base on AWS and here: the same Debian release and the same Python minor.

Production builds on the official image that django_app/Dockerfile names as BASE_IMAGE's default;
this machine cannot pull it and builds deploykit/images.py's PYTHON_BASE from Debian's archive
instead. A bump of one without the other fails here.
"""

from __future__ import annotations

import re

import pytest

from deploykit import app_image, images
from deploykit.system import ROOT

# The official image's tag: python:<minor>-slim-<Debian codename>, with an optional digest pin.
OFFICIAL_TAG = re.compile(
    r"python:(?P<minor>3\.\d+)(?:\.\d+)?-slim-(?P<suite>[a-z]+)(?:@sha256:[0-9a-f]{64})?"
)
DOCKERFILES_WITH_THE_PRODUCTION_BASE = ["django_app/Dockerfile", "bench/naive.Dockerfile"]


def _arg_default(dockerfile: str, name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", (ROOT / dockerfile).read_text(), re.MULTILINE)
    assert match, f"{dockerfile} has no default for ARG {name}"
    return match.group(1)


def _official(dockerfile: str) -> re.Match[str]:
    base = _arg_default(dockerfile, "BASE_IMAGE")
    match = OFFICIAL_TAG.fullmatch(base)
    assert match, f"{dockerfile}: BASE_IMAGE={base} is not an official python:<minor>-slim-<codename> tag"
    return match


@pytest.mark.parametrize("dockerfile", DOCKERFILES_WITH_THE_PRODUCTION_BASE)
def test_production_base_is_the_local_bases_debian_release(dockerfile):
    assert _official(dockerfile)["suite"] == images.PYTHON_BASE.suite


@pytest.mark.parametrize("dockerfile", DOCKERFILES_WITH_THE_PRODUCTION_BASE)
def test_production_base_is_the_local_bases_python_minor(dockerfile):
    assert _official(dockerfile)["minor"] == images.DEBIAN_PYTHON[images.PYTHON_BASE.suite]


def test_local_base_tag_names_its_python_minor_and_release():
    suite = images.PYTHON_BASE.suite

    assert images.PYTHON_BASE.tag == f"deploykit/python:{images.DEBIAN_PYTHON[suite]}-{suite}"


def test_local_base_dockerfile_defaults_to_the_same_release():
    # images.py passes ROOTFS; the default keeps a hand-run `docker build images/python-base` honest.
    default = _arg_default("images/python-base/Dockerfile", "ROOTFS")

    assert default == images.rootfs_tag(images.PYTHON_BASE.suite)


def test_every_local_app_build_uses_the_local_base():
    assert images.PYTHON_BASE.tag == app_image.LOCAL_BASE_IMAGE
    assert images.PYTHON_BASE in images.ALL_IMAGES


def test_buildspec_leaves_the_base_to_the_dockerfile():
    # One definition: a default in buildspec.yml as well would drift from the Dockerfile's.
    assert not OFFICIAL_TAG.search((ROOT / "buildspec.yml").read_text())
