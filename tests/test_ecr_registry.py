"""ECR's image API answered from the real registry, as the stand-in's moto does (deploykit/ecr_registry.py).

The registry is the platform's (127.0.0.1:5443, distribution 2.8); moto is one of this module's own
on a free port, started with the registry options as the stand-in starts its own. The run pushes a
tiny image (a config and one layer, schema 2) by the registry's HTTP API into a repository of its
own, the way `docker push` does, and removes that repository from the registry's storage at the
end (its two blobs stay, as after any `docker push`, until the registry's garbage collection).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import shutil
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from typing import Any

import boto3
import pytest

from deploykit import registry

KEY = "testing"  # moto takes any key; this one is not a secret
SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
TAG = "3f2c1e9d8b7a"
_HTTPS = urllib.request.build_opener(
    urllib.request.ProxyHandler({}),
    urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(registry.CA_CERT))),
)
_AUTH = "Basic " + base64.b64encode(f"{registry.USER}:{registry.PASSWORD}".encode()).decode()


def v2(method: str, url: str, body: bytes | None = None, **headers: str) -> tuple[int, Message, bytes]:
    """One call to the registry's HTTP API (`url` relative to /v2/, or absolute): status, headers, body."""
    url = urllib.parse.urljoin(f"{registry.URL}/v2/", url)
    sent = {"Authorization": _AUTH, **{name.replace("_", "-"): value for name, value in headers.items()}}
    try:
        with _HTTPS.open(
            urllib.request.Request(url, data=body, method=method, headers=sent), timeout=30
        ) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload(name: str, blob: bytes) -> dict[str, Any]:
    """A monolithic blob upload; the descriptor a manifest names the blob by."""
    status, headers, _ = v2("POST", f"{name}/blobs/uploads/")
    assert status == 202, status
    location = headers["Location"]
    separator = "&" if "?" in location else "?"
    status, _, said = v2("PUT", f"{location}{separator}digest={digest_of(blob)}", blob,
                         Content_Type="application/octet-stream")  # fmt: skip
    assert status == 201, said
    return {"size": len(blob), "digest": digest_of(blob)}


def put_manifest(name: str, reference: str, manifest: bytes) -> str:
    """The manifest PUT under `reference`, as `docker push` ends; its digest."""
    status, headers, said = v2("PUT", f"{name}/manifests/{reference}", manifest, Content_Type=SCHEMA2)
    assert status == 201, said
    return headers["Docker-Content-Digest"]


def manifest_of(name: str, reference: str) -> tuple[int, str, bytes]:
    """GET of the manifest `reference` names, as `docker pull` starts: status, digest, bytes."""
    status, headers, body = v2("GET", f"{name}/manifests/{reference}", Accept=SCHEMA2)
    return status, headers.get("Docker-Content-Digest", ""), body


@dataclass(frozen=True)
class Pushed:
    repository: str
    manifest: bytes  # as pushed under TAG
    digest: str
    size: int  # the config's and the layer's
    content: dict[str, object]

    def written(self, indent: int | None) -> bytes:
        """The same image written otherwise: another manifest, another digest, the same blobs."""
        return json.dumps(self.content, indent=indent).encode()


@pytest.fixture(scope="module")
def pushed() -> Iterator[Pushed]:
    if not registry.answers():
        pytest.fail(f"the registry does not answer on {registry.URL}; `make platform` starts it")
    top = f"ecr-test-{secrets.token_hex(4)}"
    name = f"{top}/app"
    config = upload(name, json.dumps({"architecture": "amd64", "os": "linux", "test": top}).encode())
    layer = upload(name, f"a layer of {top}".encode())
    content = {
        "schemaVersion": 2,
        "mediaType": SCHEMA2,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", **layer}],
    }
    # Indented as no client would write it: the bytes themselves must come back, not a re-encoding.
    manifest = json.dumps(content, indent=3).encode()
    digest = put_manifest(name, TAG, manifest)
    size = config["size"] + layer["size"]
    yield Pushed(name, manifest, digest, size, content)
    shutil.rmtree(registry.DATA / "docker/registry/v2/repositories" / top, ignore_errors=True)


@pytest.fixture(scope="module")
def ecr(moto_server, request: pytest.FixtureRequest, pushed: Pushed):
    """ECR's API on a moto of this module's own over the registry, with the repository created."""
    endpoint = moto_server(request, registry=True)
    client = boto3.client(
        "ecr",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=KEY,
    )
    client.create_repository(repositoryName=pushed.repository, imageTagMutability="IMMUTABLE")
    return client


def test_list_images_shows_the_pushed_tag_with_its_digest(ecr, pushed):
    listed = ecr.list_images(repositoryName=pushed.repository, filter={"tagStatus": "TAGGED"})["imageIds"]
    assert {"imageDigest": pushed.digest, "imageTag": TAG} in listed


