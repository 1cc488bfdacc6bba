"""The deploy's benchmarks, on the local stand-in: no-op deploy, rollout floor, inventory, fan-out,
push to serving. Each returns figures (ratios, goals in deploykit.bench) and the raw measurements
behind them; every pair in a ratio is measured in the same run.

The stand-in is replaced for the run (down, then up with 3 hosts, later 10) and taken down at the
end. What stands in: moto for EC2's and SSM's APIs; everything else (hosts, sshd, Docker, nginx,
the registry, PostgreSQL, ansible-playbook) is real.
"""

from __future__ import annotations

import json
import os
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from deploykit import (
    app_image,
    bench_lb,
    bench_switch,
    codebuild,
    demo,
    network,
    postgres,
    registry,
    standin,
    timeline,
)
from deploykit.system import CACHE, DOCKER, REPORTS, ROOT, SetupError, say

BIN = Path(sys.executable).parent
INVENTORY = "inventory/local"
REPOSITORY = "deploykit/app"
TIMELINES = REPORTS / "bench"
TIMELINE_PNG = ROOT / "docs" / "rollout-timeline.png"
# A canary host first, then every other host at once: with each host switched blue/green behind
# its own nginx, a larger batch costs no capacity, only blast radius, which the canary bounds.
# The canary's bake is a wait the environment chooses, after the first batch only: a 10-host
# rollout would wait it and a 1-host one not. The fan-out compares the work that grows with hosts.
FANOUT_SERIAL = json.dumps({"deploy_serial": [1, "100%"], "deploy_canary_bake_seconds": 0})
# A release that is ready but answers one request in five with a 500 (the e2e fixture), for the
# canary's bake to catch.
FLAKY_CONTEXT = ROOT / "tests" / "e2e" / "fixtures" / "flaky-release"
FANOUT_HOSTS = 10
REPEATS = 3
# The floor: on the host itself, pull the release, start it as app_deploy does, and poll its
# readiness endpoint every 20 ms until it answers 200. Prints the three times as JSON.
_FLOOR_SCRIPT = r"""
import json, subprocess, sys, time, urllib.request
image, env_file, port = sys.argv[1:4]
def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
started = time.monotonic()
run("docker", "pull", "--quiet", image)
pulled = time.monotonic()
run("docker", "run", "--detach", "--name", "deploykit-floor", "--env-file", env_file, "--read-only",
    "--tmpfs", "/tmp", "--publish", f"127.0.0.1:{port}:8000", image)
ran = time.monotonic()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
request = urllib.request.Request(f"http://127.0.0.1:{port}/readyz/", headers={"Host": "localhost"})
while time.monotonic() - ran < 120:
    try:
        if opener.open(request, timeout=2).status == 200:
            break
    except OSError:
        pass
    time.sleep(0.02)
ready = time.monotonic()
print(json.dumps({"pull": pulled - started, "start": ran - pulled, "ready": ready - ran}))
"""


@dataclass
class Run:
    seconds: float
    returncode: int
    output: str
    # CPU the command and its children used (the controller's share), and CPU the whole machine
    # was busy for meanwhile: the stand-in's hosts share this machine's cores with the controller.
    controller_cpu_seconds: float = 0.0
    machine_busy_seconds: float = 0.0


