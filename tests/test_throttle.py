"""The adaptive concurrency limit, the rate-limit headers and the replica pool
(``benchmark.providers.throttle``), on a hand-moved clock: no HTTP, no sleeping."""

from __future__ import annotations

import email.utils
import threading
import time

import pytest

from benchmark.providers.throttle import (
    FAILED,
    LIMITED,
    OK,
    Budget,
    ReplicaPool,
    Throttle,
    header_budget,
    parse_duration,
    retry_after_s,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("text", "seconds"), [
    ("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5), ("7.66s", 7.66),
    ("250us", 0.00025), ("0", 0.0),
])
def test_openai_reset_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "  ", "soon", "5x", "1s2", "-1", "m", None, "inf"])
def test_unreadable_durations_are_none(text):
    assert parse_duration(text) is None


def test_retry_after_prefers_milliseconds_then_seconds_then_a_date():
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == pytest.approx(0.25)
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after": "-3"}) == 0.0
    assert retry_after_s({"retry-after": "whenever"}) is None
    assert retry_after_s({}) is None and retry_after_s(None) is None
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 50 < retry_after_s({"retry-after": in_a_minute}) <= 60


def test_header_budget_in_requests_and_tokens():
    headers = {"x-ratelimit-limit-requests": "20", "x-ratelimit-remaining-requests": "3",
               "x-ratelimit-reset-requests": "1.7s"}
    assert header_budget(headers, None) == Budget(fits=3, refill_s=pytest.approx(0.1), most=20)
    # tokens bind once a request's use is known: 1,000 left at 400 a request is 2 requests
    headers |= {"x-ratelimit-limit-tokens": "30000", "x-ratelimit-remaining-tokens": "1000",
                "x-ratelimit-reset-tokens": "58s"}
    tokens = header_budget(headers, 400.0)
    assert tokens.fits == 2 and tokens.refill_s == pytest.approx(400 * 58 / 29000) and tokens.most == 75
    assert header_budget(headers, None).fits == 3
    # without the limit, one request's refill is taken as the whole reset
    assert header_budget({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"},
                         None) == Budget(fits=0, refill_s=360.0, most=float("inf"))
    assert header_budget({"content-type": "application/json"}, 100.0) is None and header_budget(None, None) is None


def test_aimd_halves_once_per_window_and_grows_by_one_per_window_of_successes():
    t = Throttle(maximum=8, floor=2, clock=Clock())
    tickets = [t.acquire() for _ in range(8)]
    assert t.limit == 8 and t.in_flight == 8
    t.release(tickets[0], LIMITED)
    assert t.limit == 4
    t.release(tickets[1], LIMITED)  # sent before the cut: no second cut for the same window
    assert t.limit == 4
    for ticket in tickets[2:6]:  # 4 successes = one window at limit 4
        t.release(ticket, OK)
    assert t.limit == 5
    for ticket in tickets[6:]:
        t.release(ticket, OK)
    assert t.limit == 5
    for _ in range(5):  # each 429 of a request sent after the last cut cuts again, never below the floor
        t.release(t.acquire(), LIMITED)
    assert t.limit == 2
    for _ in range(200):  # and successes never lift it above the maximum
        t.release(t.acquire(), OK)
    assert t.limit == 8
    stats = t.take_stats()
    assert (stats["requests"], stats["rate_limited"], stats["limit_start"], stats["limit_min"],
            stats["limit_end"]) == (213, 7, 8, 2, 8)


def test_limit_holds_requests_back_until_one_ends():
    t = Throttle(maximum=4, floor=1)
    first = [t.acquire() for _ in range(4)]
    t.release(first[0], LIMITED)  # limit 2; 3 still in flight
    got: list[str] = []
    waiter = threading.Thread(target=lambda: (t.acquire(), got.append("sent")))
    waiter.start()
    waiter.join(0.2)
    assert got == [] and t.in_flight == 3
    t.release(first[1], OK)
    waiter.join(0.2)
    assert got == [] and t.in_flight == 2  # 2 in flight = the limit
    t.release(first[2], OK)
    waiter.join(5)
    assert got == ["sent"] and t.in_flight == 2


def test_retry_after_pauses_every_request():
    clock = Clock()
    t = Throttle(maximum=4, clock=clock)
    a, b = t.acquire(), t.acquire()
    assert t.release(a, LIMITED, headers={"retry-after-ms": "1500"}) == pytest.approx(1.5)
    assert t.wait_s() == pytest.approx(1.5)
    clock.now += 1.0
    assert t.wait_s() == pytest.approx(0.5)
    t.release(b, OK)  # an answer does not lift the pause
    assert t.wait_s() == pytest.approx(0.5)
    clock.now += 0.5
    assert t.wait_s() == 0.0
    # a wait beyond what is worth waiting for is returned, and pauses nothing
    c = t.acquire()
    assert t.release(c, LIMITED, headers={"retry-after": "3600"}) == 3600.0 and t.wait_s() == 0.0


def test_remaining_requests_hold_back_before_a_429_counting_requests_sent_since():
    clock = Clock()
    t = Throttle(maximum=10, clock=clock)
    t1, t2, t3 = t.acquire(), t.acquire(), t.acquire()
    # when t1 was counted, 2 remained of 10; t2 and t3 went after it: nothing fits now,
    # and one request's share of the 1 s reset is 0.125 s
    budget = {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "2",
              "x-ratelimit-reset-requests": "1s"}
    t.release(t1, OK, headers=budget)
    assert t.wait_s() == 0.125
    clock.now += 0.125
    assert t.wait_s() == 0.0
    t4 = t.acquire()
    assert t.wait_s() == 0.125  # the refilled one is spent
    # newer news updates the bucket (t4 went after t3: 5 - 1, plus 0.125 s of refill); older news does not
    t.release(t3, OK, headers={**budget, "x-ratelimit-remaining-requests": "5"})
    assert t.wait_s() == 0.0
    t.release(t2, OK, headers={**budget, "x-ratelimit-remaining-requests": "0"})  # older than t3: ignored
    assert t.wait_s() == 0.0
    t.release(t4, OK)


def test_effective_concurrency_is_the_mean_in_flight_over_the_live_part():
    clock = Clock()
    t = Throttle(maximum=4, clock=clock)
    assert t.take_stats() is None  # nothing sent: nothing to report
    a, b = t.acquire(), t.acquire()
    clock.now += 1.0
    t.release(a, OK)
    c = t.acquire()
    clock.now += 1.0
    t.release(b, FAILED)
    clock.now += 2.0
    t.release(c, OK)  # 2 in flight for 2 s, then 1 for 2 s: 1.5 on average over 4 s
    stats = t.take_stats(replicas=[])
    assert stats == {"requests": 3, "rate_limited": 0, "failed_attempts": 1, "mean_in_flight": 1.5,
                     "live_s": 4.0, "limit_start": 4, "limit_min": 4, "limit_end": 4, "concurrency": 4,
                     "min_concurrency": 1, "replicas": []}
    assert t.take_stats() is None  # counted once


def test_floor_above_maximum_is_refused():
    with pytest.raises(ValueError, match="floor 3, maximum 2"):
        Throttle(maximum=2, floor=3)


def test_replica_pool_balances_rests_a_failing_one_and_probes_it_back():
    clock = Clock()
    pool = ReplicaPool(["http://a/v1", "http://b/v1"], make_client=lambda url: url, cooldown_s=5.0, clock=clock)
    picks = [pool.pick() for _ in range(4)]
    assert [r.url for r in picks] == ["http://a/v1", "http://b/v1", "http://a/v1", "http://b/v1"]
    a, b = pool.replicas
    for r in picks[1:]:
        pool.done(r, ok=True)
    pool.done(picks[0], ok=False)  # a fails: it rests 5 s
    assert [pool.pick().url for _ in range(3)] == ["http://b/v1"] * 3
    clock.now += 5.0
    probe = pool.pick()
    assert probe is a and a.probing
    assert pool.pick() is b  # one request at a time while it probes
    pool.done(probe, ok=False)  # fails again: rests twice as long
    assert a.down_until == pytest.approx(clock.now + 10.0)
    clock.now += 10.0
    probe = pool.pick()
    pool.done(probe, ok=True)
    pool.answered(probe)
    assert not a.probing and a.strikes == 0
    assert pool.client(a) == "http://a/v1"
    assert pool.take_stats() == [{"url": "http://a/v1", "answers": 1, "failures": 2},
                                 {"url": "http://b/v1", "answers": 0, "failures": 0}]


def test_when_every_replica_rests_the_one_back_soonest_is_asked():
    clock = Clock()
    pool = ReplicaPool(["http://a/v1", "http://b/v1"], make_client=lambda url: url, cooldown_s=5.0, clock=clock)
    a, b = pool.pick(), pool.pick()
    pool.done(b, ok=False)
    clock.now += 1.0
    pool.done(a, ok=False)
    assert not pool.any_up()
    assert pool.pick() is b
