"""clickmask.serving.cancelled: requests whose caller has gone are answered without running."""
from __future__ import annotations

import pytest

from clickmask.serving import cancelled


class FakeRequest:
    """Stands in for Triton's pb_utils.InferenceRequest: only is_cancelled() matters here."""

    def __init__(self, name: str, gone: bool):
        self.name, self.gone = name, gone

    def is_cancelled(self) -> bool:
        return self.gone


def run(requests):
    run.calls.append([r.name for r in requests])
    return [f"mask:{r.name}" for r in requests]


@pytest.fixture(autouse=True)
def _reset():
    run.calls = []


def test_nothing_cancelled_runs_every_request_in_one_call():
    requests = [FakeRequest("a", False), FakeRequest("b", False)]
    responses, skipped = cancelled.answer_live(requests, run, lambda: "CANCELLED")
    assert (responses, skipped) == (["mask:a", "mask:b"], 0)
    assert run.calls == [["a", "b"]]


def test_cancelled_requests_are_answered_in_place_and_not_run():
    requests = [FakeRequest("a", True), FakeRequest("b", False), FakeRequest("c", True), FakeRequest("d", False)]
    responses, skipped = cancelled.answer_live(requests, run, lambda: "CANCELLED")
    assert responses == ["CANCELLED", "mask:b", "CANCELLED", "mask:d"]
    assert skipped == 2
    assert run.calls == [["b", "d"]], "the network runs once, on the live requests only"


def test_when_every_request_is_cancelled_the_network_does_not_run():
    responses, skipped = cancelled.answer_live([FakeRequest("a", True)], run, lambda: "CANCELLED")
    assert (responses, skipped, run.calls) == (["CANCELLED"], 1, [])


def test_requests_without_is_cancelled_count_as_live():
    """Python backends older than 23.10 have no is_cancelled(): every request runs."""
    class Old:
        name = "old"

    assert cancelled.is_cancelled(Old()) is False
    assert cancelled.answer_live([Old()], run, lambda: "CANCELLED") == (["mask:old"], 0)


def test_a_run_that_answers_the_wrong_number_of_requests_is_a_bug_not_a_silent_shift():
    with pytest.raises(RuntimeError, match="answered 1 of 2"):
        cancelled.answer_live([FakeRequest("a", True), FakeRequest("b", False), FakeRequest("c", False)],
                              lambda live: ["only one"], lambda: "CANCELLED")


def test_the_message_says_what_happened_and_what_to_do():
    assert "deadline" in cancelled.MESSAGE and "timeout_s" in cancelled.MESSAGE


def test_the_error_response_is_cancelled_where_the_backend_has_the_code_and_unavailable_elsewhere():
    import types

    class TritonError:
        UNAVAILABLE, CANCELLED = "UNAVAILABLE", "CANCELLED"

        def __init__(self, message, code):
            self.message, self.code = message, code

    class InferenceResponse:
        def __init__(self, output_tensors, error):
            self.output_tensors, self.error = output_tensors, error

    pb_utils = types.SimpleNamespace(TritonError=TritonError, InferenceResponse=InferenceResponse)
    answer = cancelled.response(pb_utils)
    assert (answer.output_tensors, answer.error.code, answer.error.message) == ([], "CANCELLED", cancelled.MESSAGE)
    del TritonError.CANCELLED
    assert cancelled.response(pb_utils).error.code == "UNAVAILABLE"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class CountingRequest(FakeRequest):
    def __init__(self, name: str, gone: bool):
        super().__init__(name, gone)
        self.asked = 0

    def is_cancelled(self) -> bool:
        self.asked += 1
        return self.gone


def test_wait_watch_asks_on_the_first_execute_and_right_after_a_busy_one():
    clock = Clock()
    watch = cancelled.WaitWatch(idle_s=0.05, clock=clock)
    assert watch.may_have_waited(), "nothing known yet: ask"
    watch.finished()
    clock.now += 0.001  # the next request was waiting while this instance was busy
    assert watch.may_have_waited()
    clock.now += 0.2  # idle for 200 ms: the next request found this instance free
    assert not watch.may_have_waited()


def test_answer_live_without_the_check_runs_everything_and_asks_nothing():
    requests = [CountingRequest("a", True), CountingRequest("b", False)]
    responses, skipped = cancelled.answer_live(requests, run, lambda: "CANCELLED", check=False)
    assert (responses, skipped) == (["mask:a", "mask:b"], 0)
    assert [r.asked for r in requests] == [0, 0]


def test_a_queued_request_whose_client_left_is_still_skipped_when_the_instance_was_busy():
    clock = Clock()
    watch = cancelled.WaitWatch(idle_s=0.05, clock=clock)
    watch.finished()
    clock.now += 0.0005
    requests = [CountingRequest("late", True)]
    responses, skipped = cancelled.answer_live(requests, run, lambda: "CANCELLED", check=watch.may_have_waited())
    assert (responses, skipped, requests[0].asked) == (["CANCELLED"], 1, 1)
