"""The OpenAI Batch API (``batch = true``) against a loopback Files + Batches server.

The server (tests/support/batch_server.py) answers each line as the chat stand-in answers
the same request: the ten images of the toy task cycle through five answer styles, three of
them correct, so every run here has accuracy 0.6 exactly, and each answer costs 100 input
and 5 output tokens (0.0003 USD at 2.5 / 10 USD per million; half that by batch).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchmark.core import BenchError
from benchmark.progress import Progress
from benchmark.recording.recording import batches_path
from benchmark.report import Report
from tests.support.batch_server import BatchServer, Plan
from tests.support.folder_task import CASSETTES, KEY, folder_world, images, provider_for_url, requests, run_case
from tests.support.openai_stub import OpenAIStub, answer_for

REPO = Path(__file__).resolve().parent.parent
N = 10
PRICES = {"input_per_mtok": 2.5, "output_per_mtok": 10.0, "batch": 0.5}
LIVE_USD, BATCH_USD = 0.0003, 0.00015  # per answer: (100 x 2.5 + 5 x 10) / 1e6, and half of it


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)


def world(tmp_path: Path, server: OpenAIStub, **settings) -> dict:
    """The toy task's config, its model asking ``server`` by batch (polled every 10 ms)."""
    raw = folder_world(tmp_path, server, N)
    raw["models"]["stub"].update({"batch": True, "batch_poll_s": 0.01, "prices": PRICES, **settings})
    return raw


def session(raw: dict, tmp_path: Path, mode: str | None, **kw):
    from benchmark.config import parse_config
    from benchmark.session import BenchSession

    config = parse_config(raw, prompt_dirs={t: [tmp_path / "prompts" / "toy"] for t in raw["tasks"]})
    return BenchSession(config, cassette_dir=tmp_path / CASSETTES, record_mode=mode,
                        frozen_dir=tmp_path / "frozen", progress=kw.pop("progress", False), **kw)


def recording(tmp_path: Path) -> Path:
    return tmp_path / CASSETTES / "toy+stub+paper.jsonl"


def records(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.startswith('{"key"')]


def cost(result, raw: dict) -> float:
    return Report(results=[result], prices={"stub": raw["models"]["stub"]["prices"]}).summary(result)["cost_usd"]


def via_batch(result_or_records) -> int:
    return sum(1 for r in result_or_records if r.get("via") == "batch")


# -- the round trip ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode, accuracy", [("generate", 0.6), ("score", 0.8)])
def test_a_batch_run_records_what_a_live_run_records_and_replays_the_same(tmp_path, mode, accuracy):
    """Same requests, one run live (concurrency 1), one by batch: the record lines are equal
    but for "via", each uploaded line is the live call's body under its recording key, and the
    two recordings replay to the same predictions (score mode: only the WRONG-style images are
    wrong, 8 of 10)."""
    live_dir, batch_dir = tmp_path / "live", tmp_path / "batch"
    with OpenAIStub() as stub:
        live_raw = world(live_dir, stub, batch=False, concurrency=1, mode=mode)
        live = run_case(session(live_raw, live_dir, "once"))
        sent = [r["body"] for r in stub.requests]
    with BatchServer() as server:
        batch_raw = world(batch_dir, server, mode=mode)
        by_batch = run_case(session(batch_raw, batch_dir, "once"))
        assert len(server.requests) == 0  # no chat call: every answer came by batch
        assert dict(server.calls) == {"files.create": 1, "batches.create": 1, "batches.retrieve": 1,
                                      "files.content": 1}
        [upload] = server.uploads
    live_lines, batch_lines = records(recording(live_dir)), records(recording(batch_dir))
    assert len(batch_lines) == N and via_batch(batch_lines) == N and via_batch(live_lines) == 0
    assert [{k: v for k, v in r.items() if k != "via"} for r in batch_lines] == live_lines
    assert [line["body"] for line in upload] == sent  # exactly the bodies a live call sends
    assert {line["custom_id"] for line in upload} == {r["key"] for r in live_lines}
    assert {(line["method"], line["url"]) for line in upload} == {("POST", "/v1/chat/completions")}
    assert live.predictions == by_batch.predictions and live.scores.accuracy == by_batch.scores.accuracy == accuracy
    replayed_live = run_case(session(live_raw, live_dir, "none"))
    replayed_batch = run_case(session(batch_raw, batch_dir, "none"))
    assert replayed_live.predictions == replayed_batch.predictions == live.predictions
    assert replayed_batch.cached == N and replayed_batch.scores == live.scores
    if mode == "score":
        assert all(p["probs"] for p in replayed_batch.predictions)
    # the price is what differs: every answer at the batch price, live and replayed
    assert cost(by_batch, batch_raw) == cost(replayed_batch, batch_raw) == pytest.approx(N * BATCH_USD, abs=1e-12)
    assert cost(live, live_raw) == pytest.approx(N * LIVE_USD, abs=1e-12)
    assert by_batch.usage == {"prompt_tokens": 1000, "completion_tokens": 50, "batch_prompt_tokens": 1000,
                              "batch_completion_tokens": 50}
    assert not batches_path(recording(batch_dir)).exists()  # collected: the journal entry is gone


