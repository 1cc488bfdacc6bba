"""A request stream for a rollout: threads that ask each target which release answers, bounded in
count and time, keeping every answer and failure per target."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from deploykit.switch_order import Answer, old_after_new

# Failures kept with their reason; every one is counted.
FAILURES_KEPT = 20


class StatusError(Exception):
    """An answer other than 200 OK."""


@dataclass(frozen=True)
class Reply:
    """Which release answered, and which host, where the target leaves that to a load balancer."""

    version: str
    host: str | None = None


# Asks a target (by name) which release serves it, within a timeout in seconds; raises on failure.
Fetch = Callable[[str, float], Reply]


def release_of(status: int, body: str | bytes) -> dict[str, Any]:
    """The release an answer names (/healthz/ and /version.json give the same JSON), or StatusError."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    if status != 200:
        raise StatusError(f"HTTP {status}: {' '.join(text.split())[:160]}")
    return json.loads(text)


@dataclass
class StreamResult:
    """What a stream sent and what answered, per target (a name its fetch understands)."""

    sent: int = 0
    failed: int = 0
    seconds: float = 0.0
    # The first FAILURES_KEPT failures: target, time of day, what happened instead of an answer.
    failures: list[str] = field(default_factory=list)
    # time.monotonic() at which each failed request was sent.
    failed_at: list[float] = field(default_factory=list)
    # Per target: how often each version answered.
    versions: dict[str, Counter[str]] = field(default_factory=dict)
    # Where a load balancer chose the host: which host answered, how often.
    answered_by: Counter[str] = field(default_factory=Counter)
    # Per target: every answer, when sent and received and from which version.
    answers: dict[str, list[Answer]] = field(default_factory=dict)

    def old_after_new(self) -> dict[str, int]:
        """Per target: answers from the old release to requests sent after the new one had answered."""
        return {target: old_after_new(answers) for target, answers in self.answers.items()}


class RequestStream:
    """Asks each target which release serves it, from entering the `with` block until leaving it
    or until the bounds: at most `max_requests` in all and `max_seconds` long. How a target is
    reached (straight to a host's nginx, through the load balancer, with which Host or SNI) is the
    caller's `fetch`; every answer is kept per target, for deploykit/switch_order.py to judge each
    host's switch, and every failure with when it was sent and why.

    `threads_per_target` threads per target, each starting a request every `interval` seconds at
    most (0: one right after the other). `timeout` bounds one request: `fetch` gets it, and leaving
    waits that long (plus 5 s) for each thread to finish the request it is in.

    The defaults, 2 threads x 25/s = 50 requests a second per target, are dense enough that a
    reload or a stopped container that drops requests for a few milliseconds is caught, and light
    enough that on a 2-core machine the clients do not starve the rollout they watch.
    """

    def __init__(
        self,
        targets: Sequence[str],
        fetch: Fetch,
        *,
        threads_per_target: int = 2,
        interval: float = 0.04,
        max_requests: int = 200_000,
        max_seconds: float = 600,
        timeout: float = 10,
    ) -> None:
        self.targets = list(targets)
        self._fetch = fetch
        self.threads_per_target, self.interval = threads_per_target, interval
        self.max_requests, self.max_seconds, self.timeout = max_requests, max_seconds, timeout
        self.result = StreamResult(
            versions={target: Counter() for target in self.targets},
            answers={target: [] for target in self.targets},
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = 0.0

    def _work(self, target: str, deadline: float) -> None:
        next_start = time.monotonic()
        while not self._stop.wait(max(0.0, next_start - time.monotonic())) and time.monotonic() < deadline:
            sent_at = time.monotonic()
            next_start = sent_at + self.interval
            with self._lock:
                if self.result.sent >= self.max_requests:
                    return
                self.result.sent += 1
            reply, outcome = None, ""
            try:
                reply = self._fetch(target, self.timeout)
            except (StatusError, OSError, ValueError, KeyError, http.client.HTTPException) as error:
                outcome = f"{type(error).__name__}: {error}"
            received_at = time.monotonic()
            with self._lock:
                if reply is not None:
                    self.result.versions[target][reply.version] += 1
                    self.result.answers[target].append(Answer(sent_at, received_at, reply.version))
                    if reply.host is not None:
                        self.result.answered_by[reply.host] += 1
                else:
                    self.result.failed += 1
                    self.result.failed_at.append(sent_at)
                    if len(self.result.failures) < FAILURES_KEPT:
                        self.result.failures.append(f"{target} at {time.strftime('%X')}: {outcome}")

    def __enter__(self) -> RequestStream:
        self._started = time.monotonic()
        deadline = self._started + self.max_seconds
        for target in self.targets:
            for _ in range(self.threads_per_target):
                thread = threading.Thread(target=self._work, args=(target, deadline), daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        self.result.seconds = time.monotonic() - self._started
