"""The recording layer, through the session as a user meets it: record modes,
strict replay, crash safety, locking, malformed answers, secrets, names.

Every recording here is made against the loopback stand-in server and lives
in a temp folder whose name says so. Modules of the recording layer are
imported inside the tests, so this file also runs against older code (the
defect tests were checked to fail there).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from benchmark.config import parse_config
from benchmark.core import BenchError
from benchmark.providers import PROVIDERS
from benchmark.session import plan_cases
from tests.support.folder_task import (CASSETTES, KEY, PROMPT, FakeLocalProvider, folder_world, images,
                                       provider_for_url, requests, run_case, session, write_toml)
from tests.support.openai_stub import OpenAIStub, answer_for

REPO = Path(__file__).resolve().parent.parent


def recordings(tmp_path: Path) -> list[Path]:
    """The committed recording files (not journals or locks)."""
    folder = tmp_path / CASSETTES
    return sorted(p for p in folder.iterdir() if p.suffix in (".json", ".jsonl")) if folder.exists() else []


def journals(tmp_path: Path) -> list[Path]:
    folder = tmp_path / CASSETTES
    return sorted(folder.glob("*.journal")) if folder.exists() else []


def record_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.startswith('{"key"')]


# -- record and replay ------------------------------------------------------------------
def test_replay_comes_from_the_index_without_client_key_or_image_encoding(tmp_path, monkeypatch):
    import benchmark.providers.openai_chat as openai_chat

    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 10)
        first = run_case(session(raw, tmp_path, "once"))
        assert len(stub.requests) == 10
    monkeypatch.delenv("ASTROBENCH_TEST_KEY")

    def no_encoding(*_):
        raise AssertionError("replay must not encode images")

    monkeypatch.setattr(openai_chat, "png_data_url", no_encoding)
    again = run_case(session(raw, tmp_path, "none"))  # the server is gone too
    assert again.scores == first.scores and again.cached == 10
    [path] = recordings(tmp_path)
    assert path.name == "toy+stub+paper.jsonl" and not journals(tmp_path)
    assert len(record_lines(path)) == 10


def test_none_mode_missing_answers_fail_with_the_record_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 10)
        run_case(session(raw, tmp_path, "once", limit=6))
        with pytest.raises(BenchError) as err:
            run_case(session(raw, tmp_path, "none"))
        assert len(stub.requests) == 6
    msg = str(err.value)
    assert "has no recorded answer for 4 of the requested samples" in msg
    assert "lsbg/img007.png" in msg  # sample ids, not just a count
    assert "pytest cases --bench-task toy --bench-model stub --record-mode new_episodes" in msg


def test_changed_prompt_is_a_miss_never_a_reuse(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 6)
        run_case(session(raw, tmp_path, "once"))
        (tmp_path / "prompts" / "toy" / "paper.txt").write_text(PROMPT + " Think step by step.")
        with pytest.raises(BenchError, match="has no recorded answer for 6"):
            run_case(session(raw, tmp_path, "none"))
        result = run_case(session(raw, tmp_path, "new_episodes"))
        assert len(stub.requests) == 12
        assert stub.requests[-1]["texts"][0].endswith("Think step by step.")  # sent as written
    assert result.scores.n == 6


def test_once_records_until_complete_then_replays_only_and_all_asks_again(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 10)
        run_case(session(raw, tmp_path, "once", limit=4))
        run_case(session(raw, tmp_path, "once"))  # not complete yet: records the 6 missing
        assert len(stub.requests) == 10
        (tmp_path / "prompts" / "toy" / "paper.txt").write_text(PROMPT + " Be brief.")
        with pytest.raises(BenchError, match="complete, so 'once' only replays"):
            run_case(session(raw, tmp_path, "once"))
        (tmp_path / "prompts" / "toy" / "paper.txt").write_text(PROMPT)
        run_case(session(raw, tmp_path, "all"))
        assert len(stub.requests) == 20
    [path] = recordings(tmp_path)
    assert len(record_lines(path)) == 10  # re-recorded answers replace, never duplicate


def test_missing_key_only_matters_when_a_live_call_is_needed(tmp_path, monkeypatch):
    monkeypatch.delenv("ASTROBENCH_TEST_KEY", raising=False)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 4)
        with pytest.raises(BenchError, match="set the environment variable ASTROBENCH_TEST_KEY"):
            run_case(session(raw, tmp_path, "once"))
        assert len(stub.requests) == 0


def test_a_changed_image_under_a_recorded_sample_id_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 4)
        run_case(session(raw, tmp_path, "once"))
        other = tmp_path / "other"
        other.mkdir()
        raw2 = folder_world(other, stub, 4, seed=1)  # same names, different pixels
        raw2["datasets"]["toy"]["path"] = str(other / "images")
        with pytest.raises(BenchError, match="changed since it was recorded"):
            run_case(session(raw2, tmp_path, "none"))


def test_each_answer_is_handled_as_it_arrives(tmp_path):
    """One slow request must not hold back the others' on_answer (journal, count, show)."""
    reqs = requests(images(6))
    seen: list[tuple[str, float]] = []
    with OpenAIStub() as stub:
        stub.stall_next(1, seconds=1.0)
        start = time.perf_counter()
        provider_for_url(stub.base_url, concurrency=3).classify(
            reqs, on_answer=lambda a: seen.append((a.sample_id, time.perf_counter() - start)))
    fast = sorted(t for _, t in seen)[:5]
    assert len(seen) == 6 and max(fast) < 0.8, seen


