"""Whether a host's switch of releases was atomic, judged from the answers to a stream of requests.

The switch is atomic when, once the host has answered one request from the new release, no request
sent after that answer arrived is answered by the old release. Requests sent before it may still
be: they can be in flight on the old release, which finishes them. One switch per stream: the
releases are ordered by when each first answered.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    """One answered request: when it was sent, when its answer arrived (one clock), which release."""

    sent: float
    received: float
    version: str


def old_after_new(answers: Iterable[Answer]) -> int:
    """How many answers came from a release that a later one had already replaced in an earlier
    answer: sent after the first answer of a release that first answered after theirs."""
    ordered = sorted(answers, key=lambda answer: answer.received)
    first: dict[str, float] = {}
    for answer in ordered:
        first.setdefault(answer.version, answer.received)
    return sum(
        1
        for answer in ordered
        if any(first[answer.version] < arrived < answer.sent for arrived in first.values())
    )
