"""`make bench`: measured ratios, written to reports/bench.json and docs/benchmarks.md.

Each figure is a ratio of two measurements taken in the same run on the same machine, so it
says something about the design rather than about how fast this machine happened to be.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deploykit import app_image
from deploykit.system import DOCKER, REPORTS, ROOT, run, say

BENCH_JSON = REPORTS / "bench.json"
NOTES = """## One measured rollout

![The rollout of the `rollout_floor_ratio` measurement, host by host](rollout-timeline.png)

Drawn by `make bench` (`deploykit/timeline.py`) from the task times that the `deploy_timeline`
callback recorded during that deploy (`reports/bench/rollout-timeline.json`): the plan prepares
every host at once (login, space check, pull and environment file: one module run per host), the
migrations run once, then each host takes its turn:
start the new release beside the old one, the readiness gate, the switch of nginx, the drain
(the connections already made to the old release finishing), the old release's graceful
stop, the app's own deploy record and the prune, all one module run that times its own steps
(`rollout_phase_*_seconds`). The grey rest of each turn is Ansible's part of that run and the
turn's other tasks: the smoke check through nginx, which then writes the host's deploy record (one
module run).

## The figures not met, and what the measurements say about each

The values are in the table above and under "Measurements behind the figures" below, from the same run.

- `rollout_floor_ratio`: a host's turn (`rollout_phase_start_seconds` + `_gate_` + `_switch_` +
  `_drain_` + `_stop_old_` + `_record_` + `_prune_`) is already longer than twice the floor
  (`rollout_floor_seconds`) by itself: the floor starts a container and waits for its first ready
  answer, where the turn also stops the old release gracefully and records the deploy in the app's
  history, steps the goal's floor leaves out. `rollout_phase_pull_seconds`, the plan's one module
  run on the host, also logs in and reads the manifest for the space check (two registry round
  trips the floor's `rollout_floor_pull_seconds` does not make) and writes the environment file.
  The rest of `rollout_per_host_seconds` is Ansible: the turn's and the smoke check's module runs
  starting on the host, and the tasks around them.
- `controller_cpu_seconds_per_host`: a host now costs the plan two module runs (its read and its
  preparation) and the rolling play two (the turn and the smoke check, which writes the host's
  record), with about twenty tasks around them that run on the controller alone (includes, facts,
  assertions, the role's argument validation). Each task costs the controller a forked worker and
  the templating of its arguments; those tasks are most of what is left.
- `fanout_10_ratio`: `fanout_10_cpu_busy_share` is close to 1: the ten hosts, the registry and the
  controller share this machine's two cores (`fanout_10_machine_cpu_seconds` ÷ 2 is most of
  `fanout_10_hosts_seconds`). On EC2 each host brings its own CPU; what is shared is the
  controller's part, above.
- `noop_deploy_ratio`: a deploy that changes nothing still lists the fleet, takes and releases the
  lock (controller only), reads every host in one module run and writes the summary;
  `ansible -m ping` does only the read. Since the deploy notices (plugins/callback/deploy_notice.py),
  it also loads boto3 in the controller's main process and makes one STS call and two SNS
  publishes, and the plan checks each host's maintenance flag (in the same read): the run before
  them measured 3.93 s, this one `noop_deploy_seconds`.
- `deploy_share_of_pipeline`: the build got shorter (pre_build's checks run at once, and
  `push_pre_build_ansible_lint_seconds`, the longest, reads only what the build deploys), so the
  deploy is now the larger share; `push_deploy_seconds` is three hosts' turns one after another
  (`deploy_serial: 1`) after the checks and the plan, and the canary's bake after the first of
  them: the local environment's 5 s (`deploy_canary_bake_seconds`), a deliberate wait, plus the
  sampling of three hosts' access logs (about 1 s; reports/bench/push-deploy-timeline.json).
- `inventory_1000_seconds` and `inventory_1000_cached_seconds`: `inventory_1000_moto_describe_seconds`
  is most of the first (the stand-in answers DescribeInstances for 1,000 instances slowly; EC2
  does not); the cached figure is mostly the aws_ec2 plugin's own work, which the bare file takes
  too (`inventory_1000_bare_cached_seconds` is above the 1 s goal by itself).
- `inventory_1000_cached_vs_bare_ratio` (when above its goal): a ratio of two medians of about
  two seconds each, which runs on this machine with the same inventory file have put on either
  side of 1.5; the file is as the section below describes. The uncached ratio, dominated by
  moto's answer, is well within its goal.

## What got the deploy figures where they are

Ansible's settings (`ansible.cfg`): SSH `pipelining` (a module run is one SSH round trip, no
temporary files), `ControlPersist` (one SSH connection per host for the whole run, and across
runs within 120 s; the local inventory gives each instance its own control socket),
`gathering = smart` with a JSON fact cache (facts are gathered once per host and hour, and not at
all by the plays that do not need them), `forks = 20` (more than the hosts of a batch), the
`linear` strategy (the plan must finish on every host before any host switches). Mitogen was
tried by hand and left out: it shortens each host's turn, not the plan or the no-op deploy, which
are bound by the controller, and it is one more moving part between a deploy and its hosts.

