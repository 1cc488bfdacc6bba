"""Scenario 11: the app page, opened in headless Chromium on each host, shows the serving release.

Screenshots are kept as reports/e2e/<host>.png. The browser may reach only the stand-in's hosts:
even with background networking and component updates off, Chromium 156 still asks Google for
the time, for updates and for accounts. Every request but those to the project's network goes to
a proxy address on loopback where nothing listens, so none of them leaves the machine.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from deploykit import network
from deploykit.system import REPORTS

pytestmark = pytest.mark.e2e

SCREENSHOTS = REPORTS / "e2e"
WINDOW = (1280, 900)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
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
            # Nothing but the stand-in's hosts: other requests go to a closed port on loopback.
            "--proxy-server=http://127.0.0.1:9",
            f"--proxy-bypass-list={network.SUBNET}",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def pages(fleet, tmp_path_factory):
    """Per host: the release /version.json names, the DOM Chromium rendered, its screenshot."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    found = {}
    for host in fleet.hosts:
        tmp_path = tmp_path_factory.mktemp(host.name)
        url = f"http://{host.ip}/"
        screenshot = SCREENSHOTS / f"{host.name}.png"
        screenshot.unlink(missing_ok=True)
        shot = _chromium(tmp_path, f"--screenshot={screenshot}", url)
        dom = _chromium(tmp_path, "--dump-dom", url)
        found[host.name] = {
            "release": fleet.release(host.name),
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


def test_page_shows_the_release_each_host_serves(pages):
    shown = {
        name: (_text_of(page["dom"], "span", "version"), _text_of(page["dom"], "strong", "host"))
        for name, page in pages.items()
    }
    assert shown == {name: (page["release"]["version"], name) for name, page in pages.items()}, {
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
