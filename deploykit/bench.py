"""`make bench`: measured ratios, written to reports/bench.json and docs/benchmarks.md.

Each figure is a ratio of two measurements taken in the same run on the same machine, so it
says something about the design rather than about how fast this machine happened to be.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deploykit import app_image
from deploykit.system import DOCKER, REPORTS, ROOT, run, say

BENCH_JSON = REPORTS / "bench.json"
DOC = ROOT / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Figure:
    key: str
    meaning: str
    goal: str
    met: Callable[[float], bool]


FIGURES = [
    Figure(
        "image_size_ratio",
        "size of the app image ÷ a naive single-stage build of the same app on the same base "
        "(bench/naive.Dockerfile: build tools and pip's cache left in)",
        "≤ 0.5",
        lambda value: value <= 0.5,
    ),
    Figure(
        "rebuild_time_ratio",
        "rebuild after a one-line change to a .py file ÷ a cold build with no cache",
        "≤ 0.15",
        lambda value: value <= 0.15,
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
        views.write_text(views.read_text() + "\n# a one-line change for the rebuild benchmark\n")
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
        "Every figure is a ratio of two measurements taken in the same run, so it describes the design "
        "more than the machine. Raw figures are in `reports/bench.json`.\n\n"
        "| figure | value | goal | | what it compares |\n| --- | --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + "\n\n## Measurements behind the ratios\n\n| measurement | value |\n| --- | --- |\n"
        + "\n".join(raw)
        + "\n"
    )


def run_all() -> None:
    figures, raw = measure_image()
    _write({**figures, **raw})
    say(f"wrote {BENCH_JSON.relative_to(ROOT)} and {DOC.relative_to(ROOT)}")
    for key, value in figures.items():
        say(f"{key} = {value}")
