"""The checks that guard a rollout's shape, run by ansible-playbook on the controller alone:
playbooks/tasks/check-rollout.yml (deploy_serial, the true/false switches and, through
check-extra-vars.yml, misspelt names given with -e; checked before the lock) and
playbooks/tasks/check-batch.yml (a host lost in an earlier batch stops the rollout).

The deploy and rollback playbooks import both; tests/e2e/test_10_bad_input.py runs the refusals
through deploy.yml against the stand-in's fleet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploykit.system import ROOT

BIN = Path(sys.executable).parent
TASKS = ROOT / "playbooks" / "tasks"


def _run(tmp_path: Path, playbook: str, inventory: str, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "playbook.yml").write_text(playbook)
    (tmp_path / "hosts.ini").write_text(inventory)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    environment.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
    )
    inventory, playbook = tmp_path / "hosts.ini", tmp_path / "playbook.yml"
    command = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)]
    return subprocess.run(
        [*command, *extra],
        cwd=ROOT, env=environment, capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip


CHECK_ROLLOUT = f"""
- name: The deploy's checks of its rollout settings
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files:
    - {ROOT}/playbooks/vars/deploy.yml
  tasks:
    - name: Include the checks
      ansible.builtin.import_tasks: {TASKS}/check-rollout.yml
"""


def _check(tmp_path: Path, **extra_vars: object) -> subprocess.CompletedProcess[str]:
    return _run(tmp_path, CHECK_ROLLOUT, "localhost\n", "-e", json.dumps(extra_vars))


@pytest.mark.parametrize(
    "serial",
    [1, "1", "3", "25%", "100%", [1, "10%", "50%"], ["2", 5]],
    ids=str,
)
def test_batch_sizes_serial_takes_pass(tmp_path, serial):
    run = _check(tmp_path, deploy_serial=serial)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    ("serial", "named"),
    [
        ("abc", '"abc" is not one'),
        # serial: 0 would switch every host in the same batch, with nothing said.
        ("0", '"0" is not one'),
        (0, '"0" is not one'),
        ("-1", '"-1" is not one'),
        ("0%", '"0%" is not one'),
        ("150%", '"150%" is not one'),
        ("12.5%", '"12.5%" is not one'),
        ([1, "x"], '"x" is not one'),
        ([], "deploy_serial=[] is not a batch size"),
        (True, '"True" is not one'),
    ],
    ids=str,
)
def test_other_batch_sizes_are_refused_with_the_rule_and_an_example(tmp_path, serial, named):
    run = _check(tmp_path, deploy_serial=serial)
    assert run.returncode != 0
    assert named in run.stdout, run.stdout
    assert "is not a batch size" in run.stdout
    assert "-e deploy_serial=25%" in run.stdout


@pytest.mark.parametrize("value", ["true", "False", "yes", "0", True, False])
def test_switches_given_as_true_or_false_pass(tmp_path, value):
    run = _check(tmp_path, deploy_converge=value, deploy_lock_force=value)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_switch_that_is_not_true_or_false_is_refused_by_name(tmp_path):
    # `| bool` would read it as false: the deploy would quietly not converge.
    run = _check(tmp_path, deploy_converge="ture")
    assert run.returncode != 0
    assert "deploy_converge=ture must be true or false" in run.stdout, run.stdout
    assert "-e deploy_converge=true" in run.stdout


# Three hosts, two per batch: `lost` (first, whose SSH port refuses) and `first` in the first
# batch, `second` alone in the second. Each host that rolls out leaves a file behind.
BATCHES = """
- name: A rolling play as deploy.yml's
  hosts: web
  serial: 2
  max_fail_percentage: 0
  gather_facts: false
  pre_tasks:
    - name: Include the check of the earlier batches
      ansible.builtin.import_tasks: {tasks}/check-batch.yml
  tasks:
    - name: Roll the host out
      ansible.builtin.file:
        path: "{out}/{{{{ inventory_hostname }}}}"
        state: touch
        mode: "0644"
"""


def test_host_lost_in_an_earlier_batch_stops_the_rollout_before_the_next(tmp_path):
    out = tmp_path / "rolled-out"
    out.mkdir()
    inventory = (
        "[web]\n"
        "lost ansible_host=127.0.0.1 ansible_port=1 ansible_connection=ssh\n"
        "first ansible_connection=local\n"
        "second ansible_connection=local\n"
        "[web:vars]\n"
        'ansible_python_interpreter="{{ ansible_playbook_python }}"\n'
    )
    run = _run(tmp_path, BATCHES.format(tasks=TASKS, out=out), inventory)
    assert run.returncode != 0
    # Unreachable, not failed: max_fail_percentage alone would have gone on to the second batch.
    assert "UNREACHABLE" in run.stdout, run.stdout
    assert sorted(path.name for path in out.iterdir()) == ["first"], run.stdout
    assert "Stopped before this batch: lost failed or stopped answering in an earlier batch" in run.stdout


def test_without_a_lost_host_every_batch_rolls_out(tmp_path):
    out = tmp_path / "rolled-out"
    out.mkdir()
    inventory = (
        "[web]\nfirst ansible_connection=local\nsecond ansible_connection=local\n"
        "third ansible_connection=local\n"
        '[web:vars]\nansible_python_interpreter="{{ ansible_playbook_python }}"\n'
    )
    run = _run(tmp_path, BATCHES.format(tasks=TASKS, out=out), inventory)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(path.name for path in out.iterdir()) == ["first", "second", "third"]


def test_a_misspelt_setting_given_with_e_is_refused_with_the_names_it_is_close_to(tmp_path):
    # Accepted by Ansible and read by nobody, it would leave the batches at their default.
    run = _check(tmp_path, deploy_seral=2)
    assert run.returncode != 0
    assert "-e deploy_seral is not a setting of this project: did you mean deploy_serial?" in run.stdout, (
        run.stdout
    )


def test_a_name_of_the_user_s_own_far_from_every_setting_is_left_alone(tmp_path):
    run = _check(tmp_path, my_ticket_number="OPS-1234", deploy_serial=2)
    assert run.returncode == 0, run.stdout + run.stderr
