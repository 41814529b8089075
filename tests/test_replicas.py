"""Data-parallel replicas: ``base_url`` as a list of servers of one model, balanced, with a
server that dies or fails for a while costing no sample, against loopback servers."""

from __future__ import annotations

import json

import pytest

from benchmark.config import parse_config
from benchmark.core import BenchError
from benchmark.parsing import parse_answer
from benchmark.provenance import model_info
from benchmark.report import Report
from tests.support.openai_stub import CORRECT, WRONG, OpenAIStub
from tests.test_openai_provider import FAKE_KEY, make_requests

STYLES = (CORRECT, CORRECT, WRONG, CORRECT)  # designed accuracy 0.75


def replicas_provider(*stubs: OpenAIStub, **settings):
    from benchmark.config import ModelConfig
    from benchmark.providers.openai_chat import OpenAIChatProvider

    model = ModelConfig("stub", "openai", "stub-vlm", settings={"base_url": [s.base_url for s in stubs],
                                                                "api_key_env": "STUB_KEY", **settings})
    return OpenAIChatProvider.from_config(model, api_key=FAKE_KEY)


def accuracy(answers, reqs) -> float:
    truth = {r.sample_id: int(r.sample_id) % 4 for r in reqs}
    return sum(parse_answer(a.raw, 4) == truth[a.sample_id] for a in answers) / len(reqs)


def test_requests_are_balanced_over_replicas():
    reqs = make_requests(40, styles=STYLES)
    with OpenAIStub(delay_s=0.02) as a, OpenAIStub(delay_s=0.02) as b:
        p = replicas_provider(a, b, concurrency=4)
        answers = p.classify(reqs)
        traffic = p.take_traffic()
    assert [x.error for x in answers] == [None] * 40 and accuracy(answers, reqs) == 0.75
    assert a.answered + b.answered == 40 and a.answered >= 10 and b.answered >= 10
    assert a.max_in_flight <= 4 and b.max_in_flight <= 4
    assert traffic["replicas"] == [{"url": a.base_url, "answers": a.answered, "failures": 0},
                                   {"url": b.base_url, "answers": b.answered, "failures": 0}]


def test_a_replica_that_dies_mid_run_costs_no_sample():
    """Replica A dies right after its 5th answer (requests in flight there get no answer, new
    connections are refused): they go to B at once, and every sample is answered."""
    reqs = make_requests(40, styles=STYLES)
    with OpenAIStub(delay_s=0.02) as a, OpenAIStub(delay_s=0.02) as b:
        a.kill_after(5)
        p = replicas_provider(a, b, concurrency=4, max_retries=2)
        seen = []
        answers = p.classify(reqs, on_answer=seen.append)
        traffic = p.take_traffic()
    assert [x.error for x in answers] == [None] * 40 and len(seen) == 40
    assert accuracy(answers, reqs) == 0.75
    assert (a.answered, b.answered) == (5, 35) and len(a.requests) < len(b.requests)
    by_url = {r["url"]: r for r in traffic["replicas"]}
    assert by_url[a.base_url]["answers"] == 5 and by_url[a.base_url]["failures"] >= 1
    assert by_url[b.base_url] == {"url": b.base_url, "answers": 35, "failures": 0}
    assert traffic["failed_attempts"] == by_url[a.base_url]["failures"]


def test_a_replica_failing_for_a_while_rests_and_comes_back():
    reqs = make_requests(40, styles=STYLES)
    with OpenAIStub(delay_s=0.05) as a, OpenAIStub(delay_s=0.05) as b:
        a.fail_next(3, status=503)
        p = replicas_provider(a, b, concurrency=2, max_retries=1)
        p._pool.cooldown_s = 0.02  # rests 0.02, 0.04, 0.08 s after its 1st, 2nd, 3rd failure in a row
        answers = p.classify(reqs)
        traffic = p.take_traffic()
    assert [x.error for x in answers] == [None] * 40 and accuracy(answers, reqs) == 0.75
    assert traffic["replicas"] == [{"url": a.base_url, "answers": a.answered, "failures": 3},
                                   {"url": b.base_url, "answers": b.answered, "failures": 0}]
    assert a.answered >= 1 and a.answered + b.answered == 40 and len(a.requests) == a.answered + 3


def test_when_every_replica_is_down_the_answer_fails_as_before():
    with OpenAIStub() as a, OpenAIStub() as b:
        p = replicas_provider(a, b, max_retries=2)
        p.backoff_s = 0.01
        a.kill()
        b.kill()
        [answer] = p.classify(make_requests(1))
    assert answer.label is None and answer.raw == ""
    assert answer.error.startswith("failed after 3 attempts: APIConnectionError")


