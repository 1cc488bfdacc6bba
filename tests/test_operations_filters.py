"""The day-2 playbooks' filters (plugins/filter/operations.py): how a command becomes argv, how
the hosts' log lines are merged, how the status table is laid out."""

from __future__ import annotations

import importlib.util

import pytest
from ansible.errors import AnsibleFilterError

from deploykit.system import ROOT

_SPEC = importlib.util.spec_from_file_location("operations", ROOT / "plugins/filter/operations.py")
operations = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(operations)


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("showmigrations", ["showmigrations"]),
        ("check --deploy", ["check", "--deploy"]),
        # Quotes group words; nothing a shell would expand is expanded.
        ("shell -c 'print(1 + 1)'", ["shell", "-c", "print(1 + 1)"]),
        (
            'createsuperuser --username "a b" $HOME; rm -rf /',
            ["createsuperuser", "--username", "a b", "$HOME;", "rm", "-rf", "/"],
        ),
        ("   ", []),
    ],
)
def test_a_command_is_split_as_a_shell_would_without_running_one(command, argv):
    assert operations.deploykit_argv(command) == argv


def test_unbalanced_quotes_are_refused_naming_the_command():
    with pytest.raises(AnsibleFilterError, match=r"command=\"check 'x\" cannot be split into words"):
        operations.deploykit_argv("check 'x")


def test_log_lines_are_merged_by_time_not_by_text():
    # Go drops trailing zeros of the fraction: .5 is later than .123456789 but sorts before it as text.
    merged = operations.deploykit_merge_logs(
        {
            "web-1": ["2026-12-08T00:00:01.5Z b", "2026-12-08T00:00:03Z d"],
            "web-22": ["2026-12-08T00:00:01.123456789Z a", "2026-12-08T00:00:02.000000001Z c"],
        }
    )
    assert merged == [
        "web-22 | 2026-12-08T00:00:01.123456789Z a",
        "web-1  | 2026-12-08T00:00:01.5Z b",
        "web-22 | 2026-12-08T00:00:02.000000001Z c",
        "web-1  | 2026-12-08T00:00:03Z d",
    ]


def test_a_line_without_a_time_stays_after_the_line_before_it():
    merged = operations.deploykit_merge_logs(
        {
            "web-1": ["2026-12-08T00:00:01Z Traceback:", "  File x", "2026-12-08T00:00:04Z e"],
            "web-2": ["2026-12-08T00:00:02Z other"],
        }
    )
    assert merged == [
        "web-1 | 2026-12-08T00:00:01Z Traceback:",
        "web-1 |   File x",
        "web-2 | 2026-12-08T00:00:02Z other",
        "web-1 | 2026-12-08T00:00:04Z e",
    ]


def test_lines_of_the_same_time_keep_the_hosts_order_and_their_own():
    stamp = "2026-12-08T00:00:01Z"
    merged = operations.deploykit_merge_logs({"b": [f"{stamp} 1", f"{stamp} 2"], "a": [f"{stamp} 3"]})
    assert merged == [f"b | {stamp} 1", f"b | {stamp} 2", f"a | {stamp} 3"]


def test_times_with_an_offset_are_compared_in_utc():
    merged = operations.deploykit_merge_logs(
        {
            "web-1": ["2026-12-08T01:00:00+01:00 same hour as web-2's, earlier"],
            "web-2": ["2026-12-08T00:30:00Z later"],
        }
    )
    assert [line.split(" | ")[0].strip() for line in merged] == ["web-1", "web-2"]


def test_notes_come_first_marked():
    merged = operations.deploykit_merge_logs(
        {"web-1": ["2026-12-08T00:00:01Z a"]}, notes=["web-2: no release serves"]
    )
    assert merged == ["# web-2: no release serves", "web-1 | 2026-12-08T00:00:01Z a"]


def test_no_hosts_no_lines():
    assert operations.deploykit_merge_logs({}) == []
    assert operations.deploykit_merge_logs({"web-1": []}) == []


def test_the_table_pads_columns_and_leaves_no_trailing_space():
    table = operations.deploykit_table(
        [["web-1", "v2", ""], ["web-10", None, "x"]], ["HOST", "VERSION", "LOCK"]
    )
    assert table.splitlines() == [
        "HOST    VERSION  LOCK",
        "web-1   v2",
        "web-10           x",
    ]


def test_a_row_of_the_wrong_length_is_refused():
    with pytest.raises(AnsibleFilterError, match="one cell per header"):
        operations.deploykit_table([["web-1"]], ["HOST", "VERSION"])
