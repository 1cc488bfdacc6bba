"""app_deploy's reading of a failed registry login or pull (__app_deploy_registry_cause in
roles/app_deploy/vars/main.yml): the engine's own words, as the Docker engine and the registry
v2 API write them, mapped to the cause a user fixes. tests/e2e/test_13_faults.py meets the tag
that is not there and the registry that is down on real hosts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from deploykit.system import ROOT

BIN = Path(sys.executable).parent

SAID = {
    "Error response from daemon: manifest for registry/deploykit/app:nope not found: manifest unknown": (
        "the tag does not exist in the registry"
    ),
    'Get "https://172.30.0.1:5443/v2/": dial tcp 172.30.0.1:5443: connect: connection refused': (
        "the registry cannot be reached from the host"
    ),
    'Error response from daemon: Get "https://registry/v2/": net/http: TLS handshake timeout': (
        "the registry cannot be reached from the host"
    ),
    "Error response from daemon: Get https://registry/v2/: unauthorized: authentication required": (
        "the registry refused the host's credentials"
    ),
    "Get https://registry/v2/: x509: certificate signed by unknown authority": (
        "the host does not trust the registry's certificate"
    ),
    "write /var/lib/docker/tmp/GetImageBlob1: no space left on device": "the host's disk is full",
    "something nobody has seen": "failed for a reason not recognised here",
}


def _causes(tmp_path: Path, said: list[str], **facts: object) -> dict[str, str]:
    """Each error in `said` mapped to the cause the role names, with `facts` set on the host."""
    playbook = tmp_path / "causes.yml"
    playbook.write_text(
        f"""
- name: Read each error as the role does
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files:
    - {ROOT}/roles/app_deploy/vars/main.yml
  tasks:
    - name: Set what the role found on the host
      ansible.builtin.set_fact: {json.dumps(facts) if facts else "{}"}
      when: {json.dumps(bool(facts))}

    - name: Name the cause
      ansible.builtin.debug:
        msg: "{{{{ {{'said': item, 'cause': __app_deploy_registry_cause}} | to_json }}}}"
      loop: {json.dumps(said)}
      vars:
        __app_deploy_registry_said: "{{{{ item }}}}"
"""
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    run = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    # The JSON document, then what the other callbacks print after it.
    document, _ = json.JSONDecoder().raw_decode(run.stdout[run.stdout.index("{") :])
    results = document["plays"][0]["tasks"][1]["hosts"]["localhost"]["results"]
    return {json.loads(result["msg"])["said"]: json.loads(result["msg"])["cause"] for result in results}


def test_each_registry_error_is_read_as_its_cause(tmp_path):
    read = _causes(tmp_path, list(SAID))
    assert {said: cause for said, cause in read.items() if SAID[said] not in cause} == {}


def test_a_full_disk_names_the_free_space_and_the_estimate_the_pull_was_allowed_on(tmp_path):
    # The check before the pull let it start, and the disk filled anyway: the estimate was low.
    said = "write /var/lib/docker/tmp/GetImageBlob1: no space left on device"
    space = {"root": "/var/lib/docker", "free_bytes": 300_000_000, "needed_bytes": 250_000_000}
    cause = _causes(tmp_path, [said], __app_deploy_pull_space=space)[said]
    assert "300.0 MB were free on the filesystem of /var/lib/docker before the pull" in cause
    assert "estimated to need 250.0 MB: raise app_deploy_pull_space_factor" in cause
