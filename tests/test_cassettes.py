"""Cassettes and response caches: content matching, compactness, secrets,
crash safety, strict replay, frozen samples. All recorded against the
loopback stand-in server; recordings live in temp dirs whose names say so."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from benchmark.cassettes import CaseCassette, _clean_uri, canonical_body, journal_path
from benchmark.config import ModelConfig, parse_config
from benchmark.frozen import load_frozen, write_frozen
from benchmark.providers import PROVIDERS
from benchmark.providers.openai_chat import OpenAIChatProvider, png_data_url
from benchmark.session import BenchSession, plan_cases
from benchmark.core import Answer, BenchError, Request, Sample
from tests.openai_stub import BARE, CORRECT, UNPARSEABLE, VERBOSE, WRONG, OpenAIStub, answer_for, mark_image

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-cassette-DISTINCTIVE-KEY-9f8e7d"
STYLES = (CORRECT, WRONG, UNPARSEABLE, VERBOSE, BARE)
PROMPT = ("You are tasked with classifying astronomical images. Category 0 is an artifact, "
          "category 1 is a low-surface-brightness galaxy. Respond with the number only.")


def images(n: int, n_classes: int = 2, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [mark_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), label=i % n_classes,
                       style=STYLES[i % len(STYLES)], n_classes=n_classes) for i in range(n)]


def requests(imgs, prompt: str = PROMPT, n_classes: int = 2) -> list[Request]:
    return [Request(str(i), prompt, im, n_classes) for i, im in enumerate(imgs)]


def provider(stub: OpenAIStub, **settings) -> OpenAIChatProvider:
    model = ModelConfig("stub", "openai", "stub-vlm", settings={"base_url": stub.base_url, **settings})
    return OpenAIChatProvider.from_config(model, api_key=KEY)


# -- the cassette layer itself ---------------------------------------------------
def test_canonical_body_replaces_images_by_pixel_digest():
    img = images(1)[0]
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": png_data_url(img)}}]}]}
    canonical = json.loads(canonical_body(body))
    assert canonical["messages"][0]["content"][1] == {"type": "image_url",
                                                      "image_url": {"sha256": Request("0", "", img, 2).image_sha256}}
    assert canonical_body(json.loads(canonical_body(body))) == canonical_body(body)  # idempotent


def test_uri_loses_query_and_credentials():
    assert _clean_uri("https://user:pw@api.example.com:8443/v1/chat/completions?api-key=SECRET") == \
        "https://api.example.com:8443/v1/chat/completions"


def test_replay_matches_by_content_not_order(tmp_path):
    imgs = images(40)
    path = tmp_path / "from-test-server" / "case.json"
    with OpenAIStub() as stub:
        with CaseCassette(path, record_mode="once"):
            recorded = provider(stub, concurrency=8).classify(requests(imgs))
        assert len(stub.requests) == 40
        shuffled = requests(imgs)
        random.Random(3).shuffle(shuffled)
        subset = shuffled[:17]  # like --limit, in another order, serially
        with CaseCassette(path, record_mode="none"):
            replayed = provider(stub, concurrency=1).classify(subset)
        assert len(stub.requests) == 40  # nothing reached the server
    by_image = {r.sample_id: answer_for(r.image) for r in requests(imgs)}
    assert {a.sample_id: a.raw for a in recorded} == by_image
    assert {a.sample_id: a.raw for a in replayed} == {r.sample_id: by_image[r.sample_id] for r in subset}


def test_cassette_is_compact_and_holds_no_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-DISTINCTIVE-ORG")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-DISTINCTIVE-PROJECT")
    imgs = images(50)
    path = tmp_path / "from-test-server" / "case.json"
    with OpenAIStub() as stub:
        with CaseCassette(path, record_mode="once"):
            provider(stub).classify(requests(imgs))
        sent = stub.requests[0]["headers"]
    # the client really sent them, so the test can fail
    assert sent["authorization"] == f"Bearer {KEY}"
    assert sent["openai-organization"] == "org-DISTINCTIVE-ORG"
    assert sent["openai-project"] == "proj-DISTINCTIVE-PROJECT"
    per_interaction = path.stat().st_size / 50
    assert per_interaction <= 2048, per_interaction
    blob = b"".join(p.read_bytes() for p in path.parent.rglob("*") if p.is_file()).lower()
    for secret in (KEY, "DISTINCTIVE-ORG", "DISTINCTIVE-PROJECT", "STUB-COOKIE-SECRET", "org-stub-secret",
                   "authorization", "bearer", "set-cookie", "base64"):
        assert secret.lower().encode() not in blob, secret


def test_unparseable_cassette_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("this is not a cassette\n")
    with pytest.raises(BenchError, match=r"cassette .*broken.json does not parse"):
        with CaseCassette(path, record_mode="none"):
            pass


# -- through the session: record modes, strict replay, crash safety --------------
def folder_world(tmp_path: Path, stub: OpenAIStub, n: int, *, prompt: str = PROMPT, seed: int = 0) -> dict:
    from PIL import Image

    root = tmp_path / "images"
    for i, im in enumerate(images(n, seed=seed)):
        folder = root / ("artifact" if i % 2 == 0 else "lsbg")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(folder / f"img{i:03d}.png")
    (tmp_path / "prompts" / "toy").mkdir(parents=True, exist_ok=True)
    (tmp_path / "prompts" / "toy" / "paper.txt").write_text(prompt)
    return {
        "datasets": {"toy": {"format": "folder", "path": str(root), "classes": ["artifact", "lsbg"]}},
        "tasks": {"toy": {"dataset": "toy", "classes": ["artifact", "lsbg"], "prompts": ["paper"]}},
        "models": {"stub": {"provider": "openai", "model": "stub-vlm", "base_url": stub.base_url,
                            "api_key_env": "ASTROBENCH_TEST_KEY"}},
    }


def session(raw: dict, tmp_path: Path, mode: str | None, **kw) -> BenchSession:
    config = parse_config(raw, prompt_dirs={"toy": [tmp_path / "prompts" / "toy"]})
    return BenchSession(config, cassette_dir=tmp_path / "cassettes-from-test-server", record_mode=mode,
                        frozen_dir=tmp_path / "frozen", progress=False, **kw)


def run_case(bench: BenchSession):
    [case] = plan_cases(bench.config)
    return bench.run(case)


def test_record_then_replay_offline_without_key(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 10)
        first = run_case(session(raw, tmp_path, "once"))
        assert len(stub.requests) == 10
        monkeypatch.delenv("ASTROBENCH_TEST_KEY")
        again = run_case(session(raw, tmp_path, "none"))
        assert len(stub.requests) == 10
    assert again.scores == first.scores
    assert (tmp_path / "cassettes-from-test-server" / "toy-stub.json").exists()
    assert not journal_path(tmp_path / "cassettes-from-test-server" / "toy-stub.json").exists()


def test_none_mode_missing_interaction_fails_with_the_record_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 10)
        run_case(session(raw, tmp_path, "once", limit=6))
        with pytest.raises(BenchError) as err:
            run_case(session(raw, tmp_path, "none"))
        assert len(stub.requests) == 6
    msg = str(err.value)
    assert "toy-stub.json has no recorded answer for 4 of the requested samples" in msg
    assert "lsbg/img007.png" in msg  # sample ids, not just a count
    assert "pytest cases --task toy --model stub --record-mode new_episodes" in msg


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
        assert stub.requests[-1]["texts"][0].endswith("Think step by step.\n")
    assert result.scores.n == 6


def test_new_episodes_records_only_missing_and_all_rerecords(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 10)
        run_case(session(raw, tmp_path, "once", limit=4))
        with pytest.raises(BenchError, match="has no recorded answer for 6"):
            run_case(session(raw, tmp_path, "once"))  # once + finished cassette = replay only
        run_case(session(raw, tmp_path, "new_episodes"))
        assert len(stub.requests) == 10
        run_case(session(raw, tmp_path, "all"))
        assert len(stub.requests) == 20
        lines = (tmp_path / "cassettes-from-test-server" / "toy-stub.json").read_text().splitlines()
        assert len(lines) == 1 + 10  # header + one line per image, no duplicates


def test_missing_key_only_matters_when_a_live_call_is_needed(tmp_path, monkeypatch):
    monkeypatch.delenv("ASTROBENCH_TEST_KEY", raising=False)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 4)
        with pytest.raises(BenchError, match="set the environment variable ASTROBENCH_TEST_KEY"):
            run_case(session(raw, tmp_path, "once"))
        assert len(stub.requests) == 0


def test_answers_for_images_outside_the_sample_are_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 4)
        run_case(session(raw, tmp_path, "once"))
        other = tmp_path / "other"
        other.mkdir()
        raw2 = folder_world(other, stub, 4, seed=1)  # same names, different pixels
        raw2["datasets"]["toy"]["path"] = str(other / "images")
        with pytest.raises(BenchError, match=r"toy-stub.json holds answers for 4 image\(s\) outside"):
            bench = session(raw2, tmp_path, "none")
            bench.frozen_dir = other / "frozen"
            run_case(bench)


CRASH_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from tests.test_cassettes import images, provider_for_url, requests
    from benchmark.cassettes import CaseCassette
    with CaseCassette({path!r}, record_mode="once"):
        provider_for_url({url!r}).classify(requests(images(30)))
    print("finished")
""")