def test_limit_parses_only_the_records_it_uses(tmp_path, monkeypatch):
    from benchmark.recording.log import Entry

    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 40)
        run_case(session(raw, tmp_path, "once"))
    parsed = []
    original = Entry.data
    monkeypatch.setattr(Entry, "data", lambda self: parsed.append(self.key) or original(self))
    assert run_case(session(raw, tmp_path, "none", limit=3)).scores.n == 3
    assert len(parsed) == 3


# -- crash safety -------------------------------------------------------------------------
CRASH_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from benchmark.recording import Recording, answer_requests
    from tests.support.folder_task import images, provider_for_url, requests
    with Recording({path!r}, mode="once") as rec:
        answer_requests(provider_for_url({url!r}, concurrency=2), requests(images(30)), recording=rec)
        rec.finish(complete=True)
    print("finished")
""")


def test_sigkill_mid_recording_keeps_every_completed_answer(tmp_path, capsys):
    from benchmark.recording import Recording, answer_requests
    from benchmark.recording.recording import journal_path

    path = tmp_path / CASSETTES / "crash.jsonl"
    with OpenAIStub(delay_s=0.1) as stub:
        script = CRASH_SCRIPT.format(repo=str(REPO), path=str(path), url=stub.base_url)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(stub.requests) < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert not path.exists()  # never finished
        journaled = [ln for ln in journal_path(path).read_text().splitlines() if ln.startswith('{"key"')]
        assert 8 <= len(journaled) < 30
        before = len(stub.requests)
        with Recording(path, mode="once") as rec:  # folds the journal in, visibly, then records the rest
            answers = answer_requests(provider_for_url(stub.base_url, concurrency=4), requests(images(30)),
                                      recording=rec)
            rec.finish(complete=True)
        assert len(stub.requests) - before == 30 - len(journaled)
    assert f"recovered {len(journaled)} answers of an interrupted recording" in capsys.readouterr().err
    assert {s: a.raw for s, a in answers.items()} == {r.sample_id: answer_for(r.image) for r in requests(images(30))}
    assert path.exists() and not journal_path(path).exists()
    assert len(record_lines(path)) == 30


def test_torn_journal_line_is_cut_so_later_appends_stay_readable(tmp_path):
    from benchmark.recording import Recording, answer_requests
    from benchmark.recording.recording import journal_path

    path = tmp_path / CASSETTES / "torn.jsonl"
    imgs = images(5)
    with OpenAIStub() as stub:
        with Recording(path, mode="new_episodes") as rec:
            answer_requests(provider_for_url(stub.base_url), requests(imgs[:3]), recording=rec)
            kept = journal_path(path).read_bytes()
        path.unlink()  # as if killed before the fold
        journal_path(path).write_bytes(kept + b'{"key":"0123abc","sample":"x","img":"","requ')
        with Recording(path, mode="new_episodes") as rec:
            answer_requests(provider_for_url(stub.base_url), requests(imgs), recording=rec)
        assert len(stub.requests) == 5  # 3, then only the 2 missing
    with Recording(path, mode="none") as rec:
        assert len(rec.committed.entries) == 5


# -- defects (issue 8, section 2); each of these failed on 69cf1f1 ------------------------------
@pytest.mark.parametrize("kind", ["not-json", "html", "empty-choices", "null-content"])
def test_malformed_200s_are_failed_requests_never_recorded(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 4)
        raw["models"]["stub"].update(max_retries=1, concurrency=1)
        stub.odd_next(2, kind)  # the first sample gets it twice: once, and on the retry
        with pytest.raises(BenchError, match=r"1 of 4 requests to stub failed after retries"):
            run_case(session(raw, tmp_path, "once"))
        saved = b"".join(p.read_bytes() for p in recordings(tmp_path))
        assert b"chatcmpl-odd" not in saved and b"upstream proxy" not in saved and b"not json" not in saved
        stub.odd_next(1, kind)  # a malformed answer is asked again within the same run
        result = run_case(session(raw, tmp_path, "new_episodes"))
        assert len(stub.requests) == (2 + 3) + (1 + 1)
    assert result.scores.n == 4 and result.scores.correct == 2


def test_a_refusal_is_its_own_outcome_recorded_and_counted(tmp_path, monkeypatch):
    from benchmark.leaderboard import render_text

    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 5)
        raw["models"]["stub"].update(concurrency=1)
        stub.odd_next(1, "refusal")
        first = run_case(session(raw, tmp_path, "once"))
    replayed = run_case(session(raw, tmp_path, "none"))
    for r in (first, replayed):
        assert r.scores.refused == 1 and r.scores.unparseable == 1  # UNPARSEABLE style is sample 2
        refusals = [p for p in r.predictions if "refusal" in p]
        assert len(refusals) == 1 and refusals[0]["refusal"] == "I'm sorry, I can't help with that."
    table = render_text([replayed])
    assert "refused" in table.splitlines()[1]


def test_rewrite_keeps_the_old_recording_until_the_new_one_is_complete(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 6)
        raw["models"]["stub"].update(max_retries=0, concurrency=1)
        run_case(session(raw, tmp_path, "once"))
        [path] = recordings(tmp_path)
        old = path.read_bytes()
        monkeypatch.delenv("ASTROBENCH_TEST_KEY")
        with pytest.raises(BenchError, match="ASTROBENCH_TEST_KEY"):
            run_case(session(raw, tmp_path, "rewrite"))  # no key: nothing touched
        assert path.read_bytes() == old
        monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
        stub.fail_next(2, status=503)  # the endpoint is down for two requests
        with pytest.raises(BenchError, match="2 of 6 requests"):
            run_case(session(raw, tmp_path, "rewrite"))
        assert path.read_bytes() == old  # still the old recording, nothing lost
        with pytest.raises(BenchError, match="interrupted --record-mode rewrite run"):
            run_case(session(raw, tmp_path, "none"))  # but a replay says the rewrite is pending
        with pytest.raises(BenchError, match="unfinished --record-mode rewrite"):
            run_case(session(raw, tmp_path, "new_episodes"))
        asked = len(stub.requests)
        run_case(session(raw, tmp_path, "rewrite"))  # resumes: only the 2 failed are asked
        assert len(stub.requests) - asked == 2
    assert len(record_lines(path)) == 6 and not journals(tmp_path)


LOCK_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from benchmark.recording import Recording, answer_requests
    from tests.support.folder_task import images, provider_for_url, requests
    with Recording({path!r}, mode="once") as rec:
        out = answer_requests(provider_for_url({url!r}, concurrency=2), requests(images(20)), recording=rec)
        rec.finish(complete=True)
    print(sorted((k, a.raw) for k, a in out.items()))
""")


