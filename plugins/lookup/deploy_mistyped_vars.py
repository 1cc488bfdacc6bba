"""Lookup: the names given with -e that the project does not know but that are close to one it does.

`-e deploy_seral=2` is accepted by Ansible and read by nobody: the deploy runs one host at a time
and says nothing. Ansible has no list of a playbook's inputs, so the names the project knows are
read from where it defines them: every role's defaults and argument specs, the playbooks' group_vars
and vars files, and every environment's group_vars; and from where it reads an optional input that
nothing defines (`provision_web_instance_type | default('t3.small')`, `x is defined`). A name given
with -e that is none of them and is close to one of them (difflib's ratio, as Python's own "did you
mean") is returned with its nearest known names; a name far from all of them is left alone (it may
be the user's own).
Written here because no Ansible plugin or collection lists a playbook's unknown extra vars.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: deploy_mistyped_vars
short_description: Names given with -e that are unknown to the project but close to a known one
description:
  - Returns one entry per such name, C({name, suggestions}), suggestions being the known names
    closest to it.
  - Known names are the top-level keys of the project's YAML files that define variables (roles'
    defaults and vars, argument specs' options, group_vars, the playbooks' vars files), and the names
    those files and the project's tasks and playbooks read through default() or test with
    C(is defined).
  - Takes no terms: the project is the one this plugin is part of.
"""

import difflib
import re
from pathlib import Path

import yaml
from ansible import context
from ansible.plugins.lookup import LookupBase
from ansible.utils.vars import load_extra_vars

# Files that define variables, relative to the project.
_DEFINITIONS = (
    "roles/*/defaults/*.yml",
    "roles/*/vars/*.yml",
    "playbooks/group_vars/**/*.yml",
    "playbooks/vars/*.yml",
    "inventory/*/group_vars/**/*.yml",
)
_SPECS = "roles/*/meta/argument_specs.yml"
# Files that read variables, besides the definitions.
_READERS = ("roles/*/tasks/*.yml", "playbooks/*.yml", "playbooks/tasks/*.yml")
# An optional input is defined nowhere, only read when given: `name | default(...)` or `name is
# (not) defined`. Not a filter's name (`x | first | default(...)`), an attribute or a private name.
_READ_IF_GIVEN = re.compile(
    r"(?:^|[^\w.|\s])\s*([A-Za-z]\w*)\s*(?:\|\s*(?:ansible\.builtin\.)?(?:default|d)\b|is\s+(?:not\s+)?defined\b)",
    re.MULTILINE,
)
_CLOSE_ENOUGH = 0.8
# This file is plugins/lookup/ in the project.
PROJECT = Path(__file__).resolve().parents[2]


def known_names(root: Path) -> set[str]:
    names: set[str] = set()
    for pattern in _DEFINITIONS:
        for path in root.glob(pattern):
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                names.update(str(key) for key in data)
    for path in root.glob(_SPECS):
        specs = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("argument_specs", {})
        for entry_point in specs.values():
            names.update((entry_point or {}).get("options", {}))
    for pattern in (*_DEFINITIONS, *_READERS):
        for path in root.glob(pattern):
            lines = path.read_text(encoding="utf-8").splitlines()
            code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
            names.update(_READ_IF_GIVEN.findall(code))
    return names


def mistyped(given: set[str], known: set[str]) -> list[dict[str, object]]:
    found = []
    for name in sorted(given - known):
        if name.startswith("ansible_"):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=_CLOSE_ENOUGH)
        if close:
            found.append({"name": name, "suggestions": close})
    return found


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        known = known_names(PROJECT)
        # What was given on the command line, parsed as Ansible parses it (k=v, JSON, @file).
        given = set(load_extra_vars(self._loader)) if context.CLIARGS.get("extra_vars") else set()
        return mistyped(given, known)
