"""Scenario 11: the app page, opened in headless Chromium at the environment's public address,
shows the serving release.

The browser opens app_public_url as a user would (HTTPS through the load balancer, a *.localhost
name that Chromium resolves to loopback itself) and trusts exactly the load balancer's certificate
(its key's SPKI hash), not every certificate. Screenshots are kept as reports/e2e/front-door-N.png.
The browser may reach only loopback: even with background networking and component updates off,
Chromium 156 still asks Google for the time, for updates and for accounts. Every other request goes
to a proxy address on loopback where nothing listens, so none of them leaves the machine.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import socket
import ssl
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from deploykit import registry
from deploykit.system import REPORTS

pytestmark = pytest.mark.e2e

SCREENSHOTS = REPORTS / "e2e"
WINDOW = (1280, 900)
# Page loads through the front door: round robin spreads them over the hosts.
LOADS = 3


def _chromium(tmp_path: Path, front_door, *args: str) -> subprocess.CompletedProcess[str]:
    browser = shutil.which("chromium")
    assert browser, "chromium is not installed (Debian's `chromium` package)"
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            # Nothing but loopback (which Chromium never sends through a proxy): other requests go
            # to a closed port on loopback.
            "--proxy-server=http://127.0.0.1:9",
            f"--ignore-certificate-errors-spki-list={_spki(front_door)}",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _spki(front_door) -> str:
    """Base64 SHA-256 of the load balancer's public key, verified against the project's CA first."""
    context = ssl.create_default_context(cafile=str(registry.CA_CERT))
    with (
        socket.create_connection(("127.0.0.1", front_door.port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=front_door.host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    spki = (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def pages(fleet, front_door, tmp_path_factory):
    """Per load of the public address: the DOM Chromium rendered and its screenshot, with the
    release /version.json named just before."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    url = front_door.url
    found = {}
    for number in range(1, LOADS + 1):
        tmp_path = tmp_path_factory.mktemp(f"load-{number}")
        screenshot = SCREENSHOTS / f"front-door-{number}.png"
        screenshot.unlink(missing_ok=True)
        status, _headers, body = front_door.get("/version.json")
        assert status == 200, body[:300]
        shot = _chromium(tmp_path, front_door, f"--screenshot={screenshot}", url)
        dom = _chromium(tmp_path, front_door, "--dump-dom", url)
        found[f"load {number}"] = {
            "release": json.loads(body),
            "dom": dom.stdout,
            "screenshot": screenshot,
            "errors": shot.stderr[-2000:] + dom.stderr[-2000:],
        }
    return found


def _text_of(dom: str, element: str, css_class: str) -> str:
    match = re.search(rf'<{element} class="{css_class}">([^<]*)</{element}>', dom)
    return match.group(1).strip() if match else "(not on the page)"


def _png(path: Path) -> tuple[int, int, int]:
    """Width, height and the number of distinct byte values in the image data of a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        if kind == b"IDAT":
            chunks.append(data[offset + 8 : offset + 8 + length])
        offset += 12 + length
    return width, height, len(set(zlib.decompress(b"".join(chunks))))


def test_page_at_the_public_address_shows_the_serving_release(pages, fleet):
    shown = {
        name: (
            _text_of(page["dom"], "span", "version"),
            _text_of(page["dom"], "strong", "host") in fleet.names,
        )
        for name, page in pages.items()
    }
    assert shown == {name: (page["release"]["version"], True) for name, page in pages.items()}, {
        name: page["errors"] for name, page in pages.items()
    }


def test_screenshot_of_each_page_is_kept(pages):
    # A blank or single-colour window compresses to a handful of distinct byte values; a page of
    # text and tables has most of the 256.
    images = {
        name: _png(page["screenshot"]) if page["screenshot"].exists() else None
        for name, page in pages.items()
    }
    assert {name: image and image[:2] for name, image in images.items()} == dict.fromkeys(pages, WINDOW)
    assert {name: image[2] > 64 for name, image in images.items()} == dict.fromkeys(pages, True)