The design matters more than the settings:

- **The plan**: every host is read and prepared at once, before any host switches, so the pulls
  of a rollout run in parallel; a host that already serves the release with the configuration it
  was last deployed with is not touched again (`playbooks/tasks/plan.yml`). That is what makes a
  no-op deploy cost a few module runs per host.
- **One module run reads a host** (`roles/app_deploy/library/app_deploy_host_info.py`): the
  upstream link, the state file, the containers, the image and the deploy record, instead of five
  module runs.
- **Pull only what is missing** (`app_deploy_pull_policy: missing`): a tag already on the host needs
  no registry login and no pull.
- **One module run prepares a host** (`roles/app_deploy/library/app_deploy_prepare.py`): the
  environment's check, the registry login, the pull's space check, the pull, the release's
  identity and its environment file, where six module runs were.
- **One module run checks a switched host** (`plugins/modules/deploy_smoke_check.py`): the smoke
  check through nginx, then the host's deploy record, where three or four were.
- **A host's turn is one module run** (`roles/app_deploy/library/app_deploy_turn.py`): remove
  leftovers, start the new release, gate it through its socket, rename a link to its socket over
  the one nginx connects to (no nginx reload), write the state, wait for exactly the connections
  already made to the old release (the drain takes as long as the requests in flight,
  `rollout_phase_drain_seconds`, not a fixed time), stop the old release and record the deploy in
  the app's history: one module run where ten were.