def test_the_status_line_shows_status_counts_and_time(tmp_path):
    lines: list[str] = []
    progress = Progress(lambda text, redraw: lines.append(text), tty=False)
    with BatchServer() as server:
        server.plan(Plan(polls=3))
        run_case(session(world(tmp_path, server), tmp_path, "once", progress=progress))
    status = [re.sub(r", \d+s since submitted$", ", Ns since submitted", ln) for ln in lines if ": batch " in ln]
    assert status == [
        "toy/stub: batch batch_1 in_progress: 2 completed, 0 failed of 10, Ns since submitted",
        "toy/stub: batch batch_1 in_progress: 5 completed, 0 failed of 10, Ns since submitted",
        "toy/stub: batch batch_1 completed: 10 completed, 0 failed of 10, Ns since submitted",
    ]
    assert lines[-1].startswith("toy/stub: 10/10 (100%)")


def test_requests_are_split_at_the_api_limits_and_polled_together(tmp_path, monkeypatch):
    import benchmark.providers.openai_batch as openai_batch

    monkeypatch.setattr(openai_batch, "MAX_LINES", 4)
    with BatchServer() as server:
        server.plan(Plan(polls=2), Plan(polls=1), Plan(polls=3))
        result = run_case(session(world(tmp_path, server), tmp_path, "once"))
        assert [len(u) for u in server.uploads] == [4, 4, 2]
        assert server.calls["batches.create"] == 3 and server.calls["batches.retrieve"] == 2 + 1 + 3
    assert result.scores.accuracy == 0.6 and via_batch(records(recording(tmp_path))) == N


# -- partial failure, expiry, failed and cancelled batches -------------------------------------
def test_failed_and_missing_lines_are_asked_live_and_costed_at_their_price(tmp_path):
    """Lines 1 and 6 in the error file (500), line 3 missing, line 8 a malformed 200:
    6 answers by batch, 4 live; accuracy still 0.6."""
    with BatchServer() as server:
        server.plan(Plan(errors={1: 500, 6: 500}, missing={3}, malformed={8}))
        raw = world(tmp_path, server)
        result = run_case(session(raw, tmp_path, "once"))
        live_marks = sorted(r["marks"][0] for r in server.requests)
        assert server.calls["batches.create"] == 1
    imgs = images(N)
    assert live_marks == sorted(tuple(int(v) for v in imgs[i][0, 0, :2]) for i in (1, 3, 6, 8))
    lines = records(recording(tmp_path))
    assert len(lines) == N and via_batch(lines) == 6
    assert result.scores.accuracy == 0.6
    assert cost(result, raw) == pytest.approx(6 * BATCH_USD + 4 * LIVE_USD, abs=1e-12)  # 0.0021
    replayed = run_case(session(raw, tmp_path, "none"))
    assert replayed.cached == N and cost(replayed, raw) == pytest.approx(0.0021, abs=1e-12)


def test_failed_lines_can_go_in_a_new_batch_instead(tmp_path):
    with BatchServer() as server:
        server.plan(Plan(errors={2: 500}, missing={5}))
        result = run_case(session(world(tmp_path, server, batch_retry="batch"), tmp_path, "once"))
        assert len(server.requests) == 0 and server.calls["batches.create"] == 2
        assert [len(u) for u in server.uploads] == [N, 2]
    assert result.scores.accuracy == 0.6 and via_batch(records(recording(tmp_path))) == N