def test_two_recorders_of_one_case_pay_once_and_lose_nothing(tmp_path):
    path = tmp_path / CASSETTES / "shared.jsonl"
    with OpenAIStub(delay_s=0.02) as stub:
        script = LOCK_SCRIPT.format(repo=str(REPO), path=str(path), url=stub.base_url)
        procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]
    assert len(stub.requests) == 20  # the second waited for the first, then replayed
    assert any("another process is recording" in err for _, err in outs)
    assert len(record_lines(path)) == 20


def test_a_stale_journal_never_changes_a_replay_silently(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 6)
        raw["models"]["stub"].update(max_retries=0, concurrency=1)
        run_case(session(raw, tmp_path, "once"))
        [path] = recordings(tmp_path)
        stub.fail_next(1, status=503)
        with pytest.raises(BenchError):
            run_case(session(raw, tmp_path, "all"))  # interrupted: 5 new answers pending
    with pytest.raises(BenchError) as err:
        run_case(session(raw, tmp_path, "none"))
    assert "interrupted --record-mode all run" in str(err.value)
    assert "--record-mode all" in str(err.value) and ".journal" in str(err.value)


def test_a_duplicate_image_is_asked_once_and_answers_both_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    imgs = images(4)
    imgs[2] = imgs[0].copy()  # same pixels, same class folder
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 4, imgs=imgs)
        result = run_case(session(raw, tmp_path, "once"))
        assert len(stub.requests) == 3
    raws = {p["sample_id"]: p["raw"] for p in result.predictions}
    assert raws["artifact/img000.png"] == raws["artifact/img002.png"] == answer_for(imgs[0])
    replayed = run_case(session(raw, tmp_path, "none"))
    assert replayed.scores == result.scores
    # three calls were paid for: the copy's answer costs nothing, live or replayed
    assert result.usage == replayed.usage == {"prompt_tokens": 300, "completion_tokens": 15}


