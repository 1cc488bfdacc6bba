"""ECR's image actions answered from the registry the images are pushed to, for the stand-in's moto.

On AWS, ECR's API and its registry are one store: what `docker push` sends is what ListImages,
DescribeImages and BatchGetImage see, and a tag that PutImage adds or BatchDeleteImage removes is
one `docker pull` then finds or misses. moto keeps an image store of its own that the registry
stand-in (deploykit/registry.py, CNCF distribution 2.8) never reaches, so the marks the deploy puts
on images it holds (ECR tags) would live where no registry looks. This module holds those five
actions over a distribution registry: its HTTP API v2 for reads, manifest PUTs and deletes by
digest, its storage on disk for the two things that API does not give (when a tag was pushed;
removing one tag). Repositories stay moto's (CreateRepository), as do its exceptions;
`python -m deploykit.moto_server --registry ...` installs these answers into moto's ECRResponse.
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import hashlib
import json
import re
import shutil
import ssl
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from functools import partialmethod
from pathlib import Path
from typing import Any

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from moto.ecr.exceptions import ImageAlreadyExistsException, ImageNotFoundException, InvalidParameterException
from moto.ecr.models import Repository
from moto.ecr.responses import ECRResponse

from deploykit import registry as local_registry

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_NOT_FOUND = ("ImageNotFound", "Requested image not found")


# ECR's errors that moto has no class for (it answers ImageAlreadyExistsException for a moved tag
# too). Classes of this module, not moto's base class itself: moto looks an error's HTTP status up in
# the service model its class's module names, and takes the request's (ECR's) for a module not moto's.
class ImageTagAlreadyExistsException(ServiceException):
    code = "ImageTagAlreadyExistsException"


class ImageDigestDoesNotMatchException(ServiceException):
    code = "ImageDigestDoesNotMatchException"


class LayersNotFoundException(ServiceException):
    code = "LayersNotFoundException"


class ServerException(ServiceException):
    code = "ServerException"


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    body: bytes = b""  # empty when only its headers were asked for (HEAD)


class Registry:
    """A distribution registry: its v2 API at `url` (TLS with `ca`), its storage root at `data`."""

    def __init__(self, url: str, data: Path, ca: Path) -> None:
        self.url, self.data = url.rstrip("/"), data
        https = urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(ca)))
        # The registry is on loopback: no proxy of the environment may stand between.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), https)
        login = f"{local_registry.USER}:{local_registry.PASSWORD}".encode()
        self._auth = "Basic " + base64.b64encode(login).decode()

    def call(
        self, method: str, path: str, body: bytes | None = None, **headers: str
    ) -> tuple[int, Message, bytes]:
        """One request to the v2 API (`Content_Type=` sends Content-Type): status, headers, body."""
        sent = {"Authorization": self._auth, **{k.replace("_", "-"): v for k, v in headers.items()}}
        request = urllib.request.Request(f"{self.url}/v2/{path}", data=body, method=method, headers=sent)
        try:
            with self._opener.open(request, timeout=30) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()
        except (urllib.error.URLError, OSError) as error:
            raise ServerException(f"the registry at {self.url} does not answer: {error}") from error

    def manifest(self, name: str, reference: str, *, head: bool = False) -> Manifest | None:
        """The manifest `reference` (tag or digest) names in `name`, or None when there is none."""
        method = "HEAD" if head else "GET"
        status, headers, body = self.call(
            method, f"{name}/manifests/{reference}", Accept=", ".join(MANIFEST_TYPES)
        )
        if status == 404:
            return None
        if status != 200:
            raise ServerException(f"the registry answered {status} for {name}:{reference}")
        digest = headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
        return Manifest(digest, headers.get("Content-Type", ""), body)

    def tags(self, name: str) -> dict[str, str]:
        """Every tag of `name` with the digest it names."""
        status, _, body = self.call("GET", f"{name}/tags/list")
        if status not in (200, 404):  # 404: nothing was ever pushed to `name`
            raise ServerException(f"the registry answered {status} for the tags of {name}")
        tags = (json.loads(body).get("tags") or []) if status == 200 else []
        with ThreadPoolExecutor(max_workers=8) as pool:
            found = pool.map(lambda tag: self.manifest(name, tag, head=True), tags)
            return {tag: manifest.digest for tag, manifest in zip(tags, found, strict=True) if manifest}

    def _manifests(self, name: str) -> Path:
        return self.data / "docker/registry/v2/repositories" / name / "_manifests"

    def pushed_at(self, name: str, digest: str, tags: list[str]) -> datetime.datetime:
        """When the image was pushed: its oldest tag's link was written then (distribution keeps no
        push time; a tag added later has a newer link); an untagged one's revision link stands in."""
        links = [self._manifests(name) / "tags" / tag / "current/link" for tag in tags]
        links = links or [self._manifests(name) / "revisions" / digest.replace(":", "/") / "link"]
        times = [link.stat().st_mtime for link in links if link.exists()]
        return datetime.datetime.fromtimestamp(min(times, default=0), datetime.UTC)

    def untag(self, name: str, tag: str) -> None:
        """Remove `tag` alone. Distribution 2.8's API deletes only a manifest by digest, which drops
        every tag of it; removing the tag's directory is what distribution 3's untag does."""
        shutil.rmtree(self._manifests(name) / "tags" / tag, ignore_errors=True)


