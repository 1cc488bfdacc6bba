"""The load balancer stand-in in front of two real backends, configured from a target group in moto.

moto stands in for the ELBv2 and EC2 APIs; HAProxy, TLS, the backends and their health are real.
The load balancer here is a test's own (its name, address and loopback ports), so it never meets
the stand-in's `deploykit-lb`; the target group's checks are faster than the role's defaults
(interval 5 s, ALB's least, instead of 10) to keep the module short.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from deploykit import images, loadbalancer, network, standin
from deploykit.loadbalancer import PUBLIC_NAME, Site
from deploykit.system import DOCKER

pytestmark = pytest.mark.docker
FIXTURE = Path(__file__).parent / "fixtures" / "aws_load_balancer_defaults.yml"
PREFIX = "deploykit-lbtest-"
BACKENDS = ("b1", "b2")
INTERVAL, FALL, RISE = 5, 2, 2
# A backend: / names itself and echoes the forwarded headers; /readyz/ answers 503 while
# /tmp/unready exists and remembers the Host the check sent.
BACKEND_SCRIPT = """
import http.server, json, os, time
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/readyz/":
            open("/tmp/check-host", "w").write(self.headers.get("Host", ""))
            code, body = (503 if os.path.exists("/tmp/unready") else 200), b"ready"
        else:
            if self.path.startswith("/slow/"):
                time.sleep(float(self.path.split("/")[2]))
            code = 200
            body = json.dumps({"name": os.environ["NAME"], "path": self.path, **dict(self.headers)}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 80), Handler).serve_forever()
