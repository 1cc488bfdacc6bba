# Copyright: deploykit
# MIT License (see LICENSE)
"""The canary analysis' verdict: the canary hosts' requests against the baseline's, from the
samples that the deploy_canary_sample module took on each side (playbooks/tasks/canary.yml).

A filter, not a module: it is arithmetic on what the controller already holds, and a module run
costs a few hundred milliseconds of CPU for nothing a host knows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any


def _side(samples: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One side's figures over all its hosts: the p95 from the merged response times, not an
    average of each host's p95."""
    hosts, requests, errors, latency = [], 0, 0, Counter()
    for sample in samples:
        hosts.append(sample.get("host", ""))
        requests += int(sample.get("requests", 0))
        errors += int(sample.get("errors", 0))
        latency.update({int(ms): int(count) for ms, count in (sample.get("latency_ms") or {}).items()})
    return {
        "hosts": hosts,
        "requests": requests,
        "errors": errors,
        "error_rate": round(errors / requests, 4) if requests else 0.0,
        "p95_ms": _percentile(latency, 0.95),
    }


def _percentile(counts: Counter, fraction: float) -> int | None:
    """The smallest time at or under which `fraction` of the requests were answered (nearest rank)."""
    total = sum(counts.values())
    if not total:
        return None
    rank, seen = math.ceil(fraction * total), 0
    for milliseconds in sorted(counts):
        seen += counts[milliseconds]
        if seen >= rank:
            return milliseconds
    return max(counts)


def deploy_canary_judgement(
    canary: Iterable[Mapping[str, Any]], baseline: Iterable[Mapping[str, Any]], thresholds: Mapping[str, Any]
) -> dict[str, Any]:
    """`verdict` pass, fail or too_few, the `reasons` for it, and both sides' figures.

    thresholds: min_requests (each side, where there is a baseline), max_error_rate_increase (the
    canary's 5xx rate over the baseline's, as a fraction), max_p95_ratio and p95_margin_ms (the
    canary's p95 fails only when it is over both the baseline's times the ratio and the baseline's
    plus the margin: a few milliseconds more on a fast page is noise, not a regression).
    """
    canary_side, baseline_side = _side(canary), _side(baseline)
    has_baseline = bool(baseline_side["hosts"])
    minimum = int(thresholds["min_requests"])
    short = [
        f"{name} {side['requests']} < {minimum}"
        for name, side in (("canary", canary_side), ("baseline", baseline_side))
        if (name == "canary" or has_baseline) and side["requests"] < minimum
    ]
    result = {"canary": canary_side, "baseline": baseline_side if has_baseline else None}
    if short:
        return {**result, "verdict": "too_few", "reasons": [f"too few requests to judge: {', '.join(short)}"]}
    reasons = []
    increase = float(thresholds["max_error_rate_increase"])
    allowed_rate = (baseline_side["error_rate"] if has_baseline else 0.0) + increase
    if canary_side["error_rate"] > allowed_rate:
        compared = (
            f"baseline {baseline_side['error_rate']:.2%} + {increase:.2%}"
            if has_baseline
            else "no host on the old release to compare with"
        )
        reasons.append(
            f"5xx rate {canary_side['error_rate']:.2%} ({canary_side['errors']} of {canary_side['requests']})"
            f" is over {allowed_rate:.2%} ({compared})"
        )
    canary_p95, baseline_p95 = canary_side["p95_ms"], baseline_side["p95_ms"]
    if has_baseline and canary_p95 is not None and baseline_p95 is not None:
        ratio, margin = float(thresholds["max_p95_ratio"]), int(thresholds["p95_margin_ms"])
        if canary_p95 > baseline_p95 * ratio and canary_p95 > baseline_p95 + margin:
            reasons.append(
                f"p95 {canary_p95} ms is over the baseline's {baseline_p95} ms x {ratio:g} and + {margin} ms"
            )
    return {**result, "verdict": "fail" if reasons else "pass", "reasons": reasons}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"deploy_canary_judgement": deploy_canary_judgement}
