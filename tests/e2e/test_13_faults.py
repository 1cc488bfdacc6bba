"""Scenario 13: faults nobody scripted, injected by hand, each followed by a re-run that completes.

- A host that does not answer when the deploy plans (frozen with docker pause before it starts):
  the deploy stops before any host switches (max_fail_percentage counts failed hosts only, so the
  plan play is any_errors_fatal), the other hosts keep serving their release, and once the host
  answers again the same command completes.
- A deploy killed with SIGKILL in the middle of its rollout (controller and workers, as a machine
  that dies): users through the load balancer see no failure, the next run is refused with a lock
  that names the dead process and says it is stale, with the command to take it over; that command
  completes the rollout, and the killed run left nothing behind on the controller's disk.
- Registry faults, each named for what it is: a tag the registry does not have; the registry down
  before the hosts pull (the deploy stops before any host switches); the registry down once every
  host has pulled (the deploy completes: nothing after the pull needs it).
- The Docker engine stopped on a host: the deploy starts it again and switches the host.
- A host whose disk has less room than the new release's pull needs: the deploy stops at the plan,
  naming the free space and the space needed, before any host switches; once space is freed on
  the host, the same command completes. The stand-in's hosts share this machine's disk, so the
  fault moves one host's Docker data onto a filesystem of its own, sized for the test.

Each fault is a row of its own in reports/e2e.json (FAULT_CASES below).
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import tempfile
from pathlib import Path

import pytest

from deploykit import registry

pytestmark = pytest.mark.e2e

# The module-scoped fixture that injects each fault, and the case's row in reports/e2e.json.
FAULT_CASES = {
    "unreachable_at_plan": "a host unreachable when the deploy plans",
    "killed_mid_rollout": "the deploy killed (SIGKILL) mid-rollout, then taken over",
    "registry_faults": "registry faults: tag missing, registry down before the pull and after it",
    "engine_stopped": "the Docker engine stopped on a host",
    "disk_nearly_full": "a host's disk with less room than the pull needs",
}

PLAN = "Plan the rollout"
MIGRATIONS = "Apply the database migrations once, from the new image"
ROLLOUT = "Roll out the release"
# The command the refusal prints to take a stale lock over.
OVERRIDE = re.compile(r"Take it over with: (ansible-playbook .*?-e deploy_lock_force=true)")


@pytest.fixture(scope="module")
def unreachable_at_plan(ansible, fleet, releases, request_stream, record_requests, freeze):
    """v2 -> v1 while the first host of the rollout is frozen; then the same deploy once it answers."""
    frozen, *others = fleet.rollout_order()
    before = {name: fleet.containers(name) for name in others}
    versions_before = fleet.versions()
    freeze(frozen, True)
    try:
        with request_stream([fleet.by_name[name] for name in others]) as stream:
            # A short connect timeout keeps the wait for the frozen host short, as in scenario 8.
            args = ansible.deploy_args(releases.v1.tag)
            run = ansible.run("v1-unreachable-at-plan", args, ANSIBLE_TIMEOUT="5")
        after = {name: fleet.containers(name) for name in others}
    finally:
        freeze(frozen, False)
    record_requests(stream.result)
    rerun = ansible.deploy("v1-after-the-host-answers", releases.v1.tag)
    return {
        "frozen": frozen,
        "others": others,
        "run": run,
        "stream": stream.result,
        "before": before,
        "after": after,
        "versions_before": versions_before,
        "rerun": rerun,
    }


def test_an_unreachable_host_stops_the_deploy_at_the_plan(unreachable_at_plan):
    run, frozen = unreachable_at_plan["run"], unreachable_at_plan["frozen"]
    assert run.returncode != 0, run.tail()
    assert run.recap()[frozen]["unreachable"] == 1, run.tail()
    assert f"fatal: [{frozen}]: UNREACHABLE!" in run.play(PLAN), run.tail()


def test_the_report_names_the_host_its_address_and_that_nothing_switched(unreachable_at_plan, fleet):
    run, frozen = unreachable_at_plan["run"], unreachable_at_plan["frozen"]
    report = run.stdout.partition("DEPLOY STOPPED")[2]
    assert f"{frozen} (in '{PLAN}'): unreachable at {fleet.by_name[frozen].ip}: " in report, run.tail()
    # Not a privilege escalation problem: a host that took the connection and said nothing.
    assert "it took the SSH connection and then did not answer" in report, run.tail()
    assert "Switched in this run: none" in report
    assert "run the same command again: ansible-playbook deploy.yml -i inventory/local" in report


def test_no_host_switches_when_one_is_unreachable(unreachable_at_plan):
    run = unreachable_at_plan["run"]
    # The plays after the plan find no host: the ones that answered failed with it.
    assert run.hosts_in(MIGRATIONS) == [], run.tail()
    assert run.hosts_in(ROLLOUT) == [], run.tail()
    assert unreachable_at_plan["after"] == unreachable_at_plan["before"]


def test_the_other_hosts_keep_serving_while_one_is_unreachable(unreachable_at_plan):
    stream = unreachable_at_plan["stream"]
    assert stream.sent > 0
    assert (stream.failed, stream.failures) == (0, []), f"{stream.failed} of {stream.sent} requests failed"
    assert {version for counts in stream.versions.values() for version in counts} == {
        unreachable_at_plan["versions_before"][unreachable_at_plan["others"][0]]
    }


def test_the_same_deploy_completes_once_the_host_answers(unreachable_at_plan, fleet):
    rerun = unreachable_at_plan["rerun"]
    assert rerun.returncode == 0, rerun.tail()
    assert fleet.versions() == dict.fromkeys(fleet.names, "v1")


def _lock_files() -> set[str]:
    return {path.name for path in Path(tempfile.gettempdir()).glob("deploykit-lock-*")}


@pytest.fixture(scope="module")
def killed_mid_rollout(
    unreachable_at_plan, ansible, fleet, releases, request_stream, record_requests, wait_for, ssm
):
    """v1 -> v2, killed with SIGKILL once the first host serves v2; the re-run; the override."""
    first = fleet.rollout_order()[0]
    files_before = _lock_files()

    def first_switched() -> bool:
        try:
            return fleet.release(first)["version"] == "v2"
        except (AssertionError, OSError, ValueError):
            return False

    with request_stream(front_door=True) as stream:
        running = ansible.start("v2-killed-mid-rollout", ansible.deploy_args(releases.v2.tag))
        try:
            wait_for(
                lambda: first_switched() or not running.running(), timeout=600, what=f"{first} to switch"
            )
            was_running = running.running()
            running.kill()
        finally:
            killed = running.wait()
        lock = json.loads(ssm.get_parameter(Name="/deploykit/local/deploy-lock")["Parameter"]["Value"])
        refused = ansible.deploy("v2-after-the-kill", releases.v2.tag)
        printed = OVERRIDE.search(refused.stdout)
        command = printed.group(1) if printed else ""
        forced = ansible.run("v2-lock-taken-over", shlex.split(command)[1:]) if command else refused
    record_requests(stream.result)
    return {
        "was_running": was_running,
        "killed": killed,
        "lock": lock,
        "refused": refused,
        "command": command,
        "forced": forced,
        "stream": stream.result,
        "files_left": _lock_files() - files_before,
    }


def test_the_kill_came_in_the_middle_of_the_rollout(killed_mid_rollout, fleet):
    assert killed_mid_rollout["was_running"], killed_mid_rollout["killed"].tail()
    assert killed_mid_rollout["killed"].returncode < 0


def test_the_next_run_is_refused_by_a_lock_that_names_the_dead_process_as_stale(killed_mid_rollout):
    refused, lock = killed_mid_rollout["refused"], killed_mid_rollout["lock"]
    assert refused.returncode != 0, refused.tail()
    assert {"holder", "user", "machine", "pid", "run_id", "started_at", "image_tag"} <= lock.keys(), lock
    holder = f"{lock['holder']} (user {lock['user']}, on {lock['machine']}, process {lock['pid']})"
    assert f"is held by {holder}" in refused.output, refused.tail()
    assert f"It is stale: process {lock['pid']} no longer runs on {lock['machine']}" in refused.output
    assert killed_mid_rollout["command"].startswith("ansible-playbook deploy.yml -i inventory/local")
    assert killed_mid_rollout["command"].endswith("-e deploy_lock_force=true")


def test_the_printed_override_completes_the_rollout(killed_mid_rollout, fleet):
    forced = killed_mid_rollout["forced"]
    assert forced.returncode == 0, forced.tail()
    assert "Took over the deploy lock held by" in forced.output
    assert fleet.versions() == dict.fromkeys(fleet.names, "v2")


def test_users_see_no_failure_through_the_kill_and_the_recovery(killed_mid_rollout):
    stream = killed_mid_rollout["stream"]
    assert stream.sent > 0
    assert (stream.failed, stream.failures) == (0, []), f"{stream.failed} of {stream.sent} requests failed"


def test_the_killed_run_left_nothing_on_the_controller_s_disk(killed_mid_rollout):
    assert killed_mid_rollout["files_left"] == set()


# Registry faults: a tag that is not there, the registry down before the hosts pull, and down once
# they have pulled. Each names its own cause; the last changes nothing for the deploy.
REPOSITORY = "deploykit/app"


def _has_image(fleet, name: str, uri: str) -> bool:
    script = f"docker image inspect --format . {shlex.quote(uri)} 2>/dev/null || true"
    return fleet.sh(name, script).strip() == "."


@pytest.fixture(scope="module")
def registry_faults(killed_mid_rollout, ansible, fleet, releases, request_stream, record_requests, wait_for):
    """v2 serves; a missing tag, then v1 under a tag no host has, with the registry stopped before
    the deploy and, in a second deploy, once every host has pulled."""
    missing_tag = f"e2e-no-such-tag-{secrets.token_hex(3)}"
    tag = f"e2e-v1-again-{secrets.token_hex(3)}"
    uri = registry.push(releases.v1.uri, REPOSITORY, tag)
    before = fleet.snapshot()
    with request_stream(fleet.hosts) as stream:
        missing = ansible.deploy("missing-tag", missing_tag)
        after_missing = fleet.snapshot()
        registry.stop()
        try:
            down_before = ansible.deploy("registry-down-before-the-pull", tag)
            after_down = fleet.snapshot()
        finally:
            registry.ensure_registry()
        running = ansible.start("registry-down-after-the-pull", ansible.deploy_args(tag))
        try:
            pulled = wait_for(
                lambda: all(_has_image(fleet, name, uri) for name in fleet.names) or not running.running(),
                timeout=600,
                interval=0.2,
                what="every host to pull the release",
            )
            stopped_while_running = running.running()
            registry.stop()
        finally:
            try:
                down_after = running.wait()
            finally:
                registry.ensure_registry()
    record_requests(stream.result)
    return {
        "missing_tag": missing_tag,
        "missing": missing,
        "down_before": down_before,
        "down_after": down_after,
        "before": before,
        "after_missing": after_missing,
        "after_down": after_down,
        "pulled": pulled,
        "stopped_while_running": stopped_while_running,
        "stream": stream.result,
    }


def test_a_missing_tag_is_named_as_missing(registry_faults):
    missing = registry_faults["missing"]
    assert missing.returncode != 0, missing.tail()
    # ECR is asked on the controller, when the deploy marks the image it deploys, before any host pulls.
    assert (
        f"ECR repository deploykit/app has no image tagged {registry_faults['missing_tag']}" in missing.output
    )
    assert "cannot be reached" not in missing.output
    assert missing.hosts_in(PLAN) == [], missing.tail()
    assert registry_faults["after_missing"] == registry_faults["before"]


def test_a_registry_down_before_the_pull_is_named_as_unreachable(registry_faults, fleet):
    down = registry_faults["down_before"]
    assert down.returncode != 0, down.tail()
    assert "the registry cannot be reached from the host" in down.output, down.tail()
    assert "the tag does not exist" not in down.output
    # Each host's failure is said once, with its cause, not also as the module's raw error.
    for name in fleet.names:
        assert len(re.findall(rf"^fatal: \[{re.escape(name)}\]", down.stdout, re.MULTILINE)) <= 1, down.tail()
    assert down.hosts_in(ROLLOUT) == []
    assert registry_faults["after_down"] == registry_faults["before"]


def test_a_registry_down_after_the_pull_does_not_stop_the_deploy(registry_faults, fleet):
    # The registry was stopped while the deploy ran, once every host had the image.
    assert registry_faults["pulled"]
    assert registry_faults["stopped_while_running"]
    down_after = registry_faults["down_after"]
    assert down_after.returncode == 0, down_after.tail()
    assert fleet.versions() == dict.fromkeys(fleet.names, "v1")


def test_no_request_fails_through_the_registry_faults(registry_faults):
    stream = registry_faults["stream"]
    assert stream.sent > 0
    assert (stream.failed, stream.failures) == (0, []), f"{stream.failed} of {stream.sent} requests failed"


# The Docker engine stopped on a host (socket and service, so that no API call starts it again).
# The release container survives (live-restore) and nginx still reaches it through its socket. The
# deploy starts the engine again through docker_engine and switches the host like the others;
# the other hosts serve throughout.
ENGINE_TASK = "docker_engine : Ensure the Docker service is enabled and running"


@pytest.fixture(scope="module")
def engine_stopped(registry_faults, ansible, fleet, releases, request_stream, record_requests):
    stopped = fleet.rollout_order()[1]
    others = [host for host in fleet.hosts if host.name != stopped]
    fleet.sh(stopped, "systemctl stop docker.socket docker.service")
    try:
        engine_down = fleet.sh(stopped, "systemctl is-active docker.service || true").strip()
        with request_stream(others) as stream:
            run = ansible.deploy("v2-engine-stopped-on-a-host", releases.v2.tag)
    finally:
        fleet.sh(stopped, "systemctl start docker.socket docker.service", check=False)
    record_requests(stream.result)
    return {
        "stopped": stopped,
        "engine_down": engine_down,
        "run": run,
        "stream": stream.result,
    }


def test_the_engine_was_down_when_the_deploy_started(engine_stopped):
    assert engine_stopped["engine_down"] != "active"


def test_the_deploy_starts_the_engine_again_and_switches_every_host(engine_stopped, fleet):
    run, stopped = engine_stopped["run"], engine_stopped["stopped"]
    assert run.returncode == 0, run.tail()
    engine_task = run.output.partition(f"TASK [{ENGINE_TASK}]")[2].partition("TASK [")[0]
    assert f"changed: [{stopped}]" in engine_task, run.tail()
    assert fleet.versions() == dict.fromkeys(fleet.names, "v2")
    assert fleet.sh(stopped, "systemctl is-active docker.service").strip() == "active"


def test_the_other_hosts_serve_while_the_engine_is_started_again(engine_stopped):
    stream = engine_stopped["stream"]
    assert stream.sent > 0
    assert (stream.failed, stream.failures) == (0, []), f"{stream.failed} of {stream.sent} requests failed"


# A host's disk with less room than the pull of the new release needs. The stand-in's hosts keep
# Docker's data on this machine's disk, so the fault gives one host a filesystem of its own for it
# (a tmpfs with the data copied in, filled up to FREE_BYTES of room), and puts the data back
# afterwards. The engine stops for the move, so that host is left out of the request streams.
FREE_BYTES = 30 * 1024 * 1024
SPARE_BYTES = 600 * 1024 * 1024
FILL = "/var/lib/docker/deploykit-e2e-fill"
# Written once the data is copied in: only a complete copy is ever copied back.
MOVED = "/var/lib/docker/deploykit-e2e-moved"
DISK = "/srv/deploykit-e2e-disk"

# The app's containers stop before the engine does and start after it, so that they run from the
# data the engine now holds (live-restore would otherwise keep them on the other copy).
MOVE_ONTO_SMALL_DISK = f"""
set -eu
running=$(docker ps --quiet)
[ -z "$running" ] || docker stop $running >/dev/null
systemctl stop docker.socket docker.service
mkdir -p {DISK}
mount --bind /var/lib/docker {DISK}
used=$(du -sxB1 {DISK} | cut -f1)
mount -t tmpfs -o size=$((used + {SPARE_BYTES})),mode=0711 deploykit-e2e-disk /var/lib/docker
cp -a {DISK}/. /var/lib/docker/
touch {MOVED}
systemctl start docker.socket docker.service
[ -z "$running" ] || docker start $running >/dev/null
free=$(df -B1 --output=avail /var/lib/docker | tail -1)
fallocate -l $((free - {FREE_BYTES})) {FILL}
"""

# Only what the move made is undone, and only a complete copy goes back: a move that stopped
# halfway leaves Docker's data where it was.
MOVE_BACK = f"""
set -eu
running=""
if grep -q "^deploykit-e2e-disk /var/lib/docker tmpfs " /proc/mounts; then
    running=$(docker ps --quiet 2>/dev/null || true)
    [ -z "$running" ] || docker stop $running >/dev/null
    systemctl stop docker.socket docker.service
    if [ -e {MOVED} ]; then
        rm -f {FILL} {MOVED}
        find {DISK} -mindepth 1 -maxdepth 1 -exec rm -rf {{}} +
        cp -a /var/lib/docker/. {DISK}/
    fi
    umount /var/lib/docker
