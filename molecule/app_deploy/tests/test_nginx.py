"""nginx in front of the release: configured by edge_proxy, switched by app_deploy."""

from __future__ import annotations

import json
import uuid

from app_deploy_scenario import FROM_THE_LOAD_BALANCER, get, get_from_the_host, instance

testinfra_hosts = [f"docker://{instance()}"]

UPSTREAM_SOCKET = "/var/lib/deploykit/upstream.sock"
PLACEHOLDER_SOCKET = "/run/nginx-deploykit-placeholder.sock"
ACCESS_LOG = "/var/log/nginx/deploykit-access.log"
# What a client that is no proxy may claim, and nginx must not pass on.
FORGED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}


def test_nginx_is_running_and_enabled(host):
    nginx = host.service("nginx")
    assert nginx.is_running
    assert nginx.is_enabled


def test_nginx_configuration_is_valid(host):
    assert host.run("nginx -t").rc == 0


def test_nginx_listens_on_the_public_port(host):
    assert host.socket("tcp://0.0.0.0:80").is_listening


def test_nginx_leaves_tls_to_the_load_balancer(host):
    # As in production: the load balancer ends TLS and forwards plain HTTP to port 80.
    assert not host.socket("tcp://0.0.0.0:443").is_listening


def test_default_site_is_disabled(host):
    assert not host.file("/etc/nginx/sites-enabled/default").exists


def test_upstream_link_points_at_the_serving_containers_socket(host, serving):
    target = host.check_output(f"readlink {UPSTREAM_SOCKET}")
    release = serving["Config"]["Labels"]["org.deploykit.release"]
    assert serving["State"]["Running"]
    assert target == f"/var/lib/deploykit/app/sockets/{release}/app.sock"
    assert host.file(target).is_socket
    mounts = {mount["Source"]: mount["Destination"] for mount in serving["Mounts"]}
    assert mounts == {f"/var/lib/deploykit/app/sockets/{release}": "/run/app"}


def test_access_log_records_upstream_timing(host, host_address):
    marker = f"/version.json?probe={uuid.uuid4().hex}"
    assert get(host_address, marker)[0] == 200
    lines = [json.loads(line) for line in host.file(ACCESS_LOG).content_string.splitlines() if marker in line]
    assert len(lines) == 1
    entry = lines[0]
    assert entry["status"] == 200
    assert float(entry["upstream_response_time"]) >= 0
    # Both are in milliseconds, measured by separate clocks: the upstream's share may read 1 ms over.
    assert float(entry["request_time"]) + 0.001 >= float(entry["upstream_response_time"])
    assert entry["upstream_addr"] == f"unix:{UPSTREAM_SOCKET}"


def test_app_sees_the_client_address_forwarded_by_nginx(host, host_address, serving):
    marker = f"/version.json?forwarded={uuid.uuid4().hex}"
    assert get(host_address, marker)[0] == 200
    logs = host.check_output(f"docker logs --tail 200 {serving['Name'].lstrip('/')} 2>&1")
    entries = [json.loads(line) for line in logs.splitlines() if marker.split("=")[1] in line]
    assert entries
    # The controller's address on the project network, as nginx saw it: the tests' load balancer
    # sends no X-Forwarded-For of its own.
    assert entries[-1]["forwarded_for"] == "172.30.0.1"


def test_forwarded_for_of_the_load_balancer_is_kept(host, host_address, serving):
    # As the ALB's: the client it names, then the load balancer's own address, added by nginx.
    marker = f"/version.json?chain={uuid.uuid4().hex}"
    from_a_client = {**FROM_THE_LOAD_BALANCER, "X-Forwarded-For": "203.0.113.9"}
    assert get(host_address, marker, headers=from_a_client)[0] == 200
    logs = host.check_output(f"docker logs --tail 200 {serving['Name'].lstrip('/')} 2>&1")
    entries = [json.loads(line) for line in logs.splitlines() if marker.split("=")[1] in line]
    assert entries
    assert entries[-1]["forwarded_for"] == "203.0.113.9, 172.30.0.1"


def test_forwarded_for_of_a_client_that_is_no_proxy_is_replaced(host, host_address, serving):
    # The host asking its own address is neither loopback nor in edge_proxy_trusted_proxies: what
    # it claims about the original client is dropped, and nginx says what it saw itself.
    marker = f"/version.json?forged={uuid.uuid4().hex}"
    get_from_the_host(host, host_address, marker, FORGED)
    logs = host.check_output(f"docker logs --tail 200 {serving['Name'].lstrip('/')} 2>&1")
    entries = [json.loads(line) for line in logs.splitlines() if marker.split("=")[1] in line]
    assert entries
    assert entries[-1]["forwarded_for"] == host_address


def test_forwarded_proto_of_a_client_that_is_no_proxy_is_replaced(host, host_address):
    # Its "https" is not believed: the app takes the request for plain HTTP and redirects it.
    status, headers = get_from_the_host(host, host_address, "/version.json", FORGED)
    assert (status, headers["Location"]) == (301, f"https://{host_address}/version.json")


def test_nginx_starts_again_after_a_crash_left_its_placeholder_socket(host, host_address):
    # A killed nginx cannot remove the socket it listens on; a plain nginx then refuses to start
    # ("Address already in use"). The role's drop-in removes it before every start.
    host.run_expect([0], "systemctl kill --signal=SIGKILL nginx")
    host.run_expect([0], "for i in $(seq 50); do systemctl is-active --quiet nginx || break; sleep 0.1; done")
    assert host.file(PLACEHOLDER_SOCKET).is_socket
    host.run_expect([0], "systemctl start nginx")
    assert host.service("nginx").is_running
    assert get(host_address, "/version.json")[0] == 200
