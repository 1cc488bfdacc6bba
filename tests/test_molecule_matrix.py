"""`make molecule`'s matrix: every scenario on every distro, and runs side by side that share nothing."""

from __future__ import annotations

import itertools
import re

import pytest
import yaml

from deploykit import images, molecule_matrix
from deploykit.system import ROOT


def _molecule_yml(scenario: str) -> dict:
    return yaml.safe_load((molecule_matrix.SCENARIOS_DIR / scenario / "molecule.yml").read_text())


def test_matrix_covers_every_scenario():
    assert molecule_matrix.scenarios() == ["app_deploy", "default", "docker_engine"]


def test_make_molecule_runs_the_matrix_on_every_distro():
    recipe = re.search(r"^molecule:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.MULTILINE)

    assert recipe
    assert "-m deploykit.molecule_matrix" in recipe.group(1)
    assert "--distro" not in recipe.group(1)


@pytest.mark.parametrize("scenario", molecule_matrix.scenarios())
def test_every_platform_runs_the_chosen_distro_under_a_name_that_carries_it(scenario):
    for platform in _molecule_yml(scenario)["platforms"]:
        assert platform["image"] == "deploykit/host:${MOLECULE_DISTRO:-debian12}"
        assert "${MOLECULE_DISTRO:-debian12}" in platform["name"]


@pytest.mark.parametrize("scenario", molecule_matrix.scenarios())
def test_idempotence_is_in_every_test_sequence(scenario):
    assert "idempotence" in _molecule_yml(scenario)["scenario"]["test_sequence"]


def test_default_distro_of_the_scenarios_is_a_host_image():
    assert "debian12" in images.HOSTS


def test_runs_side_by_side_get_their_own_moto_port_and_ephemeral_directory():
    ordered = sorted(images.HOSTS)
    runs = [
        molecule_matrix._environment(distro, ordered.index(distro), scenario)
        for distro, scenario in itertools.product(ordered, molecule_matrix.scenarios())
    ]
    ports = {(run["MOLECULE_DISTRO"], run["DEPLOYKIT_MOLECULE_MOTO_PORT"]) for run in runs}

    assert len({run["MOLECULE_EPHEMERAL_DIRECTORY"] for run in runs}) == len(runs)
    assert len({port for _, port in ports}) == len(ordered)
    assert "${DEPLOYKIT_MOLECULE_MOTO_PORT:-5055}" in str(_molecule_yml("app_deploy")["provisioner"]["env"])


def test_ephemeral_directories_are_outside_the_project():
    # Under the project, pytest would pick pyproject.toml over the scenarios' tests/pytest.ini.
    assert not molecule_matrix.EPHEMERAL_DIR.is_relative_to(ROOT)


def test_failure_excerpt_shows_the_errors_and_leaves_out_retries():
    log = "\n".join(
        [
            "FAILED - RETRYING: [localhost]: Wait for instance(s) creation (300 retries left).",
            "fatal: [app-deploy-debian13]: FAILED! => {}",
            "E   ModuleNotFoundError: No module named 'x'",
            *[f"noise {n}" for n in range(100)],
            "app_deploy > verify: Executed: Failed (Verifier tests failed)",
        ]
    )
    excerpt = molecule_matrix.failure_excerpt(log).splitlines()

    assert excerpt[:2] == [
        "fatal: [app-deploy-debian13]: FAILED! => {}",
        "E   ModuleNotFoundError: No module named 'x'",
    ]
    assert "RETRYING" not in " ".join(excerpt)
    assert excerpt[-1].endswith("(Verifier tests failed)")
    assert "noise 10" not in excerpt