def test_lines_that_keep_failing_are_reported_and_the_rest_kept(tmp_path):
    with BatchServer() as server:
        server.plan(Plan(errors={0: 500}), Plan(errors={0: 500}))
        raw = world(tmp_path, server, batch_retry="batch", max_retries=1)
        with pytest.raises(BenchError) as err:
            run_case(session(raw, tmp_path, "once"))
        assert server.calls["batches.create"] == 2 and len(server.requests) == 0
    assert "1 of 10 requests to stub failed" in str(err.value)
    assert "no answer after 2 batches: 500: scripted 500" in str(err.value)
    assert len(records(recording(tmp_path))) == 9


def test_an_expired_batch_keeps_what_ran_and_asks_the_rest_live(tmp_path):
    with BatchServer() as server:
        server.plan(Plan(status="expired", done=4))
        raw = world(tmp_path, server)
        result = run_case(session(raw, tmp_path, "once"))
        assert len(server.requests) == 6 and server.calls["batches.create"] == 1
    assert via_batch(records(recording(tmp_path))) == 4 and result.scores.accuracy == 0.6
    assert cost(result, raw) == pytest.approx(4 * BATCH_USD + 6 * LIVE_USD, abs=1e-12)


def test_a_failed_batch_is_a_clear_error_and_nothing_is_asked_live(tmp_path):
    with BatchServer() as server:
        server.plan(Plan(status="failed"))
        with pytest.raises(BenchError) as err:
            run_case(session(world(tmp_path, server), tmp_path, "once"))
        assert len(server.requests) == 0
    assert ("model 'stub': batch batch_1 failed (line 1: invalid_request: scripted validation failure) after "
            "0 of 10 answers") in str(err.value)
    assert not batches_path(recording(tmp_path)).exists()  # ended: nothing to resume


def test_a_cancelled_batch_keeps_its_answers_and_a_rerun_asks_only_the_rest(tmp_path):
    with BatchServer() as server:
        server.plan(Plan(status="cancelled", done=3))
        raw = world(tmp_path, server)
        with pytest.raises(BenchError, match=r"batch batch_1 cancelled \(no detail given\) after 3 of 10 answers"):
            run_case(session(raw, tmp_path, "once"))
        assert len(records(recording(tmp_path))) == 3  # every answer received, recorded before the error
        result = run_case(session(raw, tmp_path, "once"))
        assert [len(u) for u in server.uploads] == [N, N - 3] and len(server.requests) == 0
    assert result.scores.accuracy == 0.6 and result.cached == 3


def test_a_refused_line_stops_the_run_with_the_servers_message(tmp_path):
    with BatchServer() as server:
        server.plan(Plan(errors={2: 400}))
        with pytest.raises(BenchError) as err:
            run_case(session(world(tmp_path, server), tmp_path, "once"))
        assert len(server.requests) == 0  # a 400 is not asked again
    assert "the server refused 1 requests of batch batch_1 (e.g. sample artifact/img002.png: 400: scripted 400)" \
        in str(err.value)
    assert len(records(recording(tmp_path))) == 9


def test_a_refused_submission_stops_after_collecting_what_was_submitted(tmp_path, monkeypatch):
    import benchmark.providers.openai_batch as openai_batch

    monkeypatch.setattr(openai_batch, "MAX_LINES", 4)
    with BatchServer() as server:
        server.plan(Plan(), Plan(refuse=True))
        raw = world(tmp_path, server)
        with pytest.raises(BenchError) as err:
            run_case(session(raw, tmp_path, "once"))
        assert server.calls["batches.create"] == 2 and len(server.batches) == 1 and len(server.requests) == 0
        assert len(records(recording(tmp_path))) == 4  # the first batch's answers, collected before the error
        result = run_case(session(raw, tmp_path, "once"))
        assert [len(u) for u in server.uploads] == [4, 4, 4, 2]
    assert "submitting a batch of 4 requests failed (BadRequestError 400: " in str(err.value)
    assert "scripted refusal: too many enqueued tokens" in str(err.value)
    assert result.scores.accuracy == 0.6 and result.cached == 4