def _repository(response: ECRResponse) -> Repository:
    """The repository the request names; moto's RepositoryNotFoundException when it has none."""
    backend, param = response.ecr_backend, response._get_param
    return backend._get_repository(param("repositoryName"), param("registryId"))


def _immutable(repository: Repository, tag: str) -> bool:
    """Whether `tag` may not move: the repository's setting, reversed for a tag its exclusions match."""
    filters = repository.image_tag_mutability_exclusion_filters or []
    return repository.is_tag_immutable() != any(fnmatch.fnmatchcase(tag, f["filter"]) for f in filters)


def _image(repository: Repository, **fields: Any) -> dict[str, Any]:
    """An image as ECR's answers show one: the registry and repository it is in, and `fields`."""
    return {"registryId": repository.registry_id, "repositoryName": repository.name, **fields}


def _image_id(digest: str, tag: str | None) -> dict[str, str]:
    return {"imageDigest": digest, **({"imageTag": tag} if tag else {})}


def _failure(image_id: dict[str, str], code: str, reason: str) -> dict[str, Any]:
    return {"imageId": image_id, "failureCode": code, "failureReason": reason}


def _malformed(image_id: dict[str, str]) -> dict[str, Any] | None:
    """The failure ECR answers for an image ID that cannot name an image, or None."""
    tag, digest = image_id.get("imageTag"), image_id.get("imageDigest")
    if not (tag or digest):
        return _failure(image_id, "MissingDigestAndTag", "both tag and digest cannot be null")
    if digest and not _DIGEST.match(digest):
        return _failure(image_id, "InvalidImageDigest", f"Invalid image digest '{digest}'")
    if tag and not _TAG.match(tag):
        return _failure(image_id, "InvalidImageTag", f"Invalid image tag '{tag}'")
    return None


# Untagged images are never listed (ListImages, DescribeImages without imageIds): distribution's API
# has no call that lists manifests, and what the deploy asks about are tags. Neither action
# paginates: every answer holds all there is, with no nextToken.
def list_images(self: ECRResponse, store: Registry) -> ActionResult:
    """ListImages: every tag with the digest it names."""
    repository = _repository(self)
    if (self._get_param("filter") or {}).get("tagStatus") == "UNTAGGED":
        return ActionResult({"imageIds": []})
    tags = sorted(store.tags(repository.name).items())
    return ActionResult({"imageIds": [_image_id(digest, tag) for tag, digest in tags]})


def describe_images(self: ECRResponse, store: Registry) -> ActionResult:
    """DescribeImages: one detail per digest, with all its tags."""
    repository, ids = _repository(self), self._get_param("imageIds") or []
    images: dict[str, list[str]] = {}
    for tag, digest in sorted(store.tags(repository.name).items()):
        images.setdefault(digest, []).append(tag)
    untagged = (self._get_param("filter") or {}).get("tagStatus") == "UNTAGGED"
    wanted = [] if ids or untagged else list(images)
    for image_id in ids:
        if malformed := _malformed(image_id):
            raise InvalidParameterException(malformed["failureReason"])
        tag, digest = image_id.get("imageTag"), image_id.get("imageDigest")
        found = store.manifest(repository.name, tag or digest, head=True)
        if found is None or (digest and found.digest != digest):
            shown = f"{{imageDigest:'{digest or 'null'}', imageTag:'{tag or 'null'}'}}"
            raise ImageNotFoundException(shown, repository.name, repository.registry_id)
        wanted.append(found.digest)
    details = []
    for digest in dict.fromkeys(wanted):
        manifest = store.manifest(repository.name, digest)
        if manifest is None:  # deleted since the tags were read
            continue
        parsed, tags = json.loads(manifest.body), images.get(digest, [])
        parts = [*parsed.get("layers", []), *([parsed["config"]] if "config" in parsed else [])]
        pushed = store.pushed_at(repository.name, digest, tags)
        detail = _image(repository, imageDigest=digest, imageManifestMediaType=manifest.media_type,
                        imagePushedAt=pushed)  # fmt: skip
        # ECR leaves imageTags out for an untagged image; an index has no layers to add up.
        if tags:
            detail["imageTags"] = tags
        if parts:
            detail["imageSizeInBytes"] = sum(part.get("size", 0) for part in parts)
        if "config" in parsed:
            detail["artifactMediaType"] = parsed["config"].get("mediaType")
        details.append(detail)
    return ActionResult({"imageDetails": details})