"""


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, check=False, timeout=60)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(
    site: Site, path: str = "/", *, tls: ssl.TLSVersion | None = None, timeout: float = 5
) -> tuple[int, dict[str, str], bytes]:
    """GET through the load balancer as a browser would: to 127.0.0.1, naming the site in SNI and Host."""
    context = ssl.create_default_context(cafile=str(loadbalancer.CA_CERT))
    if tls is not None:
        context.minimum_version = context.maximum_version = tls
        # This client's OpenSSL would refuse old versions itself; let it offer them, so the refusal
        # a test sees is the load balancer's.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    connection = http.client.HTTPSConnection(PUBLIC_NAME, site.https_port, context=context, timeout=timeout)
    raw = socket.create_connection(("127.0.0.1", site.https_port), timeout=timeout)
    connection.sock = context.wrap_socket(raw, server_hostname=PUBLIC_NAME)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        connection.close()


def _served_by(site: Site) -> str:
    status, _, body = _get(site)
    assert status == 200, body
    return json.loads(body)["name"]


def _wait_for(site: Site, target: str, wanted: str, timeout: float = 30) -> float:
    """Seconds until HAProxy reports `target` as `wanted` (UP or DOWN)."""
    start = time.monotonic()
    while True:
        status = loadbalancer.status(site)["targets"].get(target, {}).get("status")
        if status == wanted:
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, f"{target} still {status}, not {wanted}"
        time.sleep(0.1)


class World:
    def __init__(self, endpoint: str, site: Site) -> None:
        def client(service: str) -> Any:
            return boto3.client(
                service,
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",  # noqa: S106 - moto's dummy key
            )

        self.elbv2, self.ec2, self.site = client("elbv2"), client("ec2"), site
        self.instances: dict[str, str] = {}  # backend name -> instance id
        self.arn = ""

    def ensure(self) -> list[str]:
        return loadbalancer.ensure(self.elbv2, self.ec2, self.arn, site=self.site)

    def register(self, *names: str) -> None:
        loadbalancer.register_targets(self.elbv2, self.arn, [self.instances[n] for n in names])


@pytest.fixture(scope="module")
def world(
    request: pytest.FixtureRequest, moto_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    site = Site(
        name=f"{PREFIX}lb",
        address="172.30.0.89",
        https_port=_free_port(),
        http_port=_free_port(),
        directory=tmp_path_factory.mktemp("lb"),
    )
    world = World(moto_server(request), site)
    try:
        vpc = world.ec2.create_vpc(CidrBlock="172.30.0.0/16")["Vpc"]["VpcId"]
        subnet = world.ec2.create_subnet(VpcId=vpc, CidrBlock=network.SUBNET)["Subnet"]["SubnetId"]
        image = world.ec2.describe_images()["Images"][0]["ImageId"]
        for name in BACKENDS:
            started = _docker(
                "run", "--detach", "--name", f"{PREFIX}{name}", "--network", network.NAME,
                "--env", f"NAME={name}", "--label", "org.deploykit.test=loadbalancer",
                images.PYTHON_BASE.tag, "python3", "-c", BACKEND_SCRIPT,
            )  # fmt: skip
            assert started.returncode == 0, started.stderr
            address = '{{(index .NetworkSettings.Networks "deploykit").IPAddress}}'
            ip = _docker("inspect", "--format", address, f"{PREFIX}{name}").stdout.strip()
            world.instances[name] = world.ec2.run_instances(
                ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet, PrivateIpAddress=ip
            )["Instances"][0]["InstanceId"]
        settings = loadbalancer.target_group_settings(FIXTURE)
        settings |= {
            "aws_load_balancer_health_check_interval_seconds": INTERVAL,
            "aws_load_balancer_health_check_timeout_seconds": 2,
            "aws_load_balancer_unhealthy_threshold": FALL,
            "aws_load_balancer_healthy_threshold": RISE,
            "aws_load_balancer_deregistration_delay_seconds": 5,
        }
        world.arn = loadbalancer.ensure_target_group(
            world.elbv2, world.ec2, vpc_id=vpc, name="deploykit-lbtest", settings=settings
        )
        world.register(*BACKENDS)
        yield world
    finally:
        loadbalancer.remove(site)
        for name in BACKENDS:
            _docker("rm", "--force", f"{PREFIX}{name}")


def test_first_ensure_starts_it_with_new_targets_not_yet_in_service(world: World) -> None:
    changes = world.ensure()
    assert f"{world.site.name}: started on {world.site.https_url}" in changes
    assert any("certificate" in change for change in changes)
    assert (world.site.directory / "etc" / "site.pem").stat().st_mode & 0o777 == 0o600
    targets = loadbalancer.status(world.site)["targets"]
    assert set(targets) == set(world.instances.values())
    # Like ALB's `initial`: a new target takes no request before it passed `rise` checks.
    assert {t["status"].split()[0] for t in targets.values()} == {"DOWN"}
    status, _, _ = _get(world.site)
    assert status == 503
    for instance in world.instances.values():
        _wait_for(world.site, instance, "UP", timeout=INTERVAL * (RISE + 2))


def test_https_alternates_between_both_targets(world: World) -> None:
    served = [_served_by(world.site) for _ in range(6)]
    assert Counter(served) == {"b1": 3, "b2": 3}
    assert served[0] != served[1]


def test_the_app_sees_the_forwarded_headers_alb_sets(world: World) -> None:
    _, _, body = _get(world.site, "/page?x=1")
    # Header names are case-insensitive; HAProxy sends them in lower case.
    seen = {key.lower(): value for key, value in json.loads(body).items()}
    assert seen["path"] == "/page?x=1"
    assert seen["host"] == f"{PUBLIC_NAME}:{world.site.https_port}"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-port"] == "443"
    assert seen["x-forwarded-for"] == network.GATEWAY  # the client, as the container sees it


def test_http2_is_offered_like_albs_https_listener(world: World) -> None:
    context = ssl.create_default_context(cafile=str(loadbalancer.CA_CERT))
    context.set_alpn_protocols(["h2", "http/1.1"])
    raw = socket.create_connection(("127.0.0.1", world.site.https_port), timeout=5)
    with context.wrap_socket(raw, server_hostname=PUBLIC_NAME) as tls:
        assert tls.selected_alpn_protocol() == "h2"
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_below_12_is_refused(world: World) -> None:
    assert _get(world.site, tls=ssl.TLSVersion.TLSv1_2)[0] == 200
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        _get(world.site, tls=ssl.TLSVersion.TLSv1_1)


def test_http_redirects_to_https_on_the_published_port(world: World) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", world.site.http_port, timeout=5)
    connection.request("GET", "/x?y=1", headers={"Host": f"{PUBLIC_NAME}:{world.site.http_port}"})
    response = connection.getresponse()
    assert response.status == 301
    assert response.headers["Location"] == f"https://{PUBLIC_NAME}:{world.site.https_port}/x?y=1"


def test_health_checks_name_the_targets_private_ip_as_host(world: World) -> None:
    for name, instance in world.instances.items():
        ip = loadbalancer.status(world.site)["targets"][instance]["address"].rsplit(":", 1)[0]
        assert _docker("exec", f"{PREFIX}{name}", "cat", "/tmp/check-host").stdout == ip


def test_second_ensure_changes_nothing_and_does_not_reload(world: World) -> None:
    pid = loadbalancer._admin(world.site, "show info").split("Pid: ")[1].split()[0]
    assert world.ensure() == []
    assert loadbalancer._admin(world.site, "show info").split("Pid: ")[1].split()[0] == pid


def test_a_missing_certificate_is_issued_again_and_loaded(world: World) -> None:
    (world.site.directory / "etc" / "site.pem").unlink()
    changes = world.ensure()
    assert changes == [
        f"certificate for {PUBLIC_NAME} issued by the project CA",
        f"{world.site.name}: reloaded",
    ]
    assert _get(world.site)[0] == 200


def test_an_unready_target_is_taken_out_after_interval_times_threshold(world: World) -> None:
    instance = world.instances["b2"]
    _docker("exec", f"{PREFIX}b2", "touch", "/tmp/unready")
    try:
        took = _wait_for(world.site, instance, "DOWN", timeout=INTERVAL * (FALL + 2))
        print(
            f"b2 out of service {took:.1f} s after /readyz/ turned 503 (interval {INTERVAL} s, fall {FALL})"
        )
        assert {_served_by(world.site) for _ in range(4)} == {"b1"}
    finally:
        _docker("exec", f"{PREFIX}b2", "rm", "-f", "/tmp/unready")
    _wait_for(world.site, instance, "UP", timeout=INTERVAL * (RISE + 2))


def test_deregistering_removes_the_target_with_no_failed_request(world: World) -> None:
    results: Counter[str] = Counter()
    stop = threading.Event()

    def stream() -> None:
        deadline = time.monotonic() + 30  # bounded even if the test fails before it stops the stream
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                results[_served_by(world.site)] += 1
            except (OSError, AssertionError, http.client.HTTPException) as error:
                results[f"failed: {error!r}"] += 1

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        time.sleep(0.5)
        world.register("b1")
        changes = world.ensure()
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    print(f"requests during the reload: {dict(results)}")
    assert f"{world.site.name}: target {world.instances['b2']} removed" in changes
    assert not [key for key in results if key.startswith("failed")]
    assert set(loadbalancer.status(world.site)["targets"]) == {world.instances["b1"]}
    assert {_served_by(world.site) for _ in range(4)} == {"b1"}


def test_registering_again_adds_it_after_its_health_checks(world: World) -> None:
    world.register(*BACKENDS)
    changes = world.ensure()
    instance = world.instances["b2"]
    assert any(change.endswith(f"target {instance} added at {_ip(world, 'b2')}:80") for change in changes)
    assert loadbalancer.status(world.site)["targets"][world.instances["b1"]]["status"] == "UP"
    took = _wait_for(world.site, instance, "UP", timeout=INTERVAL * (RISE + 2))
    print(f"b2 in service {took:.1f} s after the reload (interval {INTERVAL} s, rise {RISE})")
    assert {_served_by(world.site) for _ in range(4)} == {"b1", "b2"}


def test_requests_in_flight_during_a_reload_may_finish_within_the_deregistration_delay(world: World) -> None:
    """ALB lets a deregistered target finish its requests for the delay (5 s here); HAProxy's old
    worker, which holds every request in flight at the reload, is stopped after the same delay."""
    outcomes: dict[str, list[str]] = {"short": [], "long": []}

    def request(kind: str, seconds: float) -> None:
        try:
            outcomes[kind].append(str(_get(world.site, f"/slow/{seconds}", timeout=15)[0]))
        except (OSError, http.client.HTTPException) as error:
            outcomes[kind].append(type(error).__name__)

    # Two of each, so that round robin puts one of each on the target that leaves and one on the other.
    threads = [
        threading.Thread(target=request, args=(k, s))
        for k, s in [("short", 2), ("short", 2), ("long", 9), ("long", 9)]
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    time.sleep(0.5)
    world.register("b1")
    started = time.monotonic()
    world.ensure()
    for thread in threads:
        thread.join()
    took = time.monotonic() - started
    print(f"in flight at the reload: {outcomes}, the old worker gone {took:.1f} s after the reload")
    assert outcomes["short"] == ["200", "200"]
    assert "200" not in outcomes["long"]  # cut at the delay, on the target that stays too
    assert took < 7


def test_no_targets_answers_503(world: World) -> None:
    world.register()
    world.ensure()
    assert loadbalancer.status(world.site)["targets"] == {}
    assert _get(world.site)[0] == 503


def test_labels_let_standin_down_remove_it(world: World) -> None:
    label = _docker(
        "inspect", "--format", f'{{{{index .Config.Labels "{standin.OWNER_LABEL}"}}}}', world.site.name
    )
    assert label.stdout.strip() == standin.OWNER


def _ip(world: World, name: str) -> str:
    described = world.ec2.describe_instances(InstanceIds=[world.instances[name]])
    return described["Reservations"][0]["Instances"][0]["PrivateIpAddress"]