# -- resuming, record modes ---------------------------------------------------------------------
KILL_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from benchmark.recording import Recording, answer_requests
    from tests.support.folder_task import images, provider_for_url, requests
    with Recording({path!r}, mode="once") as rec:
        answer_requests(provider_for_url({url!r}, batch=True, batch_poll_s=0.02), requests(images(10)),
                        recording=rec)
        rec.finish(complete=True)
    print("finished")
""")


def killed_after_submitting(server: BatchServer, path: Path) -> subprocess.Popen:
    """Run KILL_SCRIPT against a held batch and SIGKILL it once it has polled twice."""
    server.plan(Plan(hold=True))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT.format(repo=str(REPO), path=str(path),
                                                                      url=server.base_url)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while server.calls["batches.retrieve"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc


def test_a_run_killed_after_submitting_resumes_the_same_batch(tmp_path, capsys):
    from benchmark.recording import Recording, answer_requests

    path = tmp_path / CASSETTES / "kill.jsonl"
    journal = batches_path(path)
    with BatchServer() as server:
        proc = killed_after_submitting(server, path)
        assert proc.returncode == -signal.SIGKILL
        entry = json.loads(journal.read_text())
        assert [(b["id"], b["input_file_id"], len(b["requests"])) for b in entry["batches"]] == [
            ("batch_1", "file-1", 10)]
        assert KEY not in journal.read_text()
        server.release()
        with Recording(path, mode="once") as rec:
            answers = answer_requests(provider_for_url(server.base_url, batch=True, batch_poll_s=0.02),
                                      requests(images(10)), recording=rec)
            rec.finish(complete=True)
        assert server.calls["batches.create"] == 1 and server.calls["files.create"] == 1
        assert len(server.requests) == 0
    assert "resuming batch batch_1 (10 requests, 10 of them asked now)" in capsys.readouterr().err
    assert {s: a.raw for s, a in answers.items()} == {r.sample_id: answer_for(r.image) for r in requests(images(10))}
    assert len(records(path)) == 10 and not journal.exists()


def test_a_journaled_batch_the_server_does_not_know_is_forgotten_and_asked_again(tmp_path, capsys):
    with BatchServer() as server:
        raw = world(tmp_path, server)
        journal = batches_path(recording(tmp_path))
        journal.parent.mkdir(parents=True)
        journal.write_text(json.dumps({"format": "astrobench-batches/1", "batches": [
            {"id": "batch_gone", "input_file_id": "file-gone", "model": "stub", "submitted": 0, "requests": []}]}))
        result = run_case(session(raw, tmp_path, "once"))
        assert server.calls["batches.create"] == 1
    assert "batch batch_gone is unknown to the server" in capsys.readouterr().err
    assert result.scores.accuracy == 0.6 and not journal.exists()


def test_only_the_unrecorded_part_goes_by_batch_and_replay_never_touches_the_api(tmp_path):
    with BatchServer() as server:
        raw = world(tmp_path, server)
        run_case(session(raw, tmp_path, "once", limit=4))
        run_case(session(raw, tmp_path, "once"))
        assert [len(u) for u in server.uploads] == [4, 6]
        calls = dict(server.calls)
        replayed = run_case(session(raw, tmp_path, "none"))
        (tmp_path / "prompts" / "toy" / "paper.txt").write_text("Another prompt, never recorded.")
        with pytest.raises(BenchError, match="has no recorded answer for 10 of the requested samples"):
            run_case(session(raw, tmp_path, "none"))
        assert dict(server.calls) == calls and len(server.requests) == 0
    assert replayed.cached == N and replayed.scores.accuracy == 0.6


def test_without_recording_a_batch_still_answers(tmp_path):
    with BatchServer() as server:
        result = run_case(session(world(tmp_path, server), tmp_path, None))
        assert server.calls["batches.create"] == 1
    assert result.scores.accuracy == 0.6 and not (tmp_path / CASSETTES).exists()


# -- config --------------------------------------------------------------------------------------
def test_batch_settings_are_checked_at_load(tmp_path):
    from benchmark.config import parse_config

    with OpenAIStub() as stub:
        raw = world(tmp_path, stub, batch_retry="later")
        raw["models"]["stub"]["prices"] = {**PRICES, "batch": -1}
        with pytest.raises(BenchError) as err:
            parse_config(raw, prompt_dirs={"toy": [tmp_path / "prompts" / "toy"]})
    msg = str(err.value)
    assert "expected 'batch_retry' one of ['live', 'batch'], found 'later'" in msg
    assert "expected 'batch' a number >= 0, found -1" in msg


def test_the_provider_reports_batch_use_from_its_settings():
    assert provider_for_url("http://127.0.0.1:9/v1", batch=True).batches
    assert not provider_for_url("http://127.0.0.1:9/v1").batches


def test_batch_answers_are_made_durable_before_their_batch_is_forgotten(tmp_path, monkeypatch):
    """Batch answers are journaled without an fsync each: one sync per batch, while the batch's
    journal entry still exists (a crash before it re-downloads the output instead of losing it)."""
    from benchmark.recording import Recording, answer_requests
    from benchmark.recording.log import Appender
    from benchmark.recording.recording import journal_path

    path = tmp_path / CASSETTES / "sync.jsonl"
    synced_lines: list[bytes] = []
    seen: list[tuple[bool, int]] = []
    original_append, original_sync = Appender.append, Recording.sync

    def append(self, line, sync=True):
        if sync:
            synced_lines.append(line)
        original_append(self, line, sync=sync)

    def sync(self):
        seen.append((batches_path(path).exists(), len(records(journal_path(path)))))
        original_sync(self)

    monkeypatch.setattr(Appender, "append", append)
    monkeypatch.setattr(Recording, "sync", sync)
    with BatchServer() as server, Recording(path, mode="once") as rec:
        answer_requests(provider_for_url(server.base_url, batch=True, batch_poll_s=0.01), requests(images(N)),
                        recording=rec)
        rec.finish(complete=True)
    assert seen == [(True, N)] and not batches_path(path).exists()
    assert not [line for line in synced_lines if line.startswith(b'{"key"')]  # no answer synced on its own
    assert len(records(path)) == N


def test_the_commented_example_in_bench_toml_is_a_valid_model():
    import tomllib

    from benchmark.schema import validate

    text = (REPO / "cases" / "bench.toml").read_text()
    start = text.index("# [models.gpt-4o-batch]")
    lines = text[start:].splitlines()
    block = "\n".join(ln[2:] for ln in lines[:next(i for i, ln in enumerate(lines) if not ln.startswith("# "))])
    model = validate(tomllib.loads(block)).models["gpt-4o-batch"]
    assert (model.batch, model.batch_poll_s, model.batch_retry, model.prices.batch) == (True, 60, "live", 0.5)


def test_answers_of_a_resumed_batch_for_requests_not_asked_now_are_kept_for_the_run_that_asks_them(tmp_path, capsys):
    """Killed after submitting 10; rerun asking 4 (e.g. --bench-limit 4): the other 6 paid answers
    are not thrown away: the batch stays journaled, unpolled while none of its requests is asked,
    and the run that asks them records them from the same batch, submitting nothing new."""
    from benchmark.recording import Recording, answer_requests

    path = tmp_path / CASSETTES / "kill.jsonl"
    journal = batches_path(path)
    with BatchServer() as server:
        killed_after_submitting(server, path)
        server.release()
        provider = provider_for_url(server.base_url, batch=True, batch_poll_s=0.02)
        everything = requests(images(10))
        with Recording(path, mode="once") as rec:
            answer_requests(provider, everything[:4], recording=rec)
            rec.finish(complete=False)
        assert len(records(path)) == 4 and journal.exists()
        assert "6 answers of batch batch_1 are for requests this run does not ask" in capsys.readouterr().err
        with Recording(path, mode="once") as rec:  # asks nothing new: the batch is not even polled
            retrieved = server.calls["batches.retrieve"]
            answer_requests(provider, everything[:4], recording=rec)
        assert server.calls["batches.retrieve"] == retrieved and journal.exists()
        with Recording(path, mode="once") as rec:
            answers = answer_requests(provider, everything, recording=rec)
            rec.finish(complete=True)
        assert server.calls["batches.create"] == 1 and server.calls["files.create"] == 1
        assert len(server.requests) == 0  # nothing asked live: all 10 came from the one paid batch
    assert {s: a.raw for s, a in answers.items()} == {r.sample_id: answer_for(r.image) for r in everything}
    assert len(records(path)) == 10 and not journal.exists()