def provider_for_url(url: str) -> OpenAIChatProvider:
    model = ModelConfig("stub", "openai", "stub-vlm", settings={"base_url": url, "concurrency": 2})
    return OpenAIChatProvider.from_config(model, api_key=KEY)


def test_sigkill_mid_recording_keeps_every_completed_answer(tmp_path):
    path = tmp_path / "from-test-server" / "crash.json"
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
        journaled = [ln for ln in journal_path(path).read_text().splitlines() if ln.strip()]
        assert 8 <= len(journaled) < 30
        before = len(stub.requests)
        # rerun with "once": replays the journal, calls the model only for the rest
        with CaseCassette(path, record_mode="once"):
            answers = provider(stub, concurrency=4).classify(requests(images(30)))
        assert len(stub.requests) - before == 30 - len(journaled)
    assert {a.sample_id: a.raw for a in answers} == {r.sample_id: answer_for(r.image) for r in requests(images(30))}
    assert path.exists() and not journal_path(path).exists()
    assert len(path.read_text().splitlines()) == 31


# -- in-process models: the response cache gets the same treatment ---------------
class FakeLocalProvider:
    """An in-process provider (no HTTP) that answers like the stub and counts calls."""

    calls = 0

    def __init__(self, temperature: float = 0.0) -> None:
        self.temperature = temperature

    @classmethod
    def from_config(cls, model, **_):
        return cls(float(model.settings.get("temperature", 0.0)))

    def fingerprint(self):
        return {"provider": "fake-local", "temperature": self.temperature}

    def classify(self, reqs, *, on_answer=None):
        out = []
        for r in reqs:
            FakeLocalProvider.calls += 1
            a = Answer(r.sample_id, raw=answer_for(r.image))
            out.append(a)
            if on_answer:
                on_answer(a)
        return out

    def close(self):
        pass


