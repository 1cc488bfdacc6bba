"""Scenario 10: bad input is refused before any host changes, with a message that names it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

MISSING_PARAMETER = "/deploykit/local/DATABASE_URL"
SECRET_PARAMETER = "/deploykit/local/DJANGO_SECRET_KEY"  # noqa: S105 - a parameter name, not its value


def _malformed_tag(ansible, releases, ssm):
    # A branch name where a tag belongs.
    return ansible.run("bad-tag", ansible.deploy_args("feature/login-page"))


def _unknown_environment(ansible, releases, ssm):
    return ansible.run(
        "bad-environment", ansible.deploy_args(releases.v1.tag, inventory="inventory/nonexistent")
    )


def _missing_parameter(ansible, releases, ssm):
    parameter = ssm.get_parameter(Name=MISSING_PARAMETER, WithDecryption=True)["Parameter"]
    ssm.delete_parameter(Name=MISSING_PARAMETER)
    try:
        return ansible.run("bad-missing-ssm-parameter", ansible.deploy_args(releases.v1.tag))
    finally:
        ssm.put_parameter(Name=MISSING_PARAMETER, Value=parameter["Value"], Type=parameter["Type"])


def _secret_with_trailing_space(ansible, releases, ssm):
    # Once, the serving container got it without the space and the migration's container with it.
    parameter = ssm.get_parameter(Name=SECRET_PARAMETER, WithDecryption=True)["Parameter"]
    ssm.put_parameter(
        Name=SECRET_PARAMETER, Value=parameter["Value"] + " ", Type=parameter["Type"], Overwrite=True
    )
    try:
        return ansible.run("bad-secret-trailing-space", ansible.deploy_args(releases.v1.tag))
    finally:
        ssm.put_parameter(
            Name=SECRET_PARAMETER, Value=parameter["Value"], Type=parameter["Type"], Overwrite=True
        )


def _public_name_not_allowed(ansible, releases, ssm):
    # The app would answer every user of app.deploykit.localhost 400.
    overrides = '{"app_deploy_env": {"DJANGO_ALLOWED_HOSTS": "app.example.com"}}'
    return ansible.run("bad-allowed-hosts", ansible.deploy_args(releases.v1.tag, "-e", overrides))


def _serial(value: str):
    def run(ansible, releases, ssm):
        args = ansible.deploy_args(releases.v1.tag, "-e", f"deploy_serial={value}")
        return ansible.run(f"bad-serial-{value}", args)

    return run


def _switch_not_boolean(ansible, releases, ssm):
    return ansible.run("bad-converge", ansible.deploy_args(releases.v1.tag, "-e", "deploy_converge=ture"))


CASES = {
    "public name the app does not allow": (
        _public_name_not_allowed,
        ["The public host name app.deploykit.localhost", "DJANGO_ALLOWED_HOSTS=app.example.com"],
    ),
    "malformed image tag": (
        _malformed_tag,
        ["app_deploy_image_tag=feature/login-page is not an image tag"],
    ),
    "unknown environment": (
        _unknown_environment,
        ["inventory/nonexistent"],
    ),
    # Once a traceback after every host had pulled and the migrations had run.
    "batch size that is not a number": (
        _serial("abc"),
        ['deploy_serial="abc" is not a batch size', "-e deploy_serial=25%"],
    ),
    # Once every host switched in the same second, with nothing said.
    "batch size of zero": (
        _serial("0"),
        ['deploy_serial="0" is not a batch size'],
    ),
    "switch that is not true or false": (
        _switch_not_boolean,
        ["deploy_converge=ture must be true or false"],
    ),
    "secret a container cannot receive exactly": (
        _secret_with_trailing_space,
        [f"SSM parameter(s) whose value a container cannot receive exactly: {SECRET_PARAMETER}"],
    ),
    "missing SSM parameter": (
        _missing_parameter,
        ["Missing SSM parameter(s) for the app", MISSING_PARAMETER],
    ),
}

# Each bad input is a row of its own in reports/e2e.json (tests/e2e/conftest.py's case_of).
FAULT_CASES = {case: case for case in CASES}


@pytest.fixture(scope="module")
def refusals(ansible, fleet, releases, ssm):
    """Each bad deploy, run once, with the fleet's containers before and after it."""
    done = {}

    def refusal(case):
        if case not in done:
            before = fleet.snapshot()
            run = CASES[case][0](ansible, releases, ssm)
            done[case] = (before, run, fleet.snapshot())
        return done[case]

    return refusal


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_with_a_message_naming_it(refusals, case):
    _, run, _ = refusals(case)
    assert run.returncode != 0, run.tail()
    assert [text for text in CASES[case][1] if text not in run.output] == [], run.tail()


@pytest.mark.parametrize("case", CASES)
def test_bad_input_changes_no_host(refusals, fleet, case):
    before, run, after = refusals(case)
    # Listed in the recap when the refusal comes from the checks' play, which names them too.
    recap = run.recap()
    assert [
        host
        for host in fleet.names
        if recap.get(host, {}).get("ok", 0) or recap.get(host, {}).get("changed", 0)
    ] == []
    assert after == before


def test_a_refused_secret_is_named_never_shown(refusals, ssm):
    _, run, _ = refusals("secret a container cannot receive exactly")
    value = ssm.get_parameter(Name=SECRET_PARAMETER, WithDecryption=True)["Parameter"]["Value"]
    assert value not in run.output