def _machine_busy_seconds() -> float:
    """CPU seconds the machine has been busy since boot, all cores: /proc/stat's user, nice, system,
    irq and softirq (not idle, iowait, or steal, which the hypervisor took). Read directly: psutil
    would be a dependency for five numbers."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in standin.tool_env().items() if not key.startswith("ANSIBLE_")}
    env.update(
        # The stand-in's deploy key and known hosts, as an operator deploys by hand.
        standin.ssh_environment(),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        DEPLOYKIT_ACTOR="bench",
    )
    env.update(extra)
    return env


def _timed(command: Sequence[str], **extra: str) -> Run:
    busy, children, started = _machine_busy_seconds(), _children_cpu_seconds(), time.perf_counter()
    result = subprocess.run(
        list(command), cwd=ROOT, env=_env(**extra), capture_output=True, text=True, check=False, timeout=1800
    )
    return Run(
        time.perf_counter() - started,
        result.returncode,
        result.stdout + result.stderr,
        controller_cpu_seconds=_children_cpu_seconds() - children,
        machine_busy_seconds=_machine_busy_seconds() - busy,
    )


def _checked(run: Run, what: str) -> Run:
    if run.returncode != 0:
        tail = "\n".join(run.output.splitlines()[-40:])
        raise SetupError(f"{what} failed (exit {run.returncode}):\n{tail}")
    return run


def deploy_run(tag: str, *args: str, timeline_file: Path | None = None) -> Run:
    """ansible-playbook deploy.yml of `tag` to the stand-in, whatever its outcome."""
    extra = {"DEPLOYKIT_TIMELINE": str(timeline_file)} if timeline_file else {}
    command = [
        str(BIN / "ansible-playbook"),
        "deploy.yml",
        "-i",
        INVENTORY,
        "-e",
        f"app_deploy_image_tag={tag}",
    ]
    return _timed([*command, *args], **extra)


def deploy(tag: str, *args: str, timeline_file: Path | None = None) -> Run:
    return _checked(deploy_run(tag, *args, timeline_file=timeline_file), f"deploy of {tag}")


def ping(limit: str) -> Run:
    command = [str(BIN / "ansible"), "all", "-i", INVENTORY, "--limit", limit, "-m", "ansible.builtin.ping"]
    return _checked(_timed(command), "ansible -m ping")


class Releases:
    """Releases of the app, each a one-line change to a .py file from the one before (as a
    real push is), built and pushed to the registry stand-in on demand."""

    def __init__(self, scratch: Path) -> None:
        self.context = scratch / "django_app"
        shutil.copytree(ROOT / "django_app", self.context, ignore=shutil.ignore_patterns("__pycache__"))
        self.token = secrets.token_hex(3)
        self.count = 0

    def next(self) -> str:
        self.count += 1
        tag = f"bench-{self.token}-{self.count}"
        views = self.context / "releases" / "views.py"
        views.write_text(views.read_text() + f"\n# benchmark release {tag}\n")
        app_image.build(
            f"{REPOSITORY}:{tag}", version=tag, revision=tag, build_id="bench", context=self.context
        )
        registry.push(f"{REPOSITORY}:{tag}", REPOSITORY, tag)
        return tag


def _docker_exec(host: str, *command: str) -> str:
    result = subprocess.run(
        [DOCKER, "exec", host, *command], capture_output=True, text=True, check=False, timeout=300
    )
    if result.returncode != 0:
        raise SetupError(f"on {host}: {' '.join(command)} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout


def measure_floor(host: str, tag: str) -> dict[str, float]:
    """Pull, start and first ready answer of `tag` on `host`, timed on the host; the image is
    removed again afterwards, so that the deploy pulls the same layers."""
    image = f"{network.GATEWAY}:5443/{REPOSITORY}:{tag}"
    state = json.loads(_docker_exec(host, "cat", "/var/lib/deploykit/app/state.json"))
    try:
        out = _docker_exec(host, "python3", "-c", _FLOOR_SCRIPT, image, state["current"]["env_file"], "8003")
    finally:
        _docker_exec(
            host,
            "sh",
            "-c",
            f"docker rm --force deploykit-floor >/dev/null 2>&1; docker rmi {image} >/dev/null",
        )
    return json.loads(out)


def _median_seconds(action, repeats: int = REPEATS) -> float:
    return statistics.median(action().seconds for _ in range(repeats))


def measure_noop(tag: str) -> tuple[dict[str, float], dict[str, float]]:
    hosts = ",".join(standin.host_name(index) for index in range(1, 4))
    deploy(tag)  # every host now has a record of this release
    noop = _median_seconds(lambda: deploy(tag))
    pinged = _median_seconds(lambda: ping(hosts))
    return {"noop_deploy_ratio": round(noop / pinged, 2)}, {
        "noop_deploy_seconds": round(noop, 2),
        "ping_3_hosts_seconds": round(pinged, 2),
    }


def measure_rollout(tag: str) -> tuple[dict[str, float], dict[str, float]]:
    """The floor on each host, then the deploy of the same release; each host's rollout time is
    its pull plus its turn in the rolling play (deploykit.timeline.host_seconds)."""
    hosts = [standin.host_name(index) for index in range(1, 4)]
    floors = {host: measure_floor(host, tag) for host in hosts}
    TIMELINES.mkdir(parents=True, exist_ok=True)
    timeline_file = TIMELINES / "rollout-timeline.json"
    # Without the canary's bake: a wait the environment chooses, not work of the host's turn.
    run = deploy(tag, "-e", "deploy_canary_bake_seconds=0", timeline_file=timeline_file)
    recorded = timeline.load(timeline_file)
    per_host = timeline.host_seconds(recorded)
    floor = statistics.mean(sum(parts.values()) for parts in floors.values())
    rollout = statistics.mean(per_host[host] for host in hosts)
    timeline.draw(
        recorded,
        TIMELINE_PNG,
        f"One measured rollout to {len(hosts)} hosts (make bench, {time.strftime('%Y-%m-%d')}): "
        f"{rollout:.1f} s per host against a floor of {floor:.1f} s; deploy {run.seconds:.1f} s in all",
    )
    phases: dict[str, list[float]] = {}
    for phase in timeline.phases(recorded):
        phases.setdefault(phase.name, []).append(phase.seconds)
    raw = {
        "rollout_deploy_seconds": round(run.seconds, 2),
        "rollout_per_host_seconds": round(rollout, 2),
        "rollout_floor_seconds": round(floor, 2),
        **{f"rollout_floor_{part}_seconds": round(statistics.mean(f[part] for f in floors.values()), 2)
           for part in ("pull", "start", "ready")},
        **{f"rollout_phase_{name.replace(' ', '_')}_seconds": round(statistics.mean(values), 2)
           for name, values in phases.items()},
    }  # fmt: skip
    return {"rollout_floor_ratio": round(rollout / floor, 2)}, raw


def _graph_hosts(output: str) -> set[str]:
    """The hosts `ansible-inventory --graph` printed (it names a host once under each of its groups)."""
    return set(re.findall(r"^[ |]*--([^@\s]\S*)$", output, re.MULTILINE))


def _inventory_seconds(sources: dict[str, Path], cache: Path, count: int) -> dict[str, tuple[float, float]]:
    """Per inventory source: the median seconds of `ansible-inventory --graph` with the cache off, and
    with it filled. The sources take turns, so a change in the machine's load falls on each alike."""
    cold: dict[str, list[float]] = {name: [] for name in sources}
    cached: dict[str, list[float]] = {name: [] for name in sources}

    def graph(name: str, **extra: str) -> Run:
        command = [str(BIN / "ansible-inventory"), "-i", str(sources[name]), "--graph"]
        run = _checked(_timed(command, **extra), f"ansible-inventory -i {sources[name]}")
        listed = len(_graph_hosts(run.output))
        if listed != count:
            raise SetupError(f"{sources[name]} listed {listed} hosts for {count} instances")
        return run

    for _ in range(REPEATS):
        for name in sources:
            # No run reads what an earlier one (of this bench or the last) left in the cache: the
            # tenth cold run does the first one's work, and the filling below starts empty.
            shutil.rmtree(cache, ignore_errors=True)
            cold[name].append(graph(name).seconds)
    for name in sources:
        graph(name, ANSIBLE_INVENTORY_CACHE="true")  # fills the cache
    for _ in range(REPEATS):
        for name in sources:
            cached[name].append(graph(name, ANSIBLE_INVENTORY_CACHE="true").seconds)
    return {name: (statistics.median(cold[name]), statistics.median(cached[name])) for name in sources}


