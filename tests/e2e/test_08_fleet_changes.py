"""Scenario 8: instances that stop, and a host that stops answering in the middle of a rollout."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.e2e

ROLLOUT = "Roll out the release"


def _instance_id(ec2, name: str) -> str:
    reservations = ec2.describe_instances(
        Filters=[
            {"Name": "tag:Name", "Values": [name]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )["Reservations"]
    [instance] = [instance for reservation in reservations for instance in reservation["Instances"]]
    return instance["InstanceId"]


@pytest.fixture
def stopped_instance(ec2, fleet, wait_for):
    name = fleet.names[-1]
    instance_id = _instance_id(ec2, name)
    assert name in fleet.rollout_order(), "the host is not in the inventory before it is stopped"
    ec2.stop_instances(InstanceIds=[instance_id])
    try:
        yield name
    finally:
        ec2.start_instances(InstanceIds=[instance_id])
        wait_for(
            lambda: name in fleet.rollout_order(),
            timeout=120,
            interval=2,
            what=f"{name} back in the inventory",
        )


def test_stopped_instance_leaves_the_inventory(stopped_instance, fleet):
    assert sorted(fleet.rollout_order()) == sorted(name for name in fleet.names if name != stopped_instance)


@pytest.fixture(scope="module")
def host_lost(ansible, fleet, releases, request_stream, record_requests, wait_for, front_door, freeze):
    """v2 -> v1; the second host of the rollout freezes (docker pause) once the first has switched.

    Users' requests go through the load balancer meanwhile; its health check takes the frozen host
    out within the detection window, and the stream goes on until well after it.
    """
    first, second, third = fleet.rollout_order()
    before = fleet.snapshot()
    lost = {"order": (first, second, third), "paused": False, "frozen": False, "paused_at": None}
    try:
        with (
            request_stream([fleet.by_name[first], fleet.by_name[third]]) as stream,
            request_stream(front_door=True) as through_front_door,
        ):
            # A frozen host does not refuse connections, it never answers: a short connect timeout
            # keeps the wait for it short.
            running = ansible.start("v1-host-lost", ansible.deploy_args(releases.v1.tag), ANSIBLE_TIMEOUT="5")

            def first_switched() -> bool:
                try:
                    return fleet.release(first)["version"] == "v1"
                except (AssertionError, OSError, ValueError):
                    return False

            try:
                wait_for(
                    lambda: first_switched() or not running.running(), timeout=600, what=f"{first} to switch"
                )
                if running.running():
                    lost["paused_at"] = time.monotonic()
                    freeze(second, True)
                    lost["paused"] = lost["frozen"] = True
            finally:
                run = running.wait()
            if lost["paused_at"] is not None:
                # Past the window, so that requests after it are part of the stream too.
                time.sleep(max(0.0, lost["paused_at"] + front_door.detection_window + 10 - time.monotonic()))
        record_requests(stream.result)
        record_requests(through_front_door.result)
        lost |= {
            "run": run,
            "stream": stream.result,
            "front_door": through_front_door.result,
            "before": before,
            "after_third": fleet.containers(third),
            "versions": {name: fleet.release(name)["version"] for name in (first, third)},
        }
        yield lost
    finally:
        if lost["frozen"]:
            freeze(second, False)


@pytest.fixture(scope="module")
def rerun(host_lost, ansible, releases, freeze):
    """The same deploy again, once the lost host answers again."""
    if host_lost["frozen"]:
        freeze(host_lost["order"][1], False)
        host_lost["frozen"] = False
    return ansible.deploy("v1-after-host-returns", releases.v1.tag)


def test_rollout_stops_at_the_host_that_stopped_answering(host_lost):
    first, second, third = host_lost["order"]
    run = host_lost["run"]
    assert host_lost["paused"], f"the rollout ended before {first} switched:\n{run.tail()}"
    assert run.returncode != 0, run.tail()
    assert run.recap().get(second, {}).get("unreachable", 0) > 0
    assert third not in run.hosts_in(ROLLOUT)


def test_the_report_says_which_host_was_lost_which_switched_and_what_to_run(host_lost, fleet):
    first, second, third = host_lost["order"]
    report = host_lost["run"].stdout.partition("DEPLOY STOPPED")[2]
    assert f"{second} (in '{ROLLOUT}'): unreachable at {fleet.by_name[second].ip}: " in report, host_lost[
        "run"
    ].tail()
    assert f"Switched in this run: {first}\n" in report
    assert f"Serving what they served before: {third}" in report
    assert f"ansible-playbook playbooks/rollback.yml -i inventory/local --limit {first}" in report


def test_hosts_not_reached_keep_their_release(host_lost):
    _, _, third = host_lost["order"]
    assert host_lost["versions"][third] == "v2"
    assert host_lost["after_third"] == host_lost["before"][third]


def test_other_hosts_keep_serving_while_one_is_lost(host_lost):
    first, _, third = host_lost["order"]
    stream = host_lost["stream"]
    assert host_lost["versions"] == {first: "v1", third: "v2"}
    assert stream.sent > 0
    assert (stream.failed, stream.failures) == (0, []), f"{stream.failed} of {stream.sent} requests failed"


def test_rerun_after_the_host_returns_completes(rerun, fleet):
    assert rerun.returncode == 0, rerun.tail()
    assert fleet.versions() == dict.fromkeys(fleet.names, "v1")


# A request sent this long before the freeze may still be in flight on the frozen host.
IN_FLIGHT_SECONDS = 1.0


def test_users_see_failures_only_inside_the_health_check_s_detection_window(host_lost, front_door):
    # A frozen host accepts connections and never answers: the load balancer keeps sending it its
    # share of requests until its health check has failed unhealthy_threshold times. Requests sent
    # after that window all succeed, and none failed before the freeze.
    assert host_lost["paused"], "the rollout ended before the host was frozen"
    through = host_lost["front_door"]
    paused_at, window = host_lost["paused_at"], front_door.detection_window
    outside = [
        round(at - paused_at, 2)
        for at in through.failed_at
        if not paused_at - IN_FLIGHT_SECONDS <= at <= paused_at + window
    ]
    assert through.sent > 0
    assert outside == [], (
        f"failures sent at {outside} s from the freeze (window {window} s): {through.failures}"
    )