def test_an_unwritable_recording_folder_stops_before_any_call(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    (tmp_path / "not-a-folder").write_text("a file where the recordings should go")
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 4)
        bench = session(raw, tmp_path, "once")
        bench.cassette_dir = tmp_path / "not-a-folder" / "recordings"
        with pytest.raises(BenchError, match="cannot record into"):
            run_case(bench)
        assert len(stub.requests) == 0


def test_a_write_failure_stops_asking_and_keeps_what_was_written(tmp_path, monkeypatch):
    from benchmark.recording import log

    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    original = log.Appender.append
    written = []

    def disk_full_after_three(self, line):
        if len(written) >= 5:  # the journal header, the prompt and 3 answers fit
            raise OSError(28, "No space left on device")
        written.append(line)
        original(self, line)

    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 12)
        raw["models"]["stub"].update(concurrency=1)
        monkeypatch.setattr(log.Appender, "append", disk_full_after_three)
        with pytest.raises(BenchError, match="No space left on device.*stopped asking"):
            run_case(session(raw, tmp_path, "once"))
        assert len(stub.requests) <= 5  # stopped at once, not after all 12
        monkeypatch.setattr(log.Appender, "append", original)
        asked = len(stub.requests)
        run_case(session(raw, tmp_path, "once"))
        assert len(stub.requests) - asked == 12 - 3  # the 3 written answers were kept


def test_ctrl_c_does_not_mark_a_partial_recording_finished(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 10)
        raw["models"]["stub"].update(concurrency=1)
        bench = session(raw, tmp_path, "once")
        provider = bench.provider(bench.config.models["stub"])
        inner = provider._one

        def interrupt_at_five(request):
            if len(stub.requests) >= 4:
                raise KeyboardInterrupt
            return inner(request)

        monkeypatch.setattr(provider, "_one", interrupt_at_five)
        with pytest.raises(KeyboardInterrupt):
            run_case(bench)
        assert len(stub.requests) == 4
        result = run_case(session(raw, tmp_path, "once"))  # what make bench does next
        assert len(stub.requests) == 10 and result.scores.n == 10


def test_case_files_never_collide(tmp_path, monkeypatch):
    """task 'p' x model 'q-r' and task 'p-q' x model 'r' used to share p-q-r.json."""
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 4)
        model = raw["models"].pop("stub")
        raw["models"] = {"q-r": dict(model, temperature=0.0), "r": dict(model, temperature=0.5)}
        raw["tasks"] = {"p": raw["tasks"]["toy"], "p-q": raw["tasks"]["toy"]}
        bench = session(raw, tmp_path, "once")
        ids = [c.id for c in plan_cases(bench.config)]
        assert sorted(ids).count("p-q-r") == 2  # the display ids do collide
        for i in range(len(ids)):
            run_case(bench, i)
        assert len(stub.requests) == 4 * len(ids)
        for i in range(len(ids)):  # each case replays its own recording
            run_case(session(raw, tmp_path, "none"), i)
    assert len(recordings(tmp_path)) == len(ids)