def test_local_models_use_a_response_cache_with_the_same_rules(tmp_path, monkeypatch):
    monkeypatch.setitem(PROVIDERS, "fake-local", f"{__name__}:FakeLocalProvider")
    FakeLocalProvider.calls = 0
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 8)
    raw["models"] = {"stub": {"provider": "fake-local", "model": "tiny"}}
    with pytest.raises(BenchError, match=r"toy-stub.jsonl has no recording for 8"):
        run_case(session(raw, tmp_path, "none"))
    first = run_case(session(raw, tmp_path, "once", limit=5))
    assert FakeLocalProvider.calls == 5
    full = run_case(session(raw, tmp_path, "once"))  # resumes: only the 3 missing
    assert FakeLocalProvider.calls == 8
    replay = run_case(session(raw, tmp_path, "none"))
    assert FakeLocalProvider.calls == 8 and replay.scores == full.scores and first.scores.n == 5
    run_case(session(raw, tmp_path, "all"))  # asks again; old answers stay until replaced
    assert FakeLocalProvider.calls == 16
    assert run_case(session(raw, tmp_path, "none")).scores == full.scores
    raw["models"]["stub"]["temperature"] = 0.5  # another fingerprint: a miss
    with pytest.raises(BenchError, match="has no recorded answer for 8"):
        run_case(session(raw, tmp_path, "none"))


# -- frozen samples ------------------------------------------------------------------
def test_frozen_sample_round_trip_and_verification(tmp_path):
    spec = {"format": "folder", "path": "/x"}
    samples = [Sample(str(i), im, i % 2) for i, im in enumerate(images(6))]
    path = write_frozen(tmp_path / "toy.npz", samples, dataset="toy", spec=spec)
    loaded = load_frozen(path, dataset="toy", spec=spec, count=4)
    assert [s.id for s in loaded] == ["0", "1", "2", "3"]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(loaded, samples))
    assert load_frozen(path, dataset="toy", spec=spec, count=10) is None  # too few: use the dataset
    with pytest.raises(BenchError, match="different source"):
        load_frozen(path, dataset="toy", spec={"format": "folder", "path": "/y"}, count=4)
    data = dict(np.load(path))
    data["images"][2, 5, 5, 0] ^= 1
    np.savez_compressed(tmp_path / "bad.npz", **data)
    with pytest.raises(BenchError, match=r"bad.npz: image 2 has sha256 .*corrupt"):
        load_frozen(tmp_path / "bad.npz", dataset="toy", spec=spec, count=None)


