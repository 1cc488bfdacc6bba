"""CodeBuild webhook filter groups applied to push events."""

from __future__ import annotations

import pytest

from deploykit.codebuild import load_project
from deploykit.webhook_filter import FilterGroupsError, PushEvent, evaluate, parse_filter_groups


def groups(*raw_groups: list[dict]) -> list:
    return parse_filter_groups(list(raw_groups))


PUSH = {"type": "EVENT", "pattern": "PUSH"}


def head_ref(pattern: str, *, exclude: bool = False) -> dict:
    return {"type": "HEAD_REF", "pattern": pattern, "excludeMatchedPattern": exclude}


def push(ref: str = "refs/heads/main", **fields: object) -> PushEvent:
    return PushEvent(head_ref=ref, **fields)


def test_project_definition_builds_pushes_to_main():
    project_groups = parse_filter_groups(load_project().filter_groups)
    decision = evaluate(project_groups, push("refs/heads/main"))
    assert decision.accepted
    assert decision.reason == "filter group 1 matched: EVENT PUSH, HEAD_REF ^refs/heads/main$"


def test_project_definition_ignores_other_branches_and_says_why():
    project_groups = parse_filter_groups(load_project().filter_groups)
    decision = evaluate(project_groups, push("refs/heads/feature"))
    assert not decision.accepted
    assert decision.reason == (
        "no filter group matched: group 1 HEAD_REF ^refs/heads/main$ did not match refs/heads/feature"
    )


def test_project_definition_has_the_api_shape():
    raw = load_project().filter_groups
    assert raw == [
        [
            {"type": "EVENT", "pattern": "PUSH", "excludeMatchedPattern": False},
            {"type": "HEAD_REF", "pattern": "^refs/heads/main$", "excludeMatchedPattern": False},
        ]
    ]


@pytest.mark.parametrize(("ref", "accepted"), [("refs/tags/v1.2", True), ("refs/heads/v1.2", False)])
def test_tag_filter(ref: str, accepted: bool):
    assert evaluate(groups([PUSH, head_ref("^refs/tags/v")]), push(ref)).accepted is accepted


def test_excluded_pattern_rejects_what_it_matches():
    no_tags = groups([PUSH, head_ref("^refs/tags/", exclude=True)])
    decision = evaluate(no_tags, push("refs/tags/v1"))
    assert evaluate(no_tags, push("refs/heads/any")).accepted
    assert not decision.accepted
    assert (
        decision.reason
        == "no filter group matched: group 1 HEAD_REF ^refs/tags/ (excluded) matched refs/tags/v1"
    )


def test_any_group_may_accept():
    two = groups([PUSH, head_ref("^refs/heads/main$")], [PUSH, head_ref("^refs/heads/release/")])
    decision = evaluate(two, push("refs/heads/release/2.0"))
    assert decision.accepted
    assert decision.group == 2


def test_every_filter_of_a_group_must_match():
    group = groups([PUSH, head_ref("^refs/heads/main$"), {"type": "COMMIT_MESSAGE", "pattern": "deploy"}])
    assert not evaluate(group, push(commit_message="fix typo")).accepted


def test_reason_lists_each_group():
    two = groups([PUSH, head_ref("^refs/heads/main$")], [PUSH, head_ref("^refs/tags/")])
    assert evaluate(two, push("refs/heads/x")).reason == (
        "no filter group matched: group 1 HEAD_REF ^refs/heads/main$ did not match refs/heads/x; "
        "group 2 HEAD_REF ^refs/tags/ did not match refs/heads/x"
    )


@pytest.mark.parametrize(
    ("pattern", "accepted"), [("PUSH, PULL_REQUEST_CREATED", True), ("PULL_REQUEST_MERGED", False)]
)
def test_event_pattern_is_a_comma_separated_list(pattern: str, accepted: bool):
    assert evaluate(groups([{"type": "EVENT", "pattern": pattern}]), push()).accepted is accepted


def test_pattern_is_searched_not_anchored():
    unanchored = groups([PUSH, head_ref("main")])
    assert evaluate(unanchored, push("refs/heads/maintenance")).accepted


@pytest.mark.parametrize(
    ("files", "accepted"),
    [(("docs/readme.md", "app/views.py"), True), (("docs/readme.md",), False), ((), False)],
)
def test_file_path_matches_if_any_changed_file_matches(files: tuple[str, ...], accepted: bool):
    app_changes = groups([PUSH, {"type": "FILE_PATH", "pattern": "^app/"}])
    assert evaluate(app_changes, push(changed_files=files)).accepted is accepted


def test_excluded_file_path_rejects_a_push_touching_it():
    no_docs = groups([PUSH, {"type": "FILE_PATH", "pattern": "^docs/", "excludeMatchedPattern": True}])
    assert not evaluate(no_docs, push(changed_files=("docs/a.md", "app/b.py"))).accepted
    assert evaluate(no_docs, push(changed_files=("app/b.py",))).accepted


def test_commit_message_skip_marker():
    skip_ci = groups(
        [PUSH, {"type": "COMMIT_MESSAGE", "pattern": r"\[skip ci\]", "excludeMatchedPattern": True}]
    )
    assert not evaluate(skip_ci, push(commit_message="Fix typo [skip ci]\n\nbody")).accepted
    assert evaluate(skip_ci, push(commit_message="Fix typo")).accepted


def test_actor_account_id():
    only_alice = groups([PUSH, {"type": "ACTOR_ACCOUNT_ID", "pattern": "^alice@"}])
    assert evaluate(only_alice, push(actor_account_id="alice@example.test")).accepted
    assert not evaluate(only_alice, push(actor_account_id="bob@example.test")).accepted


def test_base_ref_never_matches_a_push():
    assert not evaluate(groups([PUSH, {"type": "BASE_REF", "pattern": ".*"}]), push()).accepted


def test_no_filter_groups_builds_every_push():
    assert evaluate(parse_filter_groups(None), push("refs/heads/anything")).accepted


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([[head_ref("^refs/heads/main$")]], "needs an EVENT filter"),
        ([[PUSH, {"type": "BRANCH", "pattern": "x"}]], "type 'BRANCH' is not one of"),
        ([[{"type": "EVENT", "pattern": "PUSHED"}]], "unknown event(s) PUSHED"),
        ([[PUSH, head_ref("^refs/(heads")]], "is not a regular expression"),
        ([[PUSH, {"type": "HEAD_REF", "pattern": "x", "exclude": True}]], "unknown key(s) exclude"),
        ([PUSH], "expected a non-empty list of filters"),
    ],
)
def test_malformed_filter_groups_are_refused(raw: list, message: str):
    with pytest.raises(FilterGroupsError) as raised:
        parse_filter_groups(raw)
    assert message in str(raised.value)
