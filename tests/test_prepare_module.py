"""app_deploy_prepare (roles/app_deploy/library), run by Ansible on this machine without a pull: the
release's identity is the one the role has always computed with Ansible's own filters, the
environment file is written 0600 in a 0700 directory and only when it changes, and an environment
an env file cannot carry is refused by name, before anything is written, without a value shown.
Login, space check and pull meet a real registry in the Molecule app_deploy scenario and in
tests/e2e/test_13_faults.py.
"""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

# Values of several types, as the role's container settings and environment have them.
CONTAINER = {"schema": 3, "cpus": 0.5, "user": "10001:10001", "log_options": {"tag": "app"}, "pids_limit": 9}
ENV = {"DJANGO_ALLOWED_HOSTS": "app.example.com", "GUNICORN_WORKERS": 3, "DJANGO_SECRET_KEY": "not-a-key"}
IMAGE_ID = "sha256:" + "ab" * 32


def _prepare(run_local_play, env_dir: Path, env: dict, *, check: bool = False) -> dict:
    """The module's result, and the identity Ansible's filters give the same inputs."""
    env_b64 = base64.b64encode(json.dumps(env).encode()).decode()
    document, output = run_local_play(
        f"""
- name: Prepare
  app_deploy_prepare:
    image: registry.example/app:v1
    pull: false
    known_image_id: {IMAGE_ID}
    space_factor: 3.5
    env: {env_b64}
    ssm_parameters: {{DJANGO_SECRET_KEY: /app/secret-key}}
    container: {json.dumps(CONTAINER)}
    env_dir: {env_dir}
  register: prepared
  failed_when: false

- name: Show the module's result and Ansible's identity of the same release
  ansible.builtin.debug:
    msg:
      prepared: "{{{{ prepared }}}}"
      identity: >-
        {{{{ ({{'image_id': '{IMAGE_ID}', 'env_sha256': env_sha256, 'container': container}}
             | to_json(sort_keys=true) | hash('sha256'))[:12] }}}}
  vars:
    container: {json.dumps(CONTAINER)}
    env_strings: {json.dumps({k: str(v) for k, v in env.items()})}
    env_sha256: "{{{{ env_strings | to_json(sort_keys=true) | hash('sha256') }}}}"
""",
        check=check,
    )
    return {**document["plays"][0]["tasks"][1]["hosts"]["localhost"]["msg"], "output": output}


def test_the_release_identity_is_the_one_ansibles_filters_give(run_local_play, tmp_path):
    result = _prepare(run_local_play, tmp_path / "env", ENV)
    assert result["prepared"]["release"] == result["identity"].strip()
    assert result["prepared"]["image_id"] == IMAGE_ID


def test_the_environment_file_is_root_only_and_holds_every_variable(run_local_play, tmp_path):
    prepared = _prepare(run_local_play, tmp_path / "env", ENV)["prepared"]
    env_file = Path(prepared["env_file"])
    assert env_file.parent == tmp_path / "env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(env_file.parent.stat().st_mode) == 0o700
    lines = [line for line in env_file.read_text().splitlines() if not line.startswith("#")]
    assert lines == [f"{name}={ENV[name]}" for name in sorted(ENV)]
    assert prepared["changed"] is True


def test_a_second_run_with_the_same_inputs_changes_nothing(run_local_play, tmp_path):
    first = _prepare(run_local_play, tmp_path / "env", ENV)["prepared"]
    written = Path(first["env_file"]).stat().st_mtime_ns
    second = _prepare(run_local_play, tmp_path / "env", ENV)["prepared"]
    assert (second["changed"], second["release"]) == (False, first["release"])
    assert Path(first["env_file"]).stat().st_mtime_ns == written


def test_a_check_run_reports_the_change_and_writes_nothing(run_local_play, tmp_path):
    prepared = _prepare(run_local_play, tmp_path / "env", ENV, check=True)["prepared"]
    assert prepared["changed"] is True
    assert not (tmp_path / "env").exists()


def test_an_environment_an_env_file_cannot_carry_is_refused_by_name(run_local_play, tmp_path):
    unfit = {"BAD-NAME": "x", "DJANGO_SECRET_KEY": "line one\nline two"}
    result = _prepare(run_local_play, tmp_path / "env", {**ENV, **unfit})
    prepared = result["prepared"]
    assert prepared["stage"] == "environment"
    assert "Not valid as environment variable names: BAD-NAME." in prepared["msg"]
    assert "DJANGO_SECRET_KEY (SSM parameter /app/secret-key)" in prepared["msg"]
    assert "line one" not in prepared["msg"]
    # The environment is one no_log argument: not even its encoded form is shown.
    assert base64.b64encode(json.dumps({**ENV, **unfit}).encode()).decode() not in result["output"]
    assert not (tmp_path / "env").exists()