fi
if mountpoint -q {DISK}; then umount {DISK}; fi
systemctl start docker.socket docker.service
[ -z "$running" ] || docker start $running >/dev/null
"""


@pytest.fixture(scope="module")
def disk_nearly_full(engine_stopped, ansible, fleet, releases, request_stream, record_requests, wait_for):
    """v2 -> the large release with one host's disk nearly full; then again once space is freed."""
    full = fleet.rollout_order()[-1]
    others = [host for host in fleet.hosts if host.name != full]
    versions_before = fleet.versions()
    try:
        fleet.sh(full, MOVE_ONTO_SMALL_DISK, timeout=300)
        wait_for(
            lambda: fleet.versions()[full] == versions_before[full], timeout=60, what=f"{full} to serve again"
        )
        free = int(fleet.sh(full, "df -B1 --output=avail /var/lib/docker | tail -1"))
        before = fleet.snapshot()
        with request_stream(others) as stream:
            run = ansible.deploy("v5-disk-nearly-full", releases.large.tag)
        after = fleet.snapshot()
        versions_after = fleet.versions()
        # What the message tells the user to do: free space on the host.
        fleet.sh(full, f"rm -f {FILL}")
        rerun = ansible.deploy("v5-after-space-is-freed", releases.large.tag)
    finally:
        fleet.sh(full, MOVE_BACK, timeout=300, check=False)
    record_requests(stream.result)
    wait_for(lambda: fleet.versions()[full] == "v5", timeout=60, what=f"{full} to serve v5 from its own disk")
    return {
        "full": full,
        "free": free,
        "run": run,
        "stream": stream.result,
        "before": before,
        "after": after,
        "versions_before": versions_before,
        "versions_after": versions_after,
        "rerun": rerun,
        "mounts_after": fleet.sh(full, "grep -c deploykit-e2e-disk /proc/mounts || true").strip(),
    }