def test_replicas_share_one_recording_that_replays_anywhere(tmp_path, monkeypatch):
    """Which replica answered is not in the recording key: recorded through two replicas,
    the case replays with a different server list, asking nothing."""
    from tests.support.folder_task import KEY, folder_world, run_case, session

    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub(delay_s=0.01) as a, OpenAIStub(delay_s=0.01) as b:
        raw = folder_world(tmp_path, a, 10)
        raw["models"]["stub"]["base_url"] = [a.base_url, b.base_url]
        raw["models"]["stub"]["concurrency"] = 2
        live = run_case(session(raw, tmp_path, "once"))
        answered = (a.answered, b.answered)
    assert sum(answered) == 10 and min(answered) >= 1
    assert live.traffic["requests"] == 10 and len(live.traffic["replicas"]) == 2
    assert sorted(r["answers"] for r in live.traffic["replicas"]) == sorted(answered)
    recording = next((tmp_path / "cassettes-from-test-server").glob("*.jsonl")).read_text()
    assert a.base_url not in recording and b.base_url not in recording and KEY not in recording
    with OpenAIStub() as c:
        raw["models"]["stub"]["base_url"] = [c.base_url]
        again = run_case(session(raw, tmp_path, "none"))
        assert c.requests == []
    assert again.scores == live.scores and again.traffic is None and again.cached == 10
    # the results JSON and the reports say what the live case met; the replayed one shows nothing
    data = json.loads(json.dumps(live.to_json()))
    assert data["traffic"] == live.traffic
    assert type(live).from_json(data).traffic == live.traffic
    detail = Report([live]).detail()
    assert "traffic: 10 requests sent, 0 rate limited (429), 0 failed (5xx, connection, malformed)" in detail
    assert f"replicas: {a.base_url} {answered[0]} answers, 0 failures; {b.base_url} {answered[1]} answers" in detail
    assert "traffic: 10 requests sent" in Report([live]).html()
    assert "traffic:" not in Report([again]).detail() and "traffic:" not in Report([again]).html()


def parse(models: dict):
    return parse_config({"models": models})


def test_base_url_list_is_checked_url_by_url_without_echoing_secrets():
    ok = parse({"m": {"model": "m", "base_url": ["http://gpu1:8000/v1", "http://gpu2:8000/v1"]}})
    assert ok.models["m"].settings["base_url"] == ["http://gpu1:8000/v1", "http://gpu2:8000/v1"]
    with pytest.raises(BenchError) as info:
        parse({"m": {"model": "m", "base_url": ["http://gpu1:8000/v1", "http://u:hunter2@gpu2/v1"]}})
    assert str(info.value).startswith("models.m: expected 'base_url[1]' without credentials")
    assert "hunter2" not in str(info.value)
    with pytest.raises(BenchError, match=r"models\.m: expected 'base_url\[0\]' as an http:// or https:// URL, "
                                         r"found 'gpu1:8000'"):
        parse({"m": {"model": "m", "base_url": ["gpu1:8000"]}})
    with pytest.raises(BenchError, match=r"models\.m: expected 'base_url' as an http:// or https:// URL or a "
                                         r"non-empty list of them, found \[\]"):
        parse({"m": {"model": "m", "base_url": []}})
    with pytest.raises(BenchError, match=r"models\.m: expected distinct URLs in 'base_url'"):
        parse({"m": {"model": "m", "base_url": ["http://a/v1", "http://a/v1"]}})


def test_min_concurrency_is_checked_against_concurrency():
    with pytest.raises(BenchError, match=r"models\.m: expected 'min_concurrency' <= concurrency \(4\), found 5"):
        parse({"m": {"model": "m", "concurrency": 4, "min_concurrency": 5}})
    assert parse({"m": {"model": "m", "concurrency": 4, "min_concurrency": 4}}).models["m"]


def test_provenance_keeps_the_replica_list_redacted_and_leaves_out_operational_settings():
    model = parse({"m": {"model": "m", "base_url": ["http://gpu1:8000/v1", "http://gpu2:8000/v1"],
                         "min_concurrency": 2, "rate_limit_retries": 3}}).models["m"]
    info = model_info(model)
    assert info["settings"] == {"base_url": ["http://gpu1:8000/v1", "http://gpu2:8000/v1"]}