def measure_inventory(count: int = 1000) -> tuple[dict[str, float], dict[str, float]]:
    """`ansible-inventory --graph` over `count` instances registered in the stand-in, without and
    with the inventory cache, against the aws_ec2 plugin alone on the same instances (the bare
    inventory: no hostnames, compose or groups), and moto's own answer to the same query."""
    standin.register_fake_instances(count)
    try:
        sources = {"project": standin.bench_inventory(), "bare": standin.bench_bare_inventory()}
        # Both files name this directory (.cache/ansible-inventory, relative to ROOT), each its own key.
        seconds = _inventory_seconds(sources, CACHE / "ansible-inventory", count)
        started = time.perf_counter()
        answered = len(standin.instances(standin.ec2_client(), standin.BENCH_ENV, ("running",)))
        api = time.perf_counter() - started
        assert answered == count
    finally:
        standin.register_fake_instances(0)
    (cold, cached), (bare_cold, bare_cached) = seconds["project"], seconds["bare"]
    return {
        "inventory_1000_seconds": round(cold, 2),
        "inventory_1000_cached_seconds": round(cached, 2),
        "inventory_1000_vs_bare_ratio": round(cold / bare_cold, 2),
        "inventory_1000_cached_vs_bare_ratio": round(cached / bare_cached, 2),
    }, {
        "inventory_1000_bare_seconds": round(bare_cold, 2),
        "inventory_1000_bare_cached_seconds": round(bare_cached, 2),
        "inventory_1000_moto_describe_seconds": round(api, 2),
    }