def test_the_host_had_less_room_than_the_pull_needs(disk_nearly_full):
    # 40 MiB of new layer, times app_deploy_pull_space_factor (3.5), against about 30 MiB.
    assert 0 < disk_nearly_full["free"] <= FREE_BYTES + 1024 * 1024


def test_a_full_disk_stops_the_deploy_at_the_plan_naming_both_sizes(disk_nearly_full, releases):
    run, full = disk_nearly_full["run"], disk_nearly_full["full"]
    assert run.returncode != 0, run.tail()
    assert [host for host, _ in run.failures()] == [full], run.tail()
    plan = run.play(PLAN)
    message = re.search(
        rf"{full}: not enough disk space to pull \S+:{releases.large.tag}: (.*?)Nothing was changed",
        plan,
        re.S,
    )
    assert message, run.tail()
    said = " ".join(message.group(1).split())
    assert re.search(
        r"[\d.]+ MB free on the filesystem of /var/lib/docker, and the pull needs about 1[45]\d\.\d MB", said
    ), said
    assert "(the host lacks 1 of the image's" in said, said
    assert "times app_deploy_pull_space_factor=3.5 to unpack them" in said, said
    report = run.stdout.partition("DEPLOY STOPPED")[2]
    assert "Switched in this run: none" in report, run.tail()


def test_no_host_switches_when_one_has_no_room(disk_nearly_full):
    run = disk_nearly_full["run"]
    assert run.hosts_in(MIGRATIONS) == [], run.tail()
    assert run.hosts_in(ROLLOUT) == [], run.tail()
    assert disk_nearly_full["after"] == disk_nearly_full["before"]
    assert disk_nearly_full["versions_after"] == disk_nearly_full["versions_before"]


def test_the_other_hosts_serve_while_one_has_no_room(disk_nearly_full):
    stream = disk_nearly_full["stream"]
    assert stream.sent > 0
    assert (stream.failed, stream.failures) == (0, []), f"{stream.failed} of {stream.sent} requests failed"


def test_the_same_deploy_completes_once_space_is_freed(disk_nearly_full, fleet):
    rerun = disk_nearly_full["rerun"]
    assert rerun.returncode == 0, rerun.tail()
    assert fleet.versions() == dict.fromkeys(fleet.names, "v5")
    # The host's Docker data is back on its own disk, with the release it now serves.
    assert disk_nearly_full["mounts_after"] == "0"