Where the time still goes: every module run costs a few hundred milliseconds of CPU on a host
(Python compiling Ansible's module code from its zip on every run) and on the controller, and a
host's turn in the rolling play has one besides the turn itself (the smoke check, which writes the
host's deploy record), and the plan two (the read of the host and its preparation). The floor,
measured on the host itself with nothing but `docker pull`, `docker run` and a 20 ms readiness
poll, is far below that: the
registry is on the same machine and the app is ready in well under a second. `rollout_floor_ratio`
is therefore mostly the cost of running the switch as Ansible tasks; on AWS, where a pull from ECR
takes seconds, the same overhead is a smaller share.

`inventory_1000_seconds` includes moto's own answer to the inventory's DescribeInstances call
(`inventory_1000_moto_describe_seconds`, measured in the same run): the stand-in is much slower
than EC2 at listing 1,000 instances. The cached figure involves no API call at all; it is the
aws_ec2 plugin and ansible-core working through 1,000 instances, plus `ansible-inventory`'s own
start. What the project's file adds to that is measured against a bare file on the same instances
(`deploykit.standin.bench_bare_inventory()`: the same plugin, regions, filters and cache settings,
no `hostnames`, `compose` or groups): the two files take turns, every run without the cache starts
from an emptied cache directory, and each figure is a median of 3 (`inventory_1000_bare_seconds`,
`inventory_1000_bare_cached_seconds`, and the two `_vs_bare_ratio` figures). Profiled
(`python -m cProfile` over `ansible-inventory`) and bisected one setting at a time, nearly all of
the difference is ansible-core evaluating the file's expressions, each compiled again for every
instance (Jinja's `compile_expression` keeps no cache); the `hostnames` list costs nothing
measurable. The `env_` group, which no play targets, was dropped with its expression. The two
left serve every deploy: the `role_` group that plays target and `compose`'s `ansible_host`, the
private address SSH goes to. Moving `ansible_host` into group_vars as a template would take it out
of the listing only to compile it again on every task of every host, where Ansible templates the
connection's variables. Of the plugin's own time, most goes to turning each instance's attributes
into snake_case variables and setting them; none of that is this project's code.

`push_to_serving_seconds` is a push to the local remote of a commit that changes one `.py` file,
until every host serves it: `push_phase_*_seconds` are the build's phases as the local CodeBuild
runner timed them (`install` reuses the tools' virtualenv: the requirements did not change),
`push_pre_build_<check>_seconds` each of pre_build's checks, which run at once (the build log's
`check <name>: exit <status> in <seconds> s` lines), and
`push_deploy_seconds` is `ansible-playbook deploy.yml` from its first task to its last, which
`deploy_share_of_pipeline` divides by the whole. With `deploy_serial: 1` the deploy is three
turns one after another; a larger batch, or a faster turn, is what lowers its share.

`lb_*` are users' requests to the environment's public address (HTTPS through the stand-in's
load balancer, HAProxy configured from the target group moto holds), 80 a second on new
connections. `lb_rollout_failed_requests` counts failures during a 3-host rollout. For
`lb_lost_host_*`, one host freezes (`docker pause`: it accepts connections and never answers) for
the detection window plus 10 s: the load balancer keeps sending it its share until
`unhealthy_threshold` health checks have failed, so failures inside that window are expected and
bounded; `lb_lost_host_detection_seconds` is when the last failed request was sent after the fault,
against the bound `lb_detection_window_seconds` (unhealthy threshold x (interval + timeout), from
`roles/aws_load_balancer/defaults/main.yml`, plus two seconds for the checks' scheduling). An ALB with
the same settings takes a host out in a window of the same size; how HAProxy's and ALB's check
schedules compare within it was not measured here.

`fanout_10_ratio` uses `deploy_serial: [1, "100%"]`: a canary, then every other host at once,
without the canary's bake (`deploy_canary_bake_seconds=0`): a 10-host rollout would wait the bake
and a 1-host one not, and the fan-out compares the work that grows with the hosts.
`rollout_floor_ratio` leaves the bake out for the same reason: it is a wait, not the host's work.
The other deploy benchmarks run with the local environment's bake (5 s after the first batch of
three hosts); `push_to_serving_seconds` includes it, as a push to the local environment waits it.
With each host switched blue/green behind its own nginx, a bigger batch takes no capacity away,
only widens what a bad release reaches, and the canary bounds that. `fanout_*_plan_seconds`,
`fanout_*_rollout_seconds` and the like split each deploy by play. On this machine the ten hosts
are containers sharing its cores with the controller, so the ratio measures those cores as much
as the deploy: `fanout_10_cpu_busy_share` is the share of all cores busy during the 10-host
deploy, `fanout_10_machine_cpu_seconds` the CPU the machine spent on it (hosts, registry and
controller) and `fanout_10_controller_cpu_seconds` the controller's part. A share near 1 means
the deploy waited for CPU; on EC2 each host brings its own, and only the controller's part is
shared.
"""
DOC = ROOT / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Figure:
    key: str
    meaning: str
    # The goal: at most `limit`, or below it when `strict`.
    limit: float
    strict: bool = False

    @property
    def goal(self) -> str:
        return f"{'<' if self.strict else '≤'} {self.limit:g}"

    def met(self, value: float) -> bool:
        return value < self.limit if self.strict else value <= self.limit


FIGURES = [
    Figure(
        "image_size_ratio",
        "size of the app image ÷ a naive single-stage build of the same app on the same base "
        "(bench/naive.Dockerfile: build tools and pip's cache left in)",
        0.5,
    ),
    Figure(
        "rebuild_time_ratio",
        "rebuild after a one-line change to a .py file ÷ a cold build with no cache",
        0.15,
    ),
    Figure(
        "noop_deploy_ratio",
        "a deploy of the release already running on 3 hosts ÷ `ansible -m ping` of the same hosts "
        "(medians of 3)",
        2,
    ),
    Figure(
        "rollout_floor_ratio",
        "each host's rollout (its preparation in the plan: login, pull and environment file + its turn in "
        "the rolling play) ÷ the floor on "
        "that host (pull of the changed layers + container start + first ready answer, timed on the host)",
        2,
    ),
    Figure(
        "lb_rollout_failed_requests",
        "requests to the public address (HTTPS through the load balancer) that failed in a 3-host rollout",
        0,
    ),
    Figure(
        "lb_lost_host_failed_after_window_requests",
        "requests through the load balancer that failed though sent after a frozen host's detection window "
        "(`lb_detection_window_seconds`); those inside it are `lb_lost_host_failed_requests`",
        0,
    ),
    Figure(
        "switch_old_after_new",
        "answers from the old release to requests sent to a host after its first answer from the new one "
        "(a stream to each host's nginx during a 3-host rollout, summed over the hosts)",
        0,
    ),
    Figure(
        "canary_bake_detection_seconds",
        "a release that answers one request in five with a 500, under requests through the load balancer: "
        "from the canary's switch to the verdict that switches it back, against the local bake window "
        "(`canary_bake_window_seconds`, 5 s) plus 5 s to count and judge",
        10,
    ),
    Figure(
        "inventory_1000_seconds",
        "`ansible-inventory --graph` of 1,000 instances registered in the stand-in (moto), no cache "
        "(median of 3)",
        5,
    ),
    Figure(
        "inventory_1000_cached_seconds",
        "the same with the inventory cache filled (ANSIBLE_INVENTORY_CACHE=true)",
        1,
    ),
    Figure(
        "inventory_1000_vs_bare_ratio",
        "`inventory_1000_seconds` ÷ the same of a bare aws_ec2 inventory on the same instances (same "
        "regions, filters and cache; no `hostnames`, `compose` or groups): `inventory_1000_bare_seconds`",
        1.5,
    ),
    Figure(
        "inventory_1000_cached_vs_bare_ratio",
        "the same with the cache filled (`inventory_1000_cached_seconds` ÷ "
        "`inventory_1000_bare_cached_seconds`)",
        1.5,
    ),
    Figure(
        "fanout_10_ratio",
        "a release to 10 hosts ÷ a release to 1 host, both in batches of a canary and then the rest",
        2.5,
    ),
    Figure(
        "controller_cpu_seconds_per_host",
        "CPU the controller (ansible-playbook and its workers) spends per host: "
        "(`fanout_10_controller_cpu_seconds` - `fanout_1_controller_cpu_seconds`) ÷ 9, the same release "
        "process to 10 hosts and to 1",
        1,
    ),
    Figure(
        "push_to_serving_seconds",
        "`git push` of a one-file change to the local deploy remote → every host serving it (lint, tests, "
        "build, push, deploy; warm caches)",
        45,
    ),
    Figure(
        "deploy_share_of_pipeline",
        "the deploy's share of that time (ansible-playbook from its first to its last task)",
        0.35,
    ),
]


def _image_size(tag: str) -> int:
    return int(run([DOCKER, "image", "inspect", "--format", "{{.Size}}", tag]).stdout)


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def measure_image() -> tuple[dict[str, float], dict[str, float]]:
    """Return the figures and the raw measurements behind them."""
    with tempfile.TemporaryDirectory(prefix="deploykit-bench-") as scratch:
        context = Path(scratch) / "django_app"
        shutil.copytree(ROOT / "django_app", context, ignore=shutil.ignore_patterns("__pycache__"))
        build = dict(tag="deploykit/app:bench", version="bench", revision="bench", context=context)
        say("cold build of the app image (no cache)")
        cold = _timed(lambda: app_image.build(**build, no_cache=True))
        views = context / "releases" / "views.py"
        # A value no earlier run wrote: the same line each run would find the image of the last
        # run's rebuild in the build cache, and time a cache hit instead of a rebuild.
        views.write_text(
            views.read_text() + f"\n# a one-line change for the rebuild benchmark: {secrets.token_hex(8)}\n"
        )
        say("rebuild after a one-line change")
        rebuild = _timed(lambda: app_image.build(**build))
        say("naive single-stage build of the same app")
        naive_tag = "deploykit/app:bench-naive"
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        ca = Path("/etc/ssl/certs/ca-certificates.crt")
        secret = ["--secret", f"id=ca,src={ca}"] if ca.exists() else []
        run(
            [
                DOCKER,
                "build",
                "--file",
                str(ROOT / "bench" / "naive.Dockerfile"),
                *secret,
                "--build-arg",
                f"BASE_IMAGE={app_image.LOCAL_BASE_IMAGE}",
                "--tag",
                naive_tag,
                str(context),
            ],
            env=env,
        )
    app_size, naive_size = _image_size("deploykit/app:bench"), _image_size(naive_tag)
    raw = {
        "image_bytes": app_size,
        "naive_image_bytes": naive_size,
        "cold_build_seconds": round(cold, 1),
        "rebuild_seconds": round(rebuild, 1),
    }
    figures = {
        "image_size_ratio": round(app_size / naive_size, 3),
        "rebuild_time_ratio": round(rebuild / cold, 3),
    }
    return figures, raw


def _write(results: dict[str, float]) -> None:
    REPORTS.mkdir(exist_ok=True)
    merged = json.loads(BENCH_JSON.read_text()) if BENCH_JSON.exists() else {}
    merged.update(results)
    BENCH_JSON.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    rows = []
    for figure in FIGURES:
        if figure.key in merged:
            value = merged[figure.key]
            verdict = "met" if figure.met(value) else "**not met**"
            rows.append(f"| `{figure.key}` | {value} | {figure.goal} | {verdict} | {figure.meaning} |")
    raw = [
        f"| `{key}` | {value} |"
        for key, value in sorted(merged.items())
        if key not in {figure.key for figure in FIGURES}
    ]
    today = datetime.date.today().isoformat()
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(
        "# Benchmarks\n\n"
        f"Measured by `make bench` on {today}, on a machine with {os.cpu_count()} cores "
        f"({platform.system()}, Python {platform.python_version()}). "
        "Where a figure is a ratio, both of its measurements were taken in the same run, so it "
        "describes the design more than the machine; the figures in seconds are this machine's. Raw "
        "figures are in `reports/bench.json`, the rollout's task times in `reports/bench/`.\n\n"
        "| figure | value | goal | | what it compares |\n| --- | --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + "\n\n"
        + NOTES
        + "\n## Measurements behind the figures\n\n| measurement | value |\n| --- | --- |\n"
        + "\n".join(raw)
        + "\n"
    )


def run_all(parts: tuple[str, ...] = ("image", "deploy")) -> None:
    """Measure `parts`: "image", "deploy" (every deploy benchmark) or single ones of bench_deploy.GROUPS."""
    # Figures of parts not measured this time are kept from the last run.
    results: dict[str, float] = json.loads(BENCH_JSON.read_text()) if BENCH_JSON.exists() else {}
    figures: dict[str, float] = {}
    if "image" in parts:
        image_figures, raw = measure_image()
        figures |= image_figures
        results |= image_figures | raw
        _write(results)
    from deploykit import bench_deploy

    groups = (
        bench_deploy.GROUPS if "deploy" in parts else [part for part in parts if part in bench_deploy.GROUPS]
    )
    if groups:

        def keep(deploy_figures: dict[str, float], raw: dict[str, float]) -> None:
            figures.update(deploy_figures)
            results.update(deploy_figures | raw)
            _write(results)

        bench_deploy.measure_all(keep, groups)
    _write(results)
    say(f"wrote {BENCH_JSON.relative_to(ROOT)} and {DOC.relative_to(ROOT)}")
    for key, value in figures.items():
        say(f"{key} = {value}")
