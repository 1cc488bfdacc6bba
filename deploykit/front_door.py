"""Requests to the local environment's public address, as a user's client sends them.

The address is the stand-in's load balancer (deploykit/loadbalancer.py): HTTPS for
app.deploykit.localhost on this machine's loopback, with a certificate from the project's CA. curl
and browsers resolve any *.localhost name to loopback by themselves; Python's resolver here does
not, so these clients connect to 127.0.0.1 and send the name as TLS SNI and Host.
"""

from __future__ import annotations

import http.client
import socket
import ssl

from deploykit import loadbalancer

HOST = loadbalancer.PUBLIC_NAME
HTTPS_PORT = loadbalancer.SITE.https_port
HTTP_PORT = loadbalancer.SITE.http_port
URL = loadbalancer.HTTPS_URL


class _LoopbackHTTPS(http.client.HTTPSConnection):
    """HTTPS to `host` at 127.0.0.1: the name goes in SNI (checked against the certificate) and Host."""

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def get(
    path: str, *, timeout: float = 10, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """GET `path` over HTTPS, trusting the project's CA only; (status, lower-case headers, body).
    Redirects are not followed: a redirect is an answer to look at."""
    context = ssl.create_default_context(cafile=str(loadbalancer.CA_CERT))
    connection = _LoopbackHTTPS(HOST, HTTPS_PORT, timeout=timeout, context=context)
    try:
        connection.request("GET", path, headers={"User-Agent": "deploykit", **(headers or {})})
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
        return response.status, {key.lower(): value for key, value in response.getheaders()}, body
    finally:
        connection.close()


def get_http(path: str, *, timeout: float = 10) -> tuple[int, dict[str, str]]:
    """GET `path` from the plain HTTP listener (which redirects); (status, lower-case headers)."""
    connection = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": f"{HOST}:{HTTP_PORT}", "User-Agent": "deploykit"})
        response = connection.getresponse()
        response.read()
        return response.status, {key.lower(): value for key, value in response.getheaders()}
    finally:
        connection.close()