def measure_fanout(releases: Releases) -> tuple[dict[str, float], dict[str, float]]:
    """A release to 10 hosts ÷ a release to 1 host, both with the canary-then-rest batches."""
    standin.up(FANOUT_HOSTS)
    settled = releases.next()
    # The seven new hosts get Docker, nginx and the app; not measured.
    deploy(settled, "-e", json.dumps({"deploy_serial": ["100%"]}))
    TIMELINES.mkdir(parents=True, exist_ok=True)
    ten_file, one_file = TIMELINES / "fanout-10-timeline.json", TIMELINES / "fanout-1-timeline.json"
    ten = deploy(releases.next(), "-e", FANOUT_SERIAL, timeline_file=ten_file)
    one = deploy(
        releases.next(), "-e", FANOUT_SERIAL, "--limit", standin.host_name(1), timeline_file=one_file
    )
    raw = {"fanout_10_hosts_seconds": round(ten.seconds, 2), "fanout_1_host_seconds": round(one.seconds, 2)}
    # Whether the machine's cores, shared by the controller and every host, were the limit: the
    # share of all cores busy during each deploy, and the CPU the controller used of it.
    cores = os.cpu_count() or 1  # /proc/stat's first line sums every core
    for label, run in (("10", ten), ("1", one)):
        raw[f"fanout_{label}_cpu_busy_share"] = round(run.machine_busy_seconds / (run.seconds * cores), 2)
        raw[f"fanout_{label}_controller_cpu_seconds"] = round(run.controller_cpu_seconds, 1)
        raw[f"fanout_{label}_machine_cpu_seconds"] = round(run.machine_busy_seconds, 1)
    # Where each deploy's time went, play by play (the plan, the migrations, the rolling play).
    for label, path in (("10", ten_file), ("1", one_file)):
        for play, (start, end) in timeline.play_spans(timeline.load(path)).items():
            raw[f"fanout_{label}_{timeline.PLAY_KEYS.get(play, 'other')}_seconds"] = round(end - start, 2)
    # What one more host costs the controller: the shared part that bounds a fleet's size.
    per_host = (ten.controller_cpu_seconds - one.controller_cpu_seconds) / (FANOUT_HOSTS - 1)
    return {
        "fanout_10_ratio": round(ten.seconds / one.seconds, 2),
        "controller_cpu_seconds_per_host": round(per_host, 2),
    }, raw