def test_recording_paths_stay_inside_their_folder(tmp_path):
    raw = {"datasets": {}, "tasks": {}, "models": {"../../x": {"provider": "openai", "model": "m"}}}
    with pytest.raises(BenchError, match=r"model '\.\./\.\./x'"):
        parse_config(raw, prompt_dirs={})


def test_the_key_never_reaches_messages_recordings_or_results(tmp_path, monkeypatch):
    from benchmark.leaderboard import results_document

    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 3)
        raw["models"]["stub"].update(concurrency=1)
        stub.odd_next(1, "401-echo")
        with pytest.raises(BenchError) as err:
            run_case(session(raw, tmp_path, "once"))
        assert "401" in str(err.value) and KEY not in str(err.value)
        stub.odd_next(1, "echo-key")  # a body that echoes the Authorization header
        result = run_case(session(raw, tmp_path, "once"))
    assert "Bearer" in stub.requests[-1]["headers"]["authorization"]  # it was really sent
    blob = b"".join(p.read_bytes() for p in (tmp_path / CASSETTES).iterdir() if p.is_file())
    assert b"(you sent Bearer ***)" in blob and KEY.encode() not in blob, blob[-900:]
    doc = str(results_document([result]))
    assert KEY not in doc and "you sent Bearer ***" in doc


def test_conflicting_duplicate_lines_and_crafted_nesting_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 3)
        run_case(session(raw, tmp_path, "once"))
    [path] = recordings(tmp_path)
    text = path.read_text()
    first = record_lines(path)[0]
    changed = first.replace('"content":"', '"content":"Actually, ', 1)
    assert changed != first
    path.write_text(text + changed + "\n")
    with pytest.raises(BenchError, match=r"lines \d+ and \d+ hold different answers"):
        run_case(session(raw, tmp_path, "none"))
    path.write_text(text + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(BenchError, match=re.escape(path.name) + r":\d+: .*nested too deeply"):
        run_case(session(raw, tmp_path, "none"))


# -- pytest-recording conventions, from a project outside this repo ---------------------------
def test_pytest_recording_conventions_place_and_configure_recordings(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    monkeypatch.delenv("ASTROBENCH_CASSETTE_DIR", raising=False)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 3)
        cfg = write_toml(tmp_path, raw)
        project = tmp_path / "project"
        project.mkdir()
        (project / "conftest.py").write_text(textwrap.dedent(f"""
            import pytest
            seen = []
            configured = []

            @pytest.fixture(scope="module")
            def vcr_cassette_dir():
                return {str(tmp_path / "recorded-from-test-server")!r}

            @pytest.fixture
            def vcr_config():
                def note(request):
                    seen.append(request.uri)
                    return request
                return {{"before_record_request": note}}

            def pytest_recording_configure(config, vcr):
                configured.append(vcr)

            def pytest_sessionfinish(session):
                print("VCR_CONFIG_SAW", len(seen), "CONFIGURED", len(configured))
        """))
        (project / "test_bench.py").write_text(
            "def test_case(bench_case, bench_run):\n    bench_run(bench_case)\n")
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "--record-mode", "once",
             "--bench-config", str(cfg), "--bench-task", "toy", "--bench-model", "stub", "--bench-no-progress", "test_bench.py"],
            cwd=project, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO), "ASTROBENCH_FIXTURES_DIR": str(tmp_path / "frozen")},
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "recorded-from-test-server" / "toy+stub+paper.jsonl").exists()
    saw = re.search(r"VCR_CONFIG_SAW (\d+) CONFIGURED (\d+)", proc.stdout)
    assert saw and int(saw.group(1)) >= 3 and saw.group(2) == "1", proc.stdout


