"""The OpenAI-compatible provider, through the real `openai` client and real
HTTP against the loopback stand-in server."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.config import ModelConfig
from benchmark.providers.openai_chat import OpenAIChatProvider, png_data_url
from benchmark.core import BenchError, Request
from tests.support.openai_stub import BARE, CORRECT, OpenAIStub, UNPARSEABLE, VERBOSE, WRONG, answer_for, decode_data_url, mark_image

FAKE_KEY = "sk-test-DISTINCTIVE-0123456789abcdef"


def make_requests(n: int, n_classes: int = 4, styles=(CORRECT,)) -> list[Request]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        img = mark_image(img, label=i % n_classes, style=styles[i % len(styles)], n_classes=n_classes)
        out.append(Request(str(i), "Which category?", img, n_classes))
    return out


def provider(stub: OpenAIStub, **settings) -> OpenAIChatProvider:
    model = ModelConfig("stub", "openai", "stub-vlm",
                        settings={"base_url": stub.base_url, "api_key_env": "STUB_KEY", **settings})
    return OpenAIChatProvider.from_config(model, api_key=FAKE_KEY)


def test_png_data_url_round_trips_pixels():
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(decode_data_url(png_data_url(img)), img)


def test_request_format_matches_the_paper_setup():
    reqs = make_requests(1)
    with OpenAIStub() as stub:
        [answer] = provider(stub).classify(reqs)
    [rec] = stub.requests
    body = rec["body"]
    assert body["model"] == "stub-vlm" and body["temperature"] == 0
    [msg] = body["messages"]
    assert msg["role"] == "user"
    kinds = [part["type"] for part in msg["content"]]
    assert kinds == ["text", "image_url"]  # one image per request
    assert msg["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert rec["texts"] == ["Which category?"]
    assert rec["headers"]["authorization"] == f"Bearer {FAKE_KEY}"
    assert answer.raw == "Category 0" and answer.usage == {"prompt_tokens": 100, "completion_tokens": 5}


def test_answers_keyed_by_sample_id_and_concurrent():
    reqs = make_requests(24, styles=(CORRECT, WRONG, UNPARSEABLE, VERBOSE, BARE))
    seen = []
    with OpenAIStub(delay_s=0.05) as stub:
        answers = provider(stub, concurrency=8).classify(reqs, on_answer=seen.append)
    assert stub.max_in_flight > 1
    assert len(seen) == 24
    by_id = {a.sample_id: a.raw for a in answers}
    for r in reqs:
        assert by_id[r.sample_id] == answer_for(r.image)


def test_concurrency_is_bounded():
    with OpenAIStub(delay_s=0.05) as stub:
        provider(stub, concurrency=3).classify(make_requests(12))
    assert 1 < stub.max_in_flight <= 3


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_with_backoff_on_429_and_5xx(status):
    with OpenAIStub() as stub:
        stub.fail_next(2, status=status)
        [answer] = provider(stub, max_retries=3).classify(make_requests(1))
    assert answer.error is None and answer.raw == "Category 0"
    assert len(stub.requests) == 3


def test_retries_on_timeout():
    with OpenAIStub() as stub:
        stub.stall_next(1, seconds=1.5)
        [answer] = provider(stub, max_retries=2, timeout_s=0.5).classify(make_requests(1))
    assert answer.error is None and answer.raw == "Category 0"
    assert len(stub.requests) == 2


def test_exhausted_retries_give_an_error_answer_not_a_class():
    with OpenAIStub() as stub:
        stub.fail_next(3, status=503)
        [answer] = provider(stub, max_retries=2).classify(make_requests(1))
    assert answer.label is None and answer.raw == ""
    assert "InternalServerError" in answer.error


def test_client_errors_stop_the_run_with_a_clear_message():
    with OpenAIStub() as stub:
        stub.fail_next(1, status=401)
        with pytest.raises(BenchError, match=r"server refused the request \(401\)"):
            provider(stub).classify(make_requests(1))


def test_missing_key_env_var_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    model = ModelConfig("gpt", "openai", "gpt-4o", settings={"api_key_env": "NO_SUCH_KEY_VAR"})
    with pytest.raises(BenchError, match=r"set the environment variable NO_SUCH_KEY_VAR"):
        OpenAIChatProvider.from_config(model)


def test_unknown_setting_is_rejected():
    model = ModelConfig("gpt", "openai", "gpt-4o", settings={"temprature": 0})
    with pytest.raises(BenchError, match=r"unknown keys \['temprature'\]"):
        OpenAIChatProvider.from_config(model, api_key="x")


def test_recording_key_changes_with_generation_settings_and_holds_no_secret():
    from benchmark.recording import content_key

    req = make_requests(1)[0]
    with OpenAIStub() as stub:
        keys = [content_key(provider(stub, **kw).canonical_request(req))
                for kw in ({}, {"temperature": 0.7}, {"max_tokens": 5}, {"detail": "low"}, {"seed": 1})]
        canonical = str(provider(stub).canonical_request(req))
    assert len(set(keys)) == len(keys)
    assert "api_key" not in canonical and FAKE_KEY not in canonical and "base64" not in canonical


def test_live_key_equals_the_key_vcrpy_derives_from_the_wire():
    """Replay looks answers up by the provider's canonical request; recording keys them
    by what vcrpy saw on the wire. The two must agree byte for byte."""
    import json

    from benchmark.recording import canonical_json, content_key
    from benchmark.recording.http import canonical_body

    req = make_requests(1)[0]
    with OpenAIStub() as stub:
        p = provider(stub, detail="low", max_tokens=7)
        wire = json.loads(json.dumps(p.request_body(req)))
        assert content_key(canonical_json(canonical_body(wire))) == content_key(p.canonical_request(req))


@pytest.mark.parametrize("constrain", ["json-schema", "guided-choice"])
def test_constrained_answers_are_always_a_class_and_recorded(constrain, tmp_path, monkeypatch):
    """A constrained model row beside the free one: every answer is a class (no unparseable),
    the request carries the label enum, and replay reads the class the same way."""
    from tests.support.folder_task import KEY as TKEY
    from tests.support.folder_task import folder_world, run_case, session
    from tests.support.openai_stub import constrained_answer

    monkeypatch.setenv("ASTROBENCH_TEST_KEY", TKEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 10)
        free = raw["models"]["stub"]
        raw["models"]["stub-constrained"] = dict(free, constrain=constrain)
        bench = session(raw, tmp_path, "once")
        plain, forced = (run_case(bench, i) for i in range(2))
        body = stub.requests[-1]["body"]
    assert plain.model == "stub" and forced.model == "stub-constrained"
    assert plain.scores.unparseable == 2 and forced.scores.unparseable == 0
    if constrain == "json-schema":
        enum = body["response_format"]["json_schema"]["schema"]["properties"]["category"]["enum"]
        assert enum == ["0", "1"] and body["response_format"]["json_schema"]["strict"] is True
    else:
        assert body["guided_choice"] == ["0", "1"]
    # styles cycle CORRECT, WRONG, UNPARSEABLE, VERBOSE, BARE over labels 0, 1, 0, 1, ...
    wanted = [int(constrained_answer(mark_image(np.zeros((64, 64, 3), np.uint8), label=i % 2, style=i % 5,
                                                n_classes=2))) for i in range(10)]
    assert sorted(p["parsed"] for p in forced.predictions) == sorted(wanted)
    assert all(p["reason"].startswith(f"constrained ({constrain})") for p in forced.predictions)
    monkeypatch.delenv("ASTROBENCH_TEST_KEY")
    again = run_case(session(raw, tmp_path, "none"), 1)  # replayed: the same classes, no server
    assert again.scores == forced.scores and [p["parsed"] for p in again.predictions] == [
        p["parsed"] for p in forced.predictions]


def test_score_mode_reads_class_probabilities_from_logprobs_and_replays_them(tmp_path, monkeypatch):
    from benchmark.report import Report
    from tests.support.folder_task import KEY as TKEY
    from tests.support.folder_task import folder_world, run_case, session

    monkeypatch.setenv("ASTROBENCH_TEST_KEY", TKEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 10)
        raw["models"]["stub"]["mode"] = "score"
        result = run_case(session(raw, tmp_path, "once"))
        body = stub.requests[0]["body"]
    assert (body["max_tokens"], body["logprobs"], body["top_logprobs"]) == (1, True, 20)
    p_top = 0.7 / 0.9  # the non-label alternative "The" is left out, the two labels renormalised
    for p in result.predictions:
        assert max(p["probs"]) == pytest.approx(p_top) and sum(p["probs"]) == pytest.approx(1.0)
        assert p["parsed"] == p["probs"].index(max(p["probs"]))
    # WRONG-style images (2 of 10) put the mass on the wrong class; nothing is unparseable
    assert result.scores.correct == 8 and result.scores.unparseable == 0 and result.method == "score"
    assert Report([result]).summary(result)["roc_auc"] is not None
    monkeypatch.delenv("ASTROBENCH_TEST_KEY")
    again = run_case(session(raw, tmp_path, "none"))
    assert [p["probs"] for p in again.predictions] == [p["probs"] for p in result.predictions]
