"""Jinja filters of the day-2 playbooks (status.yml, logs.yml, run.yml): a command line split into
argv, the app's log lines of several hosts merged by time, and rows printed as a table."""

from __future__ import annotations

import datetime
import re
import shlex

from ansible.errors import AnsibleFilterError

# What `docker logs --timestamps` puts before each line: RFC 3339 with nanoseconds, trailing zeros
# of the fraction dropped (Go's RFC3339Nano), so the text of two times does not sort as the times do.
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) ?(.*)$", re.DOTALL)


def deploykit_argv(command: str) -> list[str]:
    """A command line split as a POSIX shell would, without running one: quotes group words."""
    if not isinstance(command, str):
        raise AnsibleFilterError(f"command must be a string, not {type(command).__name__}")
    try:
        return shlex.split(command)
    except ValueError as error:
        raise AnsibleFilterError(f"command={command!r} cannot be split into words: {error}") from error


def _stamp_key(line: str) -> tuple[int, int] | None:
    """A line's time as (whole seconds since the epoch, nanoseconds), or None without a time."""
    match = _STAMP.match(line)
    if not match:
        return None
    seconds, fraction, zone = match.group(1), match.group(2) or "", match.group(3)
    moment = datetime.datetime.fromisoformat(seconds + ("+00:00" if zone == "Z" else zone))
    return int(moment.timestamp()), int(fraction.ljust(9, "0"))


def deploykit_merge_logs(logs: dict[str, list[str]], notes: list[str] | None = None) -> list[str]:
    """Every host's timestamped log lines in one list, oldest first, each prefixed by its host,
    after the `notes` (each marked '# ').

    A line without a time (a message that went on over several lines) keeps the time of the line
    before it, so it stays after it; lines of the same time keep the hosts' order and their own.
    """
    if not isinstance(logs, dict):
        raise AnsibleFilterError("deploykit_merge_logs expects a mapping of host to its log lines")
    width = max((len(str(host)) for host in logs), default=0)
    keyed = []
    for rank, (host, lines) in enumerate(logs.items()):
        key = (0, 0)
        for position, line in enumerate(lines or []):
            key = _stamp_key(line) or key
            keyed.append((key, rank, position, f"{str(host).ljust(width)} | {line}".rstrip()))
    return [f"# {note}" for note in notes or []] + [line for *_, line in sorted(keyed)]


def deploykit_table(rows: list[list[str]], headers: list[str]) -> str:
    """Rows under their headers, columns padded to the widest cell, lines without trailing spaces."""
    texts = [[str(cell) for cell in headers]] + [
        ["" if cell is None else str(cell) for cell in row] for row in rows
    ]
    if any(len(row) != len(headers) for row in texts):
        raise AnsibleFilterError("deploykit_table: every row needs one cell per header")
    widths = [max(len(row[column]) for row in texts) for column in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in texts
    )


class FilterModule:
    def filters(self) -> dict:
        return {
            "deploykit_argv": deploykit_argv,
            "deploykit_merge_logs": deploykit_merge_logs,
            "deploykit_table": deploykit_table,
        }