# -- in-process models: the same recording, the same rules ------------------------------------
def test_local_models_are_recorded_with_the_same_rules(tmp_path, monkeypatch):
    monkeypatch.setitem(PROVIDERS, "fake-local", "tests.support.folder_task:FakeLocalProvider")
    FakeLocalProvider.calls = 0
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 8)
    raw["models"] = {"stub": {"provider": "fake-local", "model": "tiny"}}
    with pytest.raises(BenchError, match=r"has no recording for 8"):
        run_case(session(raw, tmp_path, "none"))
    first = run_case(session(raw, tmp_path, "once", limit=5))
    assert FakeLocalProvider.calls == 5
    full = run_case(session(raw, tmp_path, "once"))  # resumes: only the 3 missing
    assert FakeLocalProvider.calls == 8
    replay = run_case(session(raw, tmp_path, "none"))
    assert FakeLocalProvider.calls == 8 and replay.scores == full.scores and first.scores.n == 5
    run_case(session(raw, tmp_path, "rewrite"))
    assert FakeLocalProvider.calls == 16
    assert run_case(session(raw, tmp_path, "none")).scores == full.scores
    raw["models"]["stub"]["temperature"] = 0.5  # another request: a miss
    with pytest.raises(BenchError, match="has no recorded answer for 8"):
        run_case(session(raw, tmp_path, "none"))


def test_failed_requests_are_not_recorded_and_a_rerun_retries_only_them(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 6)
        raw["models"]["stub"].update(max_retries=1, concurrency=1)
        stub.fail_next(2, status=503)  # the first request fails, retry included
        with pytest.raises(BenchError, match=r"1 of 6 requests to stub failed after retries"):
            run_case(session(raw, tmp_path, "once"))
        assert len(stub.requests) == 7
        saved = b"".join(p.read_bytes() for p in (tmp_path / CASSETTES).iterdir() if p.is_file())
        assert b"injected fault" not in saved and b"503" not in saved
        result = run_case(session(raw, tmp_path, "once"))  # incomplete: once records the rest
        assert len(stub.requests) == 8  # only the failed sample was asked again
    assert result.scores.n == 6


def test_no_request_thread_outlives_its_case(tmp_path, monkeypatch):
    """After a case, even one stopped by an error, no request of it is still running."""
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub(delay_s=0.05) as stub:
        raw = folder_world(tmp_path, stub, 12)
        raw["models"]["stub"].update(concurrency=4)
        stub.odd_next(1, "401-echo")
        with pytest.raises(BenchError, match="401"):
            run_case(session(raw, tmp_path, "once"))
        asked = len(stub.requests)
        assert not [t for t in threading.enumerate() if t.name.startswith("astrobench-stub")]
        time.sleep(0.2)
        assert len(stub.requests) == asked <= 4  # nothing asked after the case ended


def test_the_suggested_record_command_records_where_the_answers_live(tmp_path, monkeypatch):
    """Following the missing-answer message must record what is missing, into --bench-cassette-dir."""
    import shlex

    monkeypatch.delenv("ASTROBENCH_CASSETTE_DIR", raising=False)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 3)
        cfg = write_toml(tmp_path, raw)
        project = tmp_path / "project"
        project.mkdir()
        (project / "test_bench.py").write_text("def test_case(bench_case, bench_run):\n    bench_run(bench_case)\n")
        answers = tmp_path / "my-answers"
        env = {**os.environ, "PYTHONPATH": str(REPO), "ASTROBENCH_TEST_KEY": KEY,
               "ASTROBENCH_FIXTURES_DIR": str(tmp_path / "frozen")}
        first = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_bench.py",
                                "--bench-config", str(cfg), "--bench-task", "toy", "--bench-model", "stub",
                                "--bench-cassette-dir", str(answers)],
                               cwd=project, capture_output=True, text=True, timeout=120, env=env)
        assert first.returncode == 1 and len(stub.requests) == 0
        # (the short summary repeats the message in full when $CI is set)
        [suggested] = {ln.strip() for ln in first.stdout.splitlines() if ln.strip().startswith("pytest test_bench.py")}
        assert f"--bench-cassette-dir {answers}" in suggested
        args = shlex.split(suggested)[1:]
        second = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                                cwd=project, capture_output=True, text=True, timeout=120, env=env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert len(stub.requests) == 3
    assert (answers / "toy+stub+paper.jsonl").exists()