def batch_get_image(self: ECRResponse, store: Registry) -> ActionResult:
    """BatchGetImage: each manifest's exact bytes, when its media type is one the caller accepts."""
    repository = _repository(self)
    accepted = self._get_param("acceptedMediaTypes") or MANIFEST_TYPES
    images, failures = [], []
    for image_id in self._get_param("imageIds") or []:
        tag, digest = image_id.get("imageTag"), image_id.get("imageDigest")
        malformed = _malformed(image_id)
        manifest = None if malformed else store.manifest(repository.name, tag or digest)
        if malformed:
            failures.append(malformed)
        elif manifest is None or manifest.media_type not in accepted:
            # Never converted: ECR turns schema 2 into schema 1 for a client that accepts only that.
            failures.append(_failure(image_id, *_NOT_FOUND))
        elif digest and manifest.digest != digest:
            failures.append(_failure(image_id, "ImageTagDoesNotMatchDigest", "tag and digest do not match"))
        else:
            images.append(_image(repository, imageId=_image_id(manifest.digest, tag),
                                 imageManifest=manifest.body.decode("utf-8"),
                                 imageManifestMediaType=manifest.media_type))  # fmt: skip
    return ActionResult({"images": images, "failures": failures})


def put_image(self: ECRResponse, store: Registry) -> ActionResult:
    """PutImage: the manifest PUT into the registry under its tag (or its digest alone)."""
    repository = _repository(self)
    text, tag = self._get_param("imageManifest"), self._get_param("imageTag")
    digest = "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    try:
        media_type = self._get_param("imageManifestMediaType") or json.loads(text).get("mediaType")
    except (ValueError, AttributeError) as error:
        raise InvalidParameterException(f"Invalid parameter at 'ImageManifest': {error}") from error
    if not media_type:
        raise InvalidParameterException("image manifest mediatype not provided in manifest or parameter")
    if self._get_param("imageDigest") not in (None, digest):
        raise ImageDigestDoesNotMatchException(f"the manifest's digest is {digest}")
    current = store.manifest(repository.name, tag, head=True) if tag else None
    if current is not None and current.digest == digest:
        raise ImageAlreadyExistsException(repository.name, repository.registry_id, digest, tag)
    if current is not None and _immutable(repository, tag):
        said = f"The image tag '{tag}' already exists in the '{repository.name}' repository and cannot be"
        raise ImageTagAlreadyExistsException(f"{said} overwritten because it is immutable.")
    path = f"{repository.name}/manifests/{tag or digest}"
    status, headers, answer = store.call("PUT", path, text.encode("utf-8"), Content_Type=media_type)
    if status == 400 and b"BLOB_UNKNOWN" in answer:
        raise LayersNotFoundException(f"layers or config not in the repository: {answer!r}")
    if status == 400:
        raise InvalidParameterException(f"the registry refused the manifest: {answer!r}")
    if status != 201:
        raise ServerException(f"the registry answered {status} to the manifest: {answer!r}")
    image_id = _image_id(headers.get("Docker-Content-Digest") or digest, tag)
    image = _image(repository, imageId=image_id, imageManifest=text, imageManifestMediaType=media_type)
    return ActionResult({"image": image})


def batch_delete_image(self: ECRResponse, store: Registry) -> ActionResult:
    """BatchDeleteImage: by tag that tag alone; by digest the image with every tag."""
    repository = _repository(self)
    tags = store.tags(repository.name)
    deleted, failures = [], []
    for image_id in self._get_param("imageIds") or []:
        tag, digest = image_id.get("imageTag"), image_id.get("imageDigest")
        if malformed := _malformed(image_id):
            failures.append(malformed)
        elif tag and (tag not in tags or digest not in (None, tags[tag])):
            failures.append(_failure(image_id, *_NOT_FOUND))
        elif tag:
            store.untag(repository.name, tag)
            named = tags.pop(tag)
            deleted.append(_image_id(named, tag))
            if named not in tags.values():  # as on ECR, an image whose last tag goes is deleted
                store.call("DELETE", f"{repository.name}/manifests/{named}")
        elif store.call("DELETE", f"{repository.name}/manifests/{digest}")[0] == 202:
            gone = [t for t, d in tags.items() if d == digest]
            deleted += [_image_id(digest, t) for t in gone] or [_image_id(digest, None)]
            tags = {t: d for t, d in tags.items() if d != digest}
        else:
            failures.append(_failure(image_id, *_NOT_FOUND))
    return ActionResult({"imageIds": deleted, "failures": failures})


ACTIONS = (list_images, describe_images, batch_get_image, put_image, batch_delete_image)


def install(store: Registry) -> None:
    """Answer ECR's image actions in this process's moto from `store` (each action replaces the
    ECRResponse method of its name)."""
    for action in ACTIONS:
        setattr(ECRResponse, action.__name__, partialmethod(action, store))