def test_replay_uses_the_frozen_sample_without_the_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 6)
        proc = subprocess.run(
            [sys.executable, "-m", "benchmark", "freeze", "toy"],
            cwd=REPO, capture_output=True, text=True,
            env={**os.environ, "ASTROBENCH_FIXTURES_DIR": str(tmp_path / "frozen"),
                 "ASTROBENCH_CONFIG": str(write_toml(tmp_path, raw))},
        )
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "frozen" / "toy.npz").exists()
        recorded = run_case(session(raw, tmp_path, "once"))
        import shutil

        shutil.rmtree(tmp_path / "images")  # the dataset is gone; the frozen sample remains
        replayed = run_case(session(raw, tmp_path, "none"))
    assert replayed.scores == recorded.scores and replayed.scores.n == 6


def write_toml(tmp_path: Path, raw: dict) -> Path:
    ds = raw["datasets"]["toy"]
    m = raw["models"]["stub"]
    text = f"""
[datasets.toy]
format = "folder"
path = "{ds['path']}"
classes = ["artifact", "lsbg"]

[tasks.toy]
dataset = "toy"
classes = ["artifact", "lsbg"]
prompts = ["paper"]

[models.stub]
provider = "openai"
model = "stub-vlm"
base_url = "{m['base_url']}"
api_key_env = "ASTROBENCH_TEST_KEY"
"""
    path = tmp_path / "toy.toml"
    path.write_text(text)
    return path


def test_failed_requests_are_not_recorded_and_a_rerun_retries_only_them(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 6)
        raw["models"]["stub"].update(max_retries=1, concurrency=1)
        stub.fail_next(2, status=503)  # the first request fails, retry included
        with pytest.raises(BenchError, match=r"1 of 6 requests to stub failed after retries"):
            run_case(session(raw, tmp_path, "once"))
        assert len(stub.requests) == 7
        cassette_dir = tmp_path / "cassettes-from-test-server"
        saved = b"".join(p.read_bytes() for p in cassette_dir.iterdir())
        assert b"injected fault" not in saved and b"503" not in saved
        with pytest.raises(BenchError, match="has no recorded answer for 1 .*artifact/img000.png"):
            run_case(session(raw, tmp_path, "once"))  # finished cassette: once replays only
        result = run_case(session(raw, tmp_path, "new_episodes"))  # as the message says
        assert len(stub.requests) == 8  # only the failed sample was asked again
    assert result.scores.n == 6


def test_pytest_recording_conventions_place_and_configure_cassettes(tmp_path, monkeypatch):
    """A project using the plugin outside this repo: its conftest's vcr_cassette_dir
    and vcr_config fixtures decide where cassettes go and reach vcrpy."""
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

            @pytest.fixture(scope="module")
            def vcr_cassette_dir():
                return {str(tmp_path / "recorded-from-test-server")!r}

            @pytest.fixture
            def vcr_config():
                def note(request):
                    seen.append(request.uri)
                    return request
                return {{"before_record_request": note}}

            def pytest_sessionfinish(session):
                print("VCR_CONFIG_SAW", len(seen))
        """))
        (project / "test_bench.py").write_text(
            "def test_case(bench_case, bench_run):\n    bench_run(bench_case)\n")
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "--record-mode", "once",
             "--bench-config", str(cfg), "--task", "toy", "--model", "stub", "--no-progress", "test_bench.py"],
            cwd=project, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO), "ASTROBENCH_FIXTURES_DIR": str(tmp_path / "frozen")},
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "recorded-from-test-server" / "toy-stub.json").exists()
    assert "VCR_CONFIG_SAW" in proc.stdout and "VCR_CONFIG_SAW 0" not in proc.stdout


def test_torn_journal_line_is_cut_so_later_appends_stay_readable(tmp_path):
    """A recording killed mid-write leaves half a line; the next recording appends after it.
    Both must load afterwards: the torn line is cut off, not left in the middle."""
    imgs = images(5)
    path = tmp_path / "from-test-server" / "torn.json"

    def record_then_die(reqs):
        """Record, then lose the finished file as if killed before it was written."""
        with CaseCassette(path, record_mode="once"):
            provider(stub).classify(reqs)
            kept = journal_path(path).read_bytes()
        path.unlink()
        journal_path(path).write_bytes(kept)

    with OpenAIStub() as stub:
        record_then_die(requests(imgs[:3]))
        with open(journal_path(path), "ab") as fh:
            fh.write(b'{"request":{"body":{"mess')  # killed mid-write
        record_then_die(requests(imgs[:5]))  # resumes: asks only for the 2 missing
        assert len(stub.requests) == 5
        with CaseCassette(path, record_mode="none") as cassette:
            assert len(cassette.recorded_bodies()) == 5