def test_make_bench_without_a_key_skips_api_cases_and_replay_only_still_fails(tmp_path, monkeypatch):
    """record mode once (make bench) with no key and nothing recorded: a skip that says how to
    run the case; record mode none (CI) keeps failing on anything missing."""
    monkeypatch.delenv("ASTROBENCH_CASSETTE_DIR", raising=False)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 3)
        cfg = write_toml(tmp_path, raw)
        project = tmp_path / "project"
        project.mkdir()
        (project / "test_bench.py").write_text("def test_case(bench_case, bench_run):\n    bench_run(bench_case)\n")
        env = {k: v for k, v in os.environ.items() if k != "ASTROBENCH_TEST_KEY"}
        env.update(PYTHONPATH=str(REPO), ASTROBENCH_FIXTURES_DIR=str(tmp_path / "frozen"))
        run = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_bench.py", "--bench-config", str(cfg),
               "--bench-task", "toy", "--bench-model", "stub", "--bench-cassette-dir", str(tmp_path / "answers")]
        once = subprocess.run(run + ["--record-mode", "once"], cwd=project, capture_output=True, text=True,
                              timeout=120, env=env)
        replay = subprocess.run(run, cwd=project, capture_output=True, text=True, timeout=120, env=env)
        assert len(stub.requests) == 0
    assert once.returncode == 0, once.stdout + once.stderr
    assert "1 skipped" in once.stdout and "set the environment variable ASTROBENCH_TEST_KEY" in once.stdout
    assert replay.returncode == 1 and "has no recording for 3" in replay.stdout


class RepeatingLocal(FakeLocalProvider):
    """Answers right, except: repeat 1 gets samples 0 and 1 wrong, repeat 2 gets sample 0 wrong."""

    def text(self, request) -> str:
        index = int(request.sample_id.split("img")[1][:3])
        truth = index % 2
        wrong = (request.repeat == 1 and index in (0, 1)) or (request.repeat == 2 and index == 0)
        return f"Category {1 - truth if wrong else truth}"


def test_repeats_give_mean_sd_and_the_majority_vote_and_each_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setitem(PROVIDERS, "repeating-local", f"{__name__}:RepeatingLocal")
    FakeLocalProvider.calls = 0
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 4)
    raw["models"] = {"stub": {"provider": "repeating-local", "model": "tiny", "repeats": 3}}
    result = run_case(session(raw, tmp_path, "once"))
    assert FakeLocalProvider.calls == 12
    rp = result.repeats
    assert rp["n"] == 3 and rp["accuracies"] == [1.0, 0.5, 0.75]
    assert rp["mean"] == pytest.approx(0.75) and rp["sd"] == pytest.approx(0.25)
    # sample 0: right, wrong, wrong -> wrong; sample 1: right, wrong, right -> right
    assert rp["majority_accuracy"] == result.scores.accuracy == 0.75
    votes = {p["sample_id"]: p["parsed"] for p in result.predictions}
    assert votes["artifact/img000.png"] == 1 and votes["lsbg/img001.png"] == 1
    [path] = recordings(tmp_path)
    assert len(record_lines(path)) == 12  # the repeat index is part of the key
    replayed = run_case(session(raw, tmp_path, "none"))
    assert FakeLocalProvider.calls == 12 and replayed.repeats == rp and replayed.scores == result.scores


def test_repeats_of_an_api_model_are_recorded_apart_through_vcrpy(tmp_path, monkeypatch):
    """The wire body is the same for every repeat; the recording still keeps one answer each."""
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 4)
        raw["models"]["stub"].update(repeats=2, temperature=0.7)
        recorded = run_case(session(raw, tmp_path, "once"))
        assert len(stub.requests) == 8
    [path] = recordings(tmp_path)
    assert len(record_lines(path)) == 8
    replayed = run_case(session(raw, tmp_path, "none"))
    assert replayed.repeats == recorded.repeats and replayed.repeats["n"] == 2
    # every repeat was paid for: usage (and so cost) counts the 8 calls, not the 4 the vote kept
    assert recorded.usage == replayed.usage == {"prompt_tokens": 800, "completion_tokens": 40}
