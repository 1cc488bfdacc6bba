"""The canary analysis' two halves: deploy_canary_sample (plugins/modules), run by Ansible on this
machine over access logs written in edge_proxy's deploykit_json format, and the
deploy_canary_judgement filter (plugins/filter) that compares the canary with the baseline.
tests/e2e/test_14_canary.py runs both through real nginx on the stand-in's hosts.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deploykit.system import ROOT

START = 1_765_152_000  # a whole second: the window starts after the second that holds `since`


def _load_filter():
    spec = importlib.util.spec_from_file_location(
        "deploy_canary", ROOT / "plugins" / "filter" / "deploy_canary.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.deploy_canary_judgement


judge = _load_filter()
THRESHOLDS = {"min_requests": 10, "max_error_rate_increase": 0.01, "max_p95_ratio": 1.5, "p95_margin_ms": 50}


def _entry(
    second: float, *, uri="/", status=200, upstream_status="200", upstream_time="0.010", remote="172.30.0.90"
):
    return json.dumps(
        {
            "time": datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds"),
            "remote_addr": remote,
            "uri": uri,
            "status": status,
            "upstream_status": upstream_status,
            "upstream_response_time": upstream_time,
        }
    )


def _sample(run_local_play, log: Path, *, until: float = 0) -> dict:
    document, _ = run_local_play(
        f"""
- name: Count the requests in the window
  deploy_canary_sample:
    path: {log}
    since: {START + 0.5}
    until: {until}
  register: sample
"""
    )
    return document["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_the_sample_counts_users_requests_in_the_window_only(run_local_play, tmp_path):
    log = tmp_path / "access.log"
    lines = [
        _entry(START - 60, status=500, upstream_status="500"),  # before the window
        _entry(START, status=500, upstream_status="500"),  # the second that holds `since`
        _entry(START + 1, upstream_time="0.004"),
        _entry(START + 1, status=500, upstream_status="500", upstream_time="0.030"),
        _entry(START + 2, upstream_time="0.004, 0.012"),  # two attempts: the user waited for both
        _entry(START + 2, status=502, upstream_status="502", upstream_time="0.001"),
        _entry(START + 2, uri="/healthz/"),  # a probe
        _entry(START + 2, uri="/readyz/"),
        _entry(START + 3, remote="127.0.0.1"),  # the host's own smoke check
        _entry(START + 3, status=301, upstream_status="-", upstream_time="-"),  # nginx's redirect
        "not json",
        _entry(START + 4),
    ]
    log.write_text("\n".join(lines) + "\n")
    sample = _sample(run_local_play, log)
    assert sample["changed"] is False
    assert (sample["requests"], sample["errors"], sample["unparsed"]) == (5, 2, 1)
    assert sample["latency_ms"] == {"1": 1, "4": 1, "10": 1, "16": 1, "30": 1}


def test_the_sample_reads_the_rotated_log_when_the_window_began_in_it(run_local_play, tmp_path):
    log = tmp_path / "access.log"
    (tmp_path / "access.log.1").write_text(
        "\n".join([_entry(START - 5), _entry(START + 1, status=500, upstream_status="500")]) + "\n"
    )
    log.write_text(_entry(START + 2) + "\n")
    sample = _sample(run_local_play, log)
    assert (sample["requests"], sample["errors"]) == (2, 1)


def test_the_sample_stops_at_the_window_s_end(run_local_play, tmp_path):
    log = tmp_path / "access.log"
    log.write_text("\n".join([_entry(START + 1), _entry(START + 9), _entry(START + 10)]) + "\n")
    assert _sample(run_local_play, log, until=START + 5)["requests"] == 1


def test_a_long_log_is_read_back_to_the_window_only(run_local_play, tmp_path):
    log = tmp_path / "access.log"
    old = "\n".join(_entry(START - 3600 + index % 3000, uri=f"/old/{index}") for index in range(20_000))
    log.write_text(old + "\n" + "\n".join(_entry(START + 1 + index % 3) for index in range(300)) + "\n")
    sample = _sample(run_local_play, log)
    assert (sample["requests"], sample["unparsed"]) == (300, 0)


def test_a_missing_log_counts_no_request(run_local_play, tmp_path):
    sample = _sample(run_local_play, tmp_path / "missing.log")
    assert sample["requests"] == 0


def _side(host: str, requests: int, errors: int, latency: dict[int, int]) -> dict:
    return {
        "host": host,
        "requests": requests,
        "errors": errors,
        "latency_ms": {str(k): v for k, v in latency.items()},
    }


def test_a_canary_failing_one_request_in_five_fails():
    verdict = judge([_side("web-1", 100, 20, {10: 100})], [_side("web-2", 100, 0, {10: 100})], THRESHOLDS)
    assert verdict["verdict"] == "fail"
    assert verdict["canary"]["error_rate"] == 0.2
    assert verdict["baseline"]["error_rate"] == 0.0
    assert "5xx rate 20.00% (20 of 100)" in verdict["reasons"][0]


def test_errors_the_old_release_has_too_do_not_fail_the_canary():
    verdict = judge([_side("web-1", 100, 5, {10: 100})], [_side("web-2", 200, 10, {10: 200})], THRESHOLDS)
    assert verdict["verdict"] == "pass", verdict


def test_the_p95_is_over_both_sides_requests_and_fails_only_over_ratio_and_margin():
    baseline = [_side("web-2", 50, 0, {20: 50}), _side("web-3", 50, 0, {40: 50})]
    # p95 of the baseline is 40 ms (both hosts merged); 95 ms is over 40 x 1.5 and over 40 + 50.
    slow = judge([_side("web-1", 100, 0, {10: 90, 95: 10})], baseline, THRESHOLDS)
    assert (slow["verdict"], slow["baseline"]["p95_ms"], slow["canary"]["p95_ms"]) == ("fail", 40, 95)
    # 85 ms is over the ratio but within the margin: noise on a fast page.
    assert judge([_side("web-1", 100, 0, {10: 90, 85: 10})], baseline, THRESHOLDS)["verdict"] == "pass"


def test_too_few_requests_on_either_side_are_not_judged():
    few = judge([_side("web-1", 9, 9, {10: 9})], [_side("web-2", 100, 0, {10: 100})], THRESHOLDS)
    assert few["verdict"] == "too_few"
    assert "canary 9 < 10" in few["reasons"][0]
    few_baseline = judge([_side("web-1", 100, 0, {10: 100})], [_side("web-2", 3, 0, {10: 3})], THRESHOLDS)
    assert few_baseline["verdict"] == "too_few"
    assert "baseline 3 < 10" in few_baseline["reasons"][0]


@pytest.mark.parametrize(("errors", "verdict"), [(0, "pass"), (1, "pass"), (2, "fail")])
def test_without_a_baseline_the_error_rate_alone_is_judged(errors, verdict):
    judged = judge([_side("web-1", 100, errors, {10: 100})], [], THRESHOLDS)
    assert (judged["verdict"], judged["baseline"]) == (verdict, None)