def test_describe_images_shows_the_pushed_image_with_its_size_and_push_time(ecr, pushed):
    details = ecr.describe_images(repositoryName=pushed.repository, imageIds=[{"imageTag": TAG}])[
        "imageDetails"
    ]
    assert len(details) == 1
    image = details[0]
    assert (image["imageDigest"], image["imageManifestMediaType"]) == (pushed.digest, SCHEMA2)
    assert TAG in image["imageTags"]
    assert image["imageSizeInBytes"] == pushed.size
    age = datetime.datetime.now(datetime.UTC) - image["imagePushedAt"]
    assert datetime.timedelta(seconds=-5) < age < datetime.timedelta(minutes=10)


def test_batch_get_image_returns_the_exact_manifest(ecr, pushed):
    answer = ecr.batch_get_image(
        repositoryName=pushed.repository, imageIds=[{"imageTag": TAG}], acceptedMediaTypes=[SCHEMA2]
    )
    assert answer["failures"] == []
    [image] = answer["images"]
    assert image["imageManifest"].encode() == pushed.manifest
    assert image["imageManifestMediaType"] == SCHEMA2
    assert image["imageId"] == {"imageDigest": pushed.digest, "imageTag": TAG}


def test_put_image_under_a_new_tag_is_pullable_by_that_tag(ecr, pushed):
    held = f"held-test-{TAG}"
    answer = ecr.put_image(
        repositoryName=pushed.repository,
        imageManifest=pushed.manifest.decode(),
        imageManifestMediaType=SCHEMA2,
        imageTag=held,
    )
    assert answer["image"]["imageId"] == {"imageDigest": pushed.digest, "imageTag": held}
    assert held in registry.tags(pushed.repository)
    assert manifest_of(pushed.repository, held) == (200, pushed.digest, pushed.manifest)


def test_put_image_of_a_tag_that_names_the_same_image_is_already_there(ecr, pushed):
    with pytest.raises(ecr.exceptions.ImageAlreadyExistsException):
        ecr.put_image(repositoryName=pushed.repository, imageManifest=pushed.manifest.decode(), imageTag=TAG)


def test_put_image_cannot_move_a_tag_of_an_immutable_repository(ecr, pushed):
    with pytest.raises(ecr.exceptions.ImageTagAlreadyExistsException):
        ecr.put_image(
            repositoryName=pushed.repository, imageManifest=pushed.written(None).decode(), imageTag=TAG
        )
    assert manifest_of(pushed.repository, TAG)[1] == pushed.digest


def test_batch_delete_image_by_tag_removes_that_tag_only(ecr, pushed):
    extra = f"extra-{secrets.token_hex(4)}"
    put_manifest(pushed.repository, extra, pushed.manifest)
    answer = ecr.batch_delete_image(repositoryName=pushed.repository, imageIds=[{"imageTag": extra}])
    assert answer["failures"] == []
    assert answer["imageIds"] == [{"imageDigest": pushed.digest, "imageTag": extra}]
    assert extra not in registry.tags(pushed.repository)
    assert manifest_of(pushed.repository, extra)[0] == 404
    assert manifest_of(pushed.repository, TAG) == (200, pushed.digest, pushed.manifest)


def test_batch_delete_image_by_digest_removes_the_image_with_its_tags(ecr, pushed):
    tags = [f"other-{secrets.token_hex(4)}", f"other-{secrets.token_hex(4)}"]
    digest = put_manifest(pushed.repository, tags[0], pushed.written(None))
    put_manifest(pushed.repository, tags[1], pushed.written(None))
    answer = ecr.batch_delete_image(repositoryName=pushed.repository, imageIds=[{"imageDigest": digest}])
    assert answer["failures"] == []
    assert sorted(image["imageTag"] for image in answer["imageIds"]) == sorted(tags)
    assert not set(tags) & set(registry.tags(pushed.repository))
    assert manifest_of(pushed.repository, digest)[0] == 404
    assert manifest_of(pushed.repository, TAG)[1] == pushed.digest


def test_batch_delete_image_of_an_image_s_last_tag_deletes_the_image(ecr, pushed):
    last = f"last-{secrets.token_hex(4)}"
    digest = put_manifest(pushed.repository, last, pushed.written(1))
    answer = ecr.batch_delete_image(repositoryName=pushed.repository, imageIds=[{"imageTag": last}])
    assert answer["imageIds"] == [{"imageDigest": digest, "imageTag": last}]
    assert manifest_of(pushed.repository, digest)[0] == 404


def test_batch_delete_image_of_an_unknown_tag_is_a_failure_image_not_found(ecr, pushed):
    answer = ecr.batch_delete_image(repositoryName=pushed.repository, imageIds=[{"imageTag": "not-there"}])
    assert answer["imageIds"] == []
    assert [(f["imageId"], f["failureCode"]) for f in answer["failures"]] == [
        ({"imageTag": "not-there"}, "ImageNotFound")
    ]


def test_a_repository_ecr_does_not_have_is_not_found_though_the_registry_has_it(ecr, pushed):
    orphan = pushed.repository.replace("/app", "/orphan")
    config = {"mediaType": "application/vnd.docker.container.image.v1+json", **upload(orphan, b"{}")}
    put_manifest(
        orphan, TAG, json.dumps({"schemaVersion": 2, "mediaType": SCHEMA2, "config": config}).encode()
    )
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.list_images(repositoryName=orphan)
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.batch_get_image(repositoryName=orphan, imageIds=[{"imageTag": TAG}])