def measure_push() -> tuple[dict[str, float], dict[str, float]]:
    """`git push` of a one-file change to the local deploy remote -> every host serving it, with
    the build's phases; caches are warmed by a first push of HEAD."""
    fleet = [host for host in standin.containers().values() if host.state == "running"]
    demo.push()  # warm: the remote has HEAD built and deployed
    with tempfile.TemporaryDirectory(prefix="deploykit-bench-push-") as scratch:
        clone = Path(scratch) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        views = clone / "django_app" / "releases" / "views.py"
        # Two blank lines first, as `ruff format --check` (in the build's pre_build) wants them; a
        # value no earlier run pushed, so no layer of an earlier run's image stands in for the build.
        change = f"\n\n# a one-file change for the push benchmark: {secrets.token_hex(8)}\n"
        views.write_text(views.read_text() + change)
        git = ["git", "-C", str(clone), "-c", "user.name=bench", "-c", "user.email=bench@deploykit.invalid"]
        subprocess.run(
            [*git, "commit", "--quiet", "--all", "--message", "Benchmark: a one-file change"], check=True
        )
        commit = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout
        tag = commit.strip()[:12]
        timeline_file = TIMELINES / "push-deploy-timeline.json"
        env = standin.tool_env({**os.environ, "DATABASE_URL": postgres.database_url()})
        env["DEPLOYKIT_TIMELINE"] = str(timeline_file)
        started = time.perf_counter()
        pushed = subprocess.run(
            [*git, "push", "--force", str(demo.REMOTE), "HEAD:refs/heads/main"],
            env=env, capture_output=True, text=True, check=False, timeout=1800,
        )  # fmt: skip
        serving = {host.name: demo.serving(host) for host in fleet}
        total = time.perf_counter() - started
    if pushed.returncode != 0 or set(serving.values()) != {tag}:
        tail = "\n".join((pushed.stdout + pushed.stderr).splitlines()[-40:])
        raise SetupError(f"the pushed change is not served everywhere ({serving}):\n{tail}")
    build = json.loads(codebuild.build_summaries(codebuild.load_project().name)[-1].read_text())
    recorded = timeline.load(timeline_file)
    deploy_seconds = recorded["ended"] - recorded["started"]
    raw = {
        "push_build_seconds": round(build["durationInSeconds"], 2),
        "push_deploy_seconds": round(deploy_seconds, 2),
        **pre_build_checks(Path(build["logFile"]).read_text(errors="replace")),
        **{f"push_phase_{phase['phaseType'].lower()}_seconds": round(phase["durationInSeconds"], 2)
           for phase in build["phases"] if phase["durationInSeconds"]},
    }  # fmt: skip
    return {
        "push_to_serving_seconds": round(total, 1),
        "deploy_share_of_pipeline": round(deploy_seconds / total, 2),
    }, raw


# What buildspec.yml's pre_build prints for each of its checks (linters and tests, run at once).
_CHECK_LINE = re.compile(r"^check (\S+): exit (\d+) in (\d+(?:\.\d+)?) s$", re.MULTILINE)


def pre_build_checks(log: str) -> dict[str, float]:
    """Each pre_build check's seconds, from a build's log: push_pre_build_<check>_seconds."""
    return {
        f"push_pre_build_{name.replace('-', '_')}_seconds": float(seconds)
        for name, _status, seconds in _CHECK_LINE.findall(log)
    }


def flaky_release(base_tag: str) -> str:
    """`base_tag`'s image with the flaky fixture on top, pushed under a tag no run used before."""
    tag = f"{base_tag}-flaky"
    app_image.build(
        f"{REPOSITORY}:{tag}",
        version=tag,
        revision=tag,
        build_id="bench",
        context=FLAKY_CONTEXT,
        base_image=f"{REPOSITORY}:{base_tag}",
    )
    registry.push(f"{REPOSITORY}:{tag}", REPOSITORY, tag)
    return tag


