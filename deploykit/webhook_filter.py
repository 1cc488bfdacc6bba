"""CodeBuild webhook filter groups: does a push event start a build, and why (or why not).

The groups have the shape of the CodeBuild API's `filterGroups`: a list of groups, each a list of
`{type, pattern, excludeMatchedPattern}`. A group matches when all of its filters match; the event
starts a build when any group matches. EVENT patterns are comma-separated event names; every other
pattern is a regular expression searched for anywhere in the value (`^refs/heads/` matches
`refs/heads/any-branch`), and `excludeMatchedPattern: true` inverts the filter.
Patterns are compiled by Python's `re`; CodeBuild's are Java regular expressions, which agree on the
usual ref and path patterns but not on every construct (possessive quantifiers, some classes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

EVENT_TYPES = (
    "PUSH",
    "PULL_REQUEST_CREATED",
    "PULL_REQUEST_UPDATED",
    "PULL_REQUEST_REOPENED",
    "PULL_REQUEST_MERGED",
    "PULL_REQUEST_CLOSED",
    "RELEASED",
    "PRERELEASED",
    "WORKFLOW_JOB_QUEUED",
)
FILTER_TYPES = ("EVENT", "HEAD_REF", "BASE_REF", "FILE_PATH", "COMMIT_MESSAGE", "ACTOR_ACCOUNT_ID")
_FILTER_KEYS = ("type", "pattern", "excludeMatchedPattern")


class FilterGroupsError(ValueError):
    """The filter groups are not in the shape the CodeBuild API accepts."""


@dataclass(frozen=True)
class PushEvent:
    """What a webhook delivery carries that filters look at."""

    head_ref: str
    event: str = "PUSH"
    base_ref: str | None = None
    changed_files: tuple[str, ...] = ()
    commit_message: str = ""
    actor_account_id: str = ""


@dataclass(frozen=True)
class WebhookFilter:
    type: str
    pattern: str
    exclude_matched_pattern: bool = False
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        excluded = " (excluded)" if self.exclude_matched_pattern else ""
        return f"{self.type} {self.pattern}{excluded}"


@dataclass(frozen=True)
class Decision:
    """Whether the event starts a build, with a one-line reason."""

    accepted: bool
    reason: str
    group: int | None = None


def parse_filter_groups(raw: Any) -> list[list[WebhookFilter]]:
    """Check API-shaped filter groups and compile their patterns; raise FilterGroupsError."""
    if raw is None:
        return []
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise FilterGroupsError("filter groups: expected a list of groups (each a list of filters)")
    groups = []
    for group_index, raw_group in enumerate(raw, start=1):
        where = f"filter group {group_index}"
        if not isinstance(raw_group, Sequence) or isinstance(raw_group, str) or not raw_group:
            raise FilterGroupsError(f"{where}: expected a non-empty list of filters")
        group = [_parse_filter(item, f"{where} filter {index}") for index, item in enumerate(raw_group, 1)]
        # CreateWebhook refuses a group without an EVENT filter; refusing it here too keeps the
        # shared project definition valid for the provisioning playbook.
        if not any(item.type == "EVENT" for item in group):
            raise FilterGroupsError(f"{where}: needs an EVENT filter (the CodeBuild API requires one)")
        groups.append(group)
    return groups


def _parse_filter(raw: Any, where: str) -> WebhookFilter:
    if not isinstance(raw, Mapping):
        raise FilterGroupsError(f"{where}: expected a mapping with type and pattern")
    unknown = sorted(set(raw) - set(_FILTER_KEYS))
    if unknown:
        raise FilterGroupsError(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(_FILTER_KEYS)})"
        )
    kind, pattern = raw.get("type"), raw.get("pattern")
    exclude = raw.get("excludeMatchedPattern", False)
    if kind not in FILTER_TYPES:
        raise FilterGroupsError(f"{where}: type {kind!r} is not one of {', '.join(FILTER_TYPES)}")
    if not isinstance(pattern, str) or not pattern:
        raise FilterGroupsError(f"{where}: pattern must be a non-empty string")
    if not isinstance(exclude, bool):
        raise FilterGroupsError(f"{where}: excludeMatchedPattern must be true or false")
    if kind == "EVENT":
        unknown_events = [name for name in _event_names(pattern) if name not in EVENT_TYPES]
        if unknown_events:
            raise FilterGroupsError(f"{where}: unknown event(s) {', '.join(unknown_events)}")
        return WebhookFilter(kind, pattern, exclude)
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise FilterGroupsError(
            f"{where}: pattern {pattern!r} is not a regular expression: {error}"
        ) from error
    return WebhookFilter(kind, pattern, exclude, regex)


def _event_names(pattern: str) -> list[str]:
    return [name.strip() for name in pattern.split(",") if name.strip()]


def _match(item: WebhookFilter, event: PushEvent) -> tuple[bool, str]:
    """Whether the pattern matches (before excludeMatchedPattern), and what it was compared with."""
    if item.type == "EVENT":
        return event.event in _event_names(item.pattern), event.event
    assert item.regex is not None
    if item.type == "FILE_PATH":
        matched = any(item.regex.search(path) for path in event.changed_files)
        return matched, f"{len(event.changed_files)} changed file(s)"
    value = {
        "HEAD_REF": event.head_ref,
        "BASE_REF": event.base_ref,
        "COMMIT_MESSAGE": event.commit_message,
        "ACTOR_ACCOUNT_ID": event.actor_account_id,
    }[item.type]
    if value is None:
        # A push has no base ref: a BASE_REF filter never matches it.
        return False, "no value"
    shown = value.splitlines()[0] if value else "''"
    return item.regex.search(value) is not None, shown


def evaluate(groups: Sequence[Sequence[WebhookFilter]], event: PushEvent) -> Decision:
    """Apply the filter groups to an event: any group whose filters all pass starts a build."""
    if not groups:
        return Decision(True, "no filter groups: every event starts a build")
    failures = []
    for index, group in enumerate(groups, start=1):
        failure = None
        for item in group:
            matched, value = _match(item, event)
            if matched == item.exclude_matched_pattern:
                verb = "matched" if matched else "did not match"
                failure = f"group {index} {item.describe()} {verb} {value}"
                break
        if failure is None:
            passed = ", ".join(item.describe() for item in group)
            return Decision(True, f"filter group {index} matched: {passed}", index)
        failures.append(failure)
    return Decision(False, "no filter group matched: " + "; ".join(failures))
