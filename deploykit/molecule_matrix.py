"""Every Molecule scenario on every Debian release of the fleet: what `make molecule` runs.

    python -m deploykit.molecule_matrix [--distro DISTRO ...] [--jobs N]

`molecule test -s SCENARIO` runs one scenario on one distro (MOLECULE_DISTRO). This runs every
scenario under molecule/ on every host image of deploykit/images.py (Debian 12 and Debian 13),
the full test sequence each time, idempotence included. The distros run side by side (--jobs, or
DEPLOYKIT_MOLECULE_JOBS; 1 runs them one after the other), each scenario after scenario. Two runs
at once must share nothing that either changes: container names carry the distro (molecule.yml),
each (distro, scenario) has its own Molecule ephemeral directory, each distro its own moto port
(DEPLOYKIT_MOLECULE_MOTO_PORT) and registry repository (molecule/app_deploy/release_images.py).

Each run's output goes to reports/molecule/<distro>-<scenario>.log; the console gets one line per
finished run and, for a failed one, the end of its log.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from threading import Lock

from deploykit import images
from deploykit.system import DOCKER, REPORTS, ROOT, SetupError, main_guard, run

SCENARIOS_DIR = ROOT / "molecule"
LOG_DIR = REPORTS / "molecule"
# Outside the project, as Molecule's own default is: testinfra gets the inventory's path as an
# argument, and pytest would take a path under the project as a reason to use the project's
# pyproject.toml (importlib imports) over the scenario's tests/pytest.ini, and fail to import the
# scenario's helpers. One directory per checkout, so that two checkouts never share one.
_CHECKOUT_ID = hashlib.sha256(bytes(ROOT)).hexdigest()[:8]
EPHEMERAL_DIR = Path(tempfile.gettempdir()) / f"deploykit-molecule-{_CHECKOUT_ID}"
# molecule/app_deploy/molecule.yml's default; the next distro takes the next port.
FIRST_MOTO_PORT = 5055
# A scenario takes about 5 minutes alone and up to twice that beside another; far past that, it hangs.
SCENARIO_TIMEOUT_SECONDS = 40 * 60
# A failed run's log is long: the console gets its error lines and Molecule's closing summary.
FAILURE_LINE = re.compile(
    r"^(fatal: |failed: |E  |ERROR |CRITICAL )|^FAILED (?!- RETRYING)|Executed: Failed|ImportError"
)
FAILED_LOG_ERROR_LINES = 40
FAILED_LOG_TAIL_LINES = 25

_print_lock = Lock()


@dataclass(frozen=True)
class Result:
    distro: str
    scenario: str
    returncode: int | None  # None: not run, an earlier scenario of its distro failed
    seconds: float
    log: Path

    @property
    def passed(self) -> bool:
        return self.returncode == 0

    @property
    def verdict(self) -> str:
        if self.returncode is None:
            return "not run"
        if self.returncode == 0:
            return "passed"
        return "timed out" if self.returncode == -1 else f"failed (exit {self.returncode})"


def scenarios() -> list[str]:
    """The scenarios `molecule test --all` would run, in its order."""
    return sorted(path.parent.name for path in SCENARIOS_DIR.glob("*/molecule.yml"))


def _say(message: str) -> None:
    with _print_lock:
        print(f"molecule: {message}", flush=True)


def _environment(distro: str, index: int, scenario: str) -> dict[str, str]:
    return {
        **os.environ,
        "MOLECULE_DISTRO": distro,
        "MOLECULE_EPHEMERAL_DIRECTORY": str(EPHEMERAL_DIR / distro / scenario),
        "DEPLOYKIT_MOLECULE_MOTO_PORT": str(FIRST_MOTO_PORT + index),
        # Plain logs: the files are read, not watched in a terminal.
        "NO_COLOR": "1",
        "PY_COLORS": "0",
        "ANSIBLE_FORCE_COLOR": "0",
    }


def _run_scenario(distro: str, index: int, scenario: str) -> Result:
    log = LOG_DIR / f"{distro}-{scenario}.log"
    started = time.monotonic()
    with log.open("w") as output:
        # Its own process group, so that a timeout stops ansible-playbook and pytest with it.
        process = subprocess.Popen(
            ["molecule", "test", "--scenario-name", scenario],
            cwd=ROOT,
            env=_environment(distro, index, scenario),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=SCENARIO_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 15)
            process.wait()
            returncode = -1
    return Result(distro, scenario, returncode, time.monotonic() - started, log)


def _run_distro(distro: str, index: int, names: Sequence[str]) -> list[Result]:
    """The scenarios one after another, as `molecule test --all` runs them: the first failure ends it."""
    results: list[Result] = []
    for scenario in names:
        if results and not results[-1].passed:
            results.append(Result(distro, scenario, None, 0.0, LOG_DIR / f"{distro}-{scenario}.log"))
            continue
        _say(f"{distro} {scenario}: started")
        result = _run_scenario(distro, index, scenario)
        _say(f"{distro} {scenario}: {result.verdict} in {result.seconds:.0f} s (log: {_shown(result.log)})")
        results.append(result)
    return results


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def failure_excerpt(log: str) -> str:
    """What says why a run failed: Ansible's and pytest's error lines, then Molecule's summary."""
    lines = log.splitlines()
    errors = [line for line in lines if FAILURE_LINE.search(line)][:FAILED_LOG_ERROR_LINES]
    return "\n".join([*errors, "...", *lines[-FAILED_LOG_TAIL_LINES:]])


