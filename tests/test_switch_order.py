"""deploykit.switch_order: counting answers from a replaced release."""

from __future__ import annotations

from deploykit.switch_order import Answer, old_after_new


def test_a_clean_switch_counts_nothing():
    answers = [Answer(0.0, 0.1, "v1"), Answer(0.2, 0.3, "v2"), Answer(0.4, 0.5, "v2")]
    assert old_after_new(answers) == 0


def test_an_old_answer_to_a_request_sent_after_the_first_new_answer_counts():
    answers = [
        Answer(0.0, 0.1, "v1"),
        Answer(0.2, 0.3, "v2"),
        Answer(0.35, 0.4, "v1"),
        Answer(0.5, 0.6, "v1"),
    ]
    assert old_after_new(answers) == 2


def test_an_old_answer_to_a_request_sent_before_the_first_new_answer_arrived_does_not_count():
    # In flight on the old release while the new one answered: the old release finishes it.
    answers = [Answer(0.0, 0.1, "v1"), Answer(0.25, 0.3, "v2"), Answer(0.2, 0.9, "v1")]
    assert old_after_new(answers) == 0


def test_the_order_does_not_depend_on_the_order_of_the_list():
    answers = [Answer(0.5, 0.6, "v1"), Answer(0.2, 0.3, "v2"), Answer(0.0, 0.1, "v1")]
    assert old_after_new(answers) == 1


def test_a_stream_that_saw_one_release_counts_nothing():
    assert old_after_new([Answer(0.0, 0.1, "v1"), Answer(0.2, 0.3, "v1")]) == 0
    assert old_after_new([]) == 0