def measure_canary(releases: Releases) -> tuple[dict[str, float], dict[str, float]]:
    """A flaky release under a stream through the load balancer: from the canary's switch (its turn's
    measured steps) to the end of the verdict that starts its switch back (the deploy's timeline)."""
    tag = flaky_release(releases.next())
    TIMELINES.mkdir(parents=True, exist_ok=True)
    path = TIMELINES / "canary-timeline.json"
    run, stream = bench_lb.under_stream(lambda: deploy_run(tag, timeline_file=path))
    if "The canary failed its bake" not in run.output:
        tail = "\n".join(run.output.splitlines()[-40:])
        raise SetupError(f"the canary's bake did not catch the flaky release {tag}:\n{tail}")
    recorded = timeline.load(path)
    switched = (
        min(phase.end for phase in timeline.phases(recorded) if phase.name == "switch") + recorded["started"]
    )
    judged = max(event["end"] for event in recorded["tasks"] if event["task"] == timeline.CANARY_VERDICT_TASK)
    settings = yaml.safe_load((ROOT / INVENTORY / "group_vars" / "all" / "environment.yml").read_text())
    window = settings["deploy_canary_bake_seconds"]
    return {"canary_bake_detection_seconds": round(judged - switched, 2)}, {
        "canary_bake_window_seconds": float(window),
        "canary_bake_requests": stream.sent,
        "canary_bake_failed_requests": stream.failed,
    }


GROUPS = ("noop", "rollout", "push", "lb", "switch", "canary", "inventory", "fanout")


def measure_all(
    on_result: Callable[[dict[str, float], dict[str, float]], None], groups: Sequence[str] = GROUPS
) -> None:
    """Measure `groups`, handing each group's figures and raw measurements to `on_result`."""

    def keep(result: tuple[dict[str, float], dict[str, float]]) -> None:
        on_result(*result)
        for key, value in result[0].items():
            say(f"{key} = {value}")

    say("replacing the stand-in with 3 fresh hosts")
    standin.down()
    standin.up(3)
    try:
        with tempfile.TemporaryDirectory(prefix="deploykit-bench-") as scratch:
            releases = Releases(Path(scratch))
            first = releases.next()
            if {"noop", "rollout", "push", "lb", "switch", "canary", "fanout"} & set(groups):
                say("first deploy (Docker, nginx and the app on fresh hosts; not measured)")
                deploy(first)
            if "noop" in groups:
                say("no-op deploy against ansible -m ping")
                keep(measure_noop(first))
            if "rollout" in groups:
                say("rollout of a one-line change against its floor")
                keep(measure_rollout(releases.next()))
            if "push" in groups:
                say("git push of a one-file change to every host serving it")
                keep(measure_push())
            if "lb" in groups:
                say("through the load balancer: a rollout, then a host that stops answering")
                tag = releases.next()
                rollout, rollout_raw = bench_lb.measure_rollout(lambda: deploy(tag))
                lost, lost_raw = bench_lb.measure_lost_host(standin.host_name(3))
                keep((rollout | lost, rollout_raw | lost_raw))
            if "switch" in groups:
                say("per-host request streams during a rollout: the old release after the new one")
                tag = releases.next()
                keep(bench_switch.measure(lambda: deploy(tag)))
            if "canary" in groups:
                say("a flaky release caught by the canary's bake, under a stream through the load balancer")
                keep(measure_canary(releases))
            if "inventory" in groups:
                say("inventory of 1000 instances")
                keep(measure_inventory())
            if "fanout" in groups:
                say(f"fan-out to {FANOUT_HOSTS} hosts")
                keep(measure_fanout(releases))
    finally:
        standin.down()