def run_matrix(distros: Sequence[str], names: Sequence[str], jobs: int) -> list[Result]:
    for distro in distros:
        if distro not in images.HOSTS:
            raise SetupError(f"unknown distro {distro!r}; choose from {', '.join(sorted(images.HOSTS))}")
        # Never skipped: a missing host image is an error, not a reason to leave a distro out.
        if run([DOCKER, "image", "inspect", images.HOSTS[distro].tag], check=False).returncode:
            raise SetupError(f"the host image {images.HOSTS[distro].tag} is missing; run `make setup` first")
    if not names:
        raise SetupError(f"no scenarios under {SCENARIOS_DIR}")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    _say(f"{len(names)} scenarios ({', '.join(names)}) on {', '.join(distros)}, {jobs} at a time")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        # Moto ports follow the distro's place in images.HOSTS, so a distro keeps its port in any run.
        ordered = sorted(images.HOSTS)
        runs = [pool.submit(_run_distro, distro, ordered.index(distro), names) for distro in distros]
        return [result for future in runs for result in future.result()]


def report(results: Sequence[Result], seconds: float) -> bool:
    """The summary table, and the end of each failed run's log; True when every run passed."""
    for result in results:
        if result.returncode not in (None, 0):
            print(f"\n----- {result.distro} {result.scenario}: from {_shown(result.log)} -----")
            print(failure_excerpt(result.log.read_text(errors="replace")))
    print(f"\n{'distro':<10} {'scenario':<15} {'result':<18} seconds")
    for result in results:
        print(f"{result.distro:<10} {result.scenario:<15} {result.verdict:<18} {result.seconds:7.0f}")
    passed = all(result.passed for result in results)
    print(f"molecule: {'all passed' if passed else 'FAILED'} in {seconds:.0f} s; logs in {_shown(LOG_DIR)}")
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploykit.molecule_matrix", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--distro", action="append", help="a distro of deploykit/images.py (default: all)")
    parser.add_argument("--scenario", action="append", help="a scenario under molecule/ (default: all)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ.get("DEPLOYKIT_MOLECULE_JOBS") or 0) or None,
        help="distros at once (default: all of them)",
    )
    args = parser.parse_args(argv)
    distros = args.distro or sorted(images.HOSTS)
    names = args.scenario or scenarios()
    outcome: list[bool] = []

    def matrix() -> None:
        started = time.monotonic()
        results = run_matrix(distros, names, max(1, args.jobs or len(distros)))
        outcome.append(report(results, time.monotonic() - started))

    status = main_guard(matrix)
    return status or (0 if outcome and outcome[0] else 1)


if __name__ == "__main__":
    sys.exit(main())
