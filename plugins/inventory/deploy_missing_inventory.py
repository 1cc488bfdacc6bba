"""Inventory plugin: an inventory path that does not exist is refused with the environments that do.

ansible.cfg makes an inventory source no plugin parses fatal (so that an aws_ec2 inventory that
cannot reach AWS stops the run), and for a mistyped path (`-i inventory/locl`) Ansible then says
only "Completely failed to parse inventory source". This plugin, enabled after Ansible's own,
claims a source path that does not exist (and nothing else: a path that exists is the other
plugins', a comma-separated host list is host_list's) and fails with the path and the
environments, the directories of inventory/ that hold an aws_ec2 inventory. Ansible prints that
message before its own error. Written here because no Ansible plugin explains a missing source.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: deploy_missing_inventory
short_description: Refuses an inventory path that does not exist, naming the environments
description:
  - Accepts only a source that is neither an existing path nor a comma-separated host list, and
    fails to parse it with a message that names the path and lists the project's environments
    (the directories under inventory/ that hold an aws_ec2.yml).
  - Enable it last in C([inventory] enable_plugins), after Ansible's own plugins.
"""

import difflib
import os
from pathlib import Path

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin

# This file is plugins/inventory/ in the project.
PROJECT = Path(__file__).resolve().parents[2]


def environments(root: Path) -> list[str]:
    """The directories under root's inventory/ that hold an aws_ec2 inventory, sorted."""
    return sorted(path.parent.name for path in (root / "inventory").glob("*/aws_ec2.yml"))


def message(source: str, known: list[str]) -> str:
    """What a user who gave `source` with -i is told."""
    shown = os.path.relpath(source) if source.startswith(os.getcwd() + os.sep) else source
    if not known:
        return f"{shown} does not exist, and no directory of inventory/ holds an aws_ec2.yml."
    # The closest environment as the example: inventory/locl was most likely meant as local.
    example = (difflib.get_close_matches(Path(source).name, known, n=1) or known)[0]
    return (
        f"{shown} does not exist. The environments are {', '.join(known)}: "
        f"pass -i inventory/<environment>, e.g. -i inventory/{example}."
    )


class InventoryModule(BaseInventoryPlugin):
    NAME = "deploy_missing_inventory"

    def verify_file(self, path: str) -> bool:
        """Claim a source only when it is a path that does not exist."""
        return "," not in path and not os.path.exists(path)

    def parse(self, inventory, loader, path: str, cache: bool = True) -> None:
        """Fail with the path given and the environments there are."""
        raise AnsibleParserError(message(path, environments(PROJECT)))
