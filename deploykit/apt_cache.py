"""Debian's apt-cacher-ng as the test hosts' package mirror.

Every test host that installs Docker downloads the same Debian packages; through this cache the
second and later downloads are local reads. A real EC2 fleet has a regional mirror instead; only
the local inventory's data names this proxy.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from deploykit import network
from deploykit.system import SetupError, say

PORT = 3142
URL = f"http://{network.GATEWAY}:{PORT}"
_LOG = Path("/var/log/apt-cacher-ng/deploykit-start.log")
# Without a backend of its own, apt-cacher-ng sends requests for deb.debian.org to mirrors from its
# built-in list, which these machines cannot resolve (it answers 503); the archive the hosts name
# is the one to fetch from.
_BACKENDS = Path("/etc/apt-cacher-ng/backends_debian")
_BACKEND = "http://deb.debian.org/debian/\n"


def answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=1):
            return True
    except OSError:
        return False


def ensure_apt_cache() -> str:
    """Start apt-cacher-ng unless it answers; return the proxy URL the test hosts use."""
    if not _BACKENDS.exists() or _BACKENDS.read_text() != _BACKEND:
        _BACKENDS.write_text(_BACKEND)
    if answers():
        return URL
    say(f"starting apt-cacher-ng on port {PORT}")
    _LOG.parent.mkdir(parents=True, exist_ok=True)
    with _LOG.open("ab") as log:
        subprocess.Popen(
            ["apt-cacher-ng", "-c", "/etc/apt-cacher-ng", "ForeGround=1"],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if answers():
            return URL
        time.sleep(0.3)
    raise SetupError(f"apt-cacher-ng did not answer on port {PORT}; see {_LOG} and /var/log/apt-cacher-ng/")
