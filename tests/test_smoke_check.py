"""deploy_smoke_check (plugins/modules), run by Ansible on this machine against a loopback server
standing in for a host's nginx: it asks until the release answers, sends the load balancer's
headers, follows no redirect, and writes the host's deploy record only once the host answered.
The e2e deploys (tests/e2e) run it on every host through real nginx.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

RELEASE = {"version": "v2", "image": "registry.example/app:v2", "commit": "0123abc"}


class _Nginx(BaseHTTPRequestHandler):
    """Answers with the statuses in `server.answers`, one per request, then 200 and the release."""

    def do_GET(self) -> None:
        self.server.seen.append(dict(self.headers))
        status = self.server.answers.pop(0) if self.server.answers else 200
        body = json.dumps(RELEASE).encode() if status == 200 else b"<html>not yet</html>"
        self.send_response(status)
        if status == 301:
            self.send_header("Location", "https://app.example.com/version.json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def nginx() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Nginx)
    server.answers, server.seen = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _check(run_local_play, nginx, record: Path, *, retries: int = 3, check: bool = False) -> dict:
    document, _ = run_local_play(
        f"""
- name: Ask the host's nginx which release it serves
  deploy_smoke_check:
    url: http://127.0.0.1:{nginx.server_port}/version.json
    headers: {{Host: app.example.com, X-Forwarded-Proto: https}}
    retries: {retries}
    delay: 0.1
    record_path: {record}
    record: {{config_sha256: abc123}}
  register: smoke
  failed_when: false

- name: Show the result
  ansible.builtin.debug:
    var: smoke
""",
        check=check,
    )
    return document["plays"][0]["tasks"][1]["hosts"]["localhost"]["smoke"]


def test_it_asks_until_the_release_answers_and_records_the_deploy(run_local_play, nginx, tmp_path):
    nginx.answers[:] = [502, 503]
    record = tmp_path / "deploykit" / "deploy.json"
    smoke = _check(run_local_play, nginx, record)
    assert (smoke["status"], smoke["attempts"], smoke["json"]) == (200, 3, RELEASE)
    assert json.loads(record.read_text()) == {"config_sha256": "abc123", "image": RELEASE["image"]}
    assert smoke["changed"] is True


def test_it_sends_the_load_balancers_headers(run_local_play, nginx, tmp_path):
    _check(run_local_play, nginx, tmp_path / "deploy.json")
    assert nginx.seen[0]["Host"] == "app.example.com"
    assert nginx.seen[0]["X-Forwarded-Proto"] == "https"


def test_the_same_record_again_changes_nothing(run_local_play, nginx, tmp_path):
    record = tmp_path / "deploy.json"
    _check(run_local_play, nginx, record)
    written = record.stat().st_mtime_ns
    assert _check(run_local_play, nginx, record)["changed"] is False
    assert record.stat().st_mtime_ns == written


def test_a_host_that_never_answers_as_the_release_fails_keeping_its_record(run_local_play, nginx, tmp_path):
    # A redirect is not followed: the production settings redirect what does not come from the
    # load balancer, and that is not the release answering.
    nginx.answers[:] = [301] * 3
    record = tmp_path / "deploy.json"
    record.write_text('{"config_sha256": "old", "image": "registry.example/app:v1"}\n')
    smoke = _check(run_local_play, nginx, record, retries=2)
    # failed_when: false keeps the play going; the module's own failure is its message.
    assert (smoke["status"], smoke["attempts"], "json" in smoke) == (301, 3, False)
    assert "did not answer with the release's JSON after 3 attempts: HTTP 301" in smoke["msg"]
    assert json.loads(record.read_text())["config_sha256"] == "old"


def test_a_check_run_asks_and_writes_nothing(run_local_play, nginx, tmp_path):
    record = tmp_path / "deploy.json"
    smoke = _check(run_local_play, nginx, record, check=True)
    assert (smoke["json"], smoke["changed"]) == (RELEASE, True)
    assert not record.exists()
