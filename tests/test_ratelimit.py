"""Rate-limit-aware concurrency through the real openai client against loopback servers
that enforce a requests budget (tests.support.ratelimit_server): no sample fails,
accuracy is exactly the designed one, and every 429 is counted per case."""

from __future__ import annotations

import pytest

from benchmark.core import BenchError
from benchmark.parsing import parse_answer
from tests.support.openai_stub import CORRECT, WRONG, OpenAIStub
from tests.support.ratelimit_server import RateLimitedStub, go_duration
from tests.test_openai_provider import make_requests, provider

STYLES = (CORRECT, CORRECT, WRONG, CORRECT)  # designed accuracy 0.75


def accuracy(answers, reqs) -> float:
    truth = {r.sample_id: int(r.sample_id) % 4 for r in reqs}
    return sum(parse_answer(a.raw, 4) == truth[a.sample_id] for a in answers) / len(reqs)


@pytest.mark.parametrize("hints", [{"retry_after": True, "headers": True}, {"retry_after": True, "headers": False},
                                   {"retry_after": False, "headers": False}],
                         ids=["retry-after+headers", "retry-after", "no-hints"])
def test_no_sample_fails_under_a_requests_budget(hints):
    reqs = make_requests(40, styles=STYLES)
    with RateLimitedStub(budget=8, window_s=0.5, delay_s=0.02, **hints) as stub:
        p = provider(stub, concurrency=16)
        p.backoff_s = 0.05  # without hints the client backs off on its own: keep the test short
        answers = p.classify(reqs)
        traffic = p.take_traffic()
    assert [a.error for a in answers] == [None] * 40
    assert accuracy(answers, reqs) == 0.75
    assert stub.max_in_any_window() <= 8  # the stand-in kept its budget
    # every request the server saw is counted, and every 429 it sent
    assert traffic["requests"] == len(stub.requests) == 40 + stub.refused
    assert traffic["rate_limited"] == stub.refused and traffic["failed_attempts"] == 0
    assert traffic["concurrency"] == 16 and traffic["min_concurrency"] == 1
    assert 1 <= traffic["limit_min"] <= traffic["limit_start"] == 16
    if stub.refused:
        assert traffic["limit_min"] < 16  # a 429 cut the limit
    assert 0 < traffic["mean_in_flight"] <= 16


def test_a_burst_beyond_the_budget_is_rate_limited_and_cuts_the_limit():
    """16 requests sent together to a budget of 4: at least 12 are refused the first time."""
    reqs = make_requests(16, styles=STYLES)
    with RateLimitedStub(budget=4, window_s=0.3, delay_s=0.3) as stub:
        p = provider(stub, concurrency=16)
        answers = p.classify(reqs)
        traffic = p.take_traffic()
    assert [a.error for a in answers] == [None] * 16 and accuracy(answers, reqs) == 0.75
    assert traffic["rate_limited"] == stub.refused >= 12
    assert traffic["limit_min"] <= 8


def test_min_concurrency_equal_to_concurrency_keeps_the_limit_fixed():
    reqs = make_requests(24, styles=STYLES)
    with RateLimitedStub(budget=6, window_s=0.3, delay_s=0.02) as stub:
        p = provider(stub, concurrency=4, min_concurrency=4)
        answers = p.classify(reqs)
        traffic = p.take_traffic()
    assert [a.error for a in answers] == [None] * 24 and accuracy(answers, reqs) == 0.75
    assert traffic["limit_start"] == traffic["limit_min"] == traffic["limit_end"] == 4
    assert stub.max_in_flight <= 4


def test_429s_have_their_own_retry_budget():
    with OpenAIStub() as stub:
        stub.fail_next(5, status=429)
        [answer] = provider(stub, max_retries=0, rate_limit_retries=5).classify(make_requests(1))
    assert answer.error is None and answer.raw == "Category 0" and len(stub.requests) == 6
    with OpenAIStub() as stub:
        stub.fail_next(3, status=429)
        [answer] = provider(stub, max_retries=6, rate_limit_retries=2).classify(make_requests(1))
    assert answer.raw == "" and answer.label is None and len(stub.requests) == 3
    assert answer.error.startswith("rate limited (429) 3 times: RateLimitError: ")


def test_a_retry_after_beyond_two_minutes_is_a_failed_answer_at_once():
    with OpenAIStub() as stub:
        stub.odd_next(1, "429-long")
        [answer] = provider(stub).classify(make_requests(1))
    assert len(stub.requests) == 1 and answer.label is None
    assert answer.error.startswith("rate limited (429) 1 times (the server asks to wait 3600 s)")


def test_an_exhausted_quota_stops_the_run_with_a_clear_message():
    with OpenAIStub() as stub:
        stub.odd_next(1, "quota")
        with pytest.raises(BenchError, match=r"server refused the request \(429 insufficient_quota\): "
                                             r".*You exceeded your current quota"):
            provider(stub).classify(make_requests(1))
    assert len(stub.requests) == 1


def test_guided_choice_survives_a_retry():
    """Server-specific keys (extra_body) go with every attempt, not only the first."""
    with OpenAIStub() as stub:
        stub.fail_next(1, status=503)
        [answer] = provider(stub, constrain="guided-choice").classify(make_requests(1))
    assert answer.error is None
    assert [r["body"].get("guided_choice") for r in stub.requests] == [["0", "1", "2", "3"]] * 2


@pytest.mark.parametrize(("seconds", "text"), [(0.02, "20ms"), (1.0, "1s"), (1.5, "1.5s"), (360.0, "6m0s")])
def test_stand_in_writes_resets_as_openai_does(seconds, text):
    assert go_duration(seconds) == text
