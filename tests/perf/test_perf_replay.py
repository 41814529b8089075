"""Replay speed, scaling and size of recordings (pytest-benchmark).

Replay of N recorded answers through the project's OpenAI provider, three ways
(group ``replay-500``):

* ``ours``: the recording layer (``benchmark.recording``): answers from the
  log's index, parsed by the provider's own parser; no image encoding, no
  HTTP client. Each round opens the recording (reads and indexes the file).
* ``floor``: the openai client with the N calls answered in-process by an
  httpx ``MockTransport`` from a dict: the cheapest a client-based replay can be.
* ``vcrpy``: a vcrpy cassette with its defaults (YAML, match_on
  method/uri/body), recorded against the loopback stand-in. Its replay of 500
  answers takes 60-70 s on a 2-core CPU (it grows faster than n: 100
  answers take 3.4 s), so it runs one round (``benchmark.pedantic(rounds=1)``)
  at the same N as the others, rather than more rounds at a smaller N, which
  would flatter it.

Then ours alone over synthetic logs in the real format at 500, 5,000 and
50,000 answers (group ``replay-scaling``), timed with Python's cyclic garbage
collector off: with it on, the 50,000 row also pays for full collections
over everything the test session holds (1.5-2.5x per answer, varying from
run to run), which says nothing about the recording layer's own O(n)
(call counts grow exactly with n); an O(n^2) step would still show as 10x per
answer per decade. And ``--record-mode all`` over an existing recording,
live against the loopback stand-in (group ``rerecord``).

Targets, asserted from the stats by the ``test_target_*`` tests (mean time per
answer): floor / ours >= 10, vcrpy / ours >= 300; per-answer replay time at
5,000 within 2x of 500 and at 50,000 within 2x of 5,000 (O(n));
``--record-mode all`` per answer at 2n within 1.5x of n (O(n^2) would be 2x);
size <= 1,024 bytes per answer (a plain assert). With ``--benchmark-disable``
(``make test``) every size is a toy one and only the answers are checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmark.config import ModelConfig
from benchmark.core import Request
from benchmark.providers.openai_chat import OpenAIChatProvider
from benchmark.recording import Recording, answer_requests, canonical_json, content_key
from benchmark.recording.log import FORMAT, compact_texts, iter_lines, record_line
from tests.support.openai_stub import OpenAIStub, answer_for, mark_image

try:
    import httpx2 as httpx  # the transport library of openai>=3
except ImportError:  # pragma: no cover
    import httpx

ROOT = Path(__file__).resolve().parents[2]
REPLAY_N = 500            # answers in the replay-500 group (toy: 20)
SCALES = (500, 5_000, 50_000)
SCALE_ROUNDS = {500: 20, 5_000: 5, 50_000: 3}
RERECORD = (1_000, 2_000)  # --record-mode all over n and 2n answers
TOY = {500: 20, 5_000: 40, 50_000: 60, 1_000: 5, 2_000: 10}
MAX_BYTES_PER_ANSWER = 1024


# -- helpers (the same code paths as `pytest cases`) ---------------------------------------------
def make_requests(n: int, size: int = 64) -> list[Request]:
    rng = np.random.default_rng(0)
    prompt = (ROOT / "cases" / "prompts" / "morphology" / "paper.txt").read_text()
    return [Request(str(i), prompt, mark_image(rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                                               label=i % 4, style=i % 5, n_classes=4), 4) for i in range(n)]


def provider(base_url: str, http_client: Any = None) -> OpenAIChatProvider:
    model = ModelConfig("bench", "openai", "gpt-4o",
                        settings={"base_url": base_url, "concurrency": 8, "max_tokens": 20})
    settings = OpenAIChatProvider.from_config(model, api_key="sk-x").settings
    return OpenAIChatProvider(name="bench", model="gpt-4o", settings=settings, api_key="sk-bench",
                              http_client=http_client)


def completion(text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-9xYzAbCdEfGhIjKlMnOpQrStUvWx", "object": "chat.completion", "created": 1718000000,
            "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_9f2bfdaa89",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 441, "completion_tokens": 3, "total_tokens": 444}}


def check(answers: Any, reqs: list[Request]) -> None:
    got = answers if isinstance(answers, dict) else {a.sample_id: a for a in answers}
    assert {k: a.raw for k, a in got.items()} == {r.sample_id: answer_for(r.image) for r in reqs}, \
        "replayed answers differ from the recorded ones"


def record_ours(base_url: str, path: Path, reqs: list[Request], mode: str = "once") -> None:
    with Recording(path, mode=mode, announce=lambda _: None) as rec:
        answer_requests(provider(base_url), reqs, recording=rec)
        rec.finish(complete=True)


def replay_ours(path: Path, reqs: list[Request]) -> dict[str, Any]:
    with Recording(path, mode="none") as rec:
        return answer_requests(provider("http://127.0.0.1:9/v1"), reqs, recording=rec)


def synthetic_log(path: Path, reqs: list[Request]) -> None:
    """A recording in the real format, written directly (no HTTP): for the scaling rows."""
    p = provider("http://127.0.0.1:9/v1")
    prompts: dict[str, str] = {}
    lines = []
    for r in reqs:
        canon = p.canonical_request(r)
        rest = compact_texts({"request": canon, "response": completion(answer_for(r.image))}, prompts)
        lines.append(record_line(content_key(canonical_json(canon)), r.sample_id, r.image_sha256, rest))
    path.write_bytes(b"\n".join(iter_lines({"format": FORMAT, "complete": True}, prompts, lines)) + b"\n")


def vcrpy_defaults() -> Any:
    import vcr

    return vcr.VCR(serializer="yaml", match_on=("method", "uri", "body"), record_mode="once")


# -- module fixtures: built once, shared by the timed tests --------------------------------------
@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("perf-from-test-server")


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as s:
        yield s


@pytest.fixture(scope="module")
def replay_reqs(timed: bool) -> list[Request]:
    return make_requests(REPLAY_N if timed else TOY[REPLAY_N])


@pytest.fixture(scope="module")
def ours_log(stub: OpenAIStub, tmp: Path, replay_reqs: list[Request]) -> Path:
    path = tmp / "ours.jsonl"
    record_ours(stub.base_url, path, replay_reqs)
    return path


@pytest.fixture(scope="module")
def vcr_cassette(stub: OpenAIStub, tmp: Path, replay_reqs: list[Request]) -> Path:
    path = tmp / "vcrpy-defaults.yaml"
    with vcrpy_defaults().use_cassette(str(path)):
        provider(stub.base_url).classify(replay_reqs)
    return path


@pytest.fixture(scope="module")
def floor_provider(stub: OpenAIStub, replay_reqs: list[Request]) -> Iterator[OpenAIChatProvider]:
    replies = {}
    for req in replay_reqs:
        body = provider(stub.base_url).request_body(req)
        replies[json.dumps(body, sort_keys=True, separators=(",", ":"))] = completion(answer_for(req.image))

    def handler(request: Any) -> Any:
        key = json.dumps(json.loads(request.content), sort_keys=True, separators=(",", ":"))
        return httpx.Response(200, json=replies[key])

    client = httpx.Client(transport=httpx.MockTransport(handler))
    yield provider(stub.base_url, http_client=client)
    client.close()


@pytest.fixture(scope="module")
def scale_log(tmp: Path, timed: bool) -> Callable[[int], tuple[Path, list[Request]]]:
    """``scale_log(n)``: a synthetic recording of n answers (toy size without timings), built once."""
    built: dict[int, tuple[Path, list[Request]]] = {}

    def get(n: int) -> tuple[Path, list[Request]]:
        if n not in built:
            m = n if timed else TOY[n]
            reqs = make_requests(m, size=8)
            path = tmp / f"scale-{m}.jsonl"
            synthetic_log(path, reqs)
            built[n] = path, reqs
        return built[n]

    return get


# -- replay of 500: ours vs the floor vs vcrpy defaults ------------------------------------------
@pytest.mark.benchmark(group="replay-500")
def test_replay_ours(benchmark: Any, perf: Any, ours_log: Path, replay_reqs: list[Request]) -> None:
    answers = benchmark(replay_ours, ours_log, replay_reqs)
    check(answers, replay_reqs)
    perf.keep("replay ours", benchmark, items=len(replay_reqs))


@pytest.mark.benchmark(group="replay-500")
def test_replay_floor(benchmark: Any, perf: Any, floor_provider: OpenAIChatProvider,
                      replay_reqs: list[Request]) -> None:
    answers = benchmark(floor_provider.classify, replay_reqs)
    check(answers, replay_reqs)
    perf.keep("replay floor", benchmark, items=len(replay_reqs))


@pytest.mark.benchmark(group="replay-500")
def test_replay_vcrpy_defaults(benchmark: Any, perf: Any, stub: OpenAIStub, vcr_cassette: Path,
                               replay_reqs: list[Request]) -> None:
    def replay() -> Any:
        with vcrpy_defaults().use_cassette(str(vcr_cassette), record_mode="none"):
            return provider(stub.base_url).classify(replay_reqs)

    answers = benchmark.pedantic(replay, rounds=1, iterations=1)  # ~70 s for 500 answers
    check(answers, replay_reqs)
    perf.keep("replay vcrpy", benchmark, items=len(replay_reqs))


def test_target_replay_vs_floor_and_vcrpy(perf: Any, request: pytest.FixtureRequest) -> None:
    perf.need(request.config, "replay ours", "replay floor", "replay vcrpy")
    perf.at_least("replay 500: floor / ours", "replay floor", "replay ours", 10)
    perf.at_least("replay 500: vcrpy defaults / ours", "replay vcrpy", "replay ours", 300)


def test_size_per_answer(perf: Any, ours_log: Path, vcr_cassette: Path, replay_reqs: list[Request],
                         timed: bool) -> None:
    n = len(replay_reqs)
    ours, vcrpy = ours_log.stat().st_size / n, vcr_cassette.stat().st_size / n
    if timed:
        perf.note(f"{f'size per answer ({n} answers): ours':<48} {ours:8.0f} B    "
                  f"target <= {MAX_BYTES_PER_ANSWER} B   (vcrpy defaults {vcrpy:,.0f} B)")
    assert ours <= MAX_BYTES_PER_ANSWER, f"expected <= {MAX_BYTES_PER_ANSWER} B per answer, found {ours:.0f} B"


# -- ours at scale -------------------------------------------------------------------------------
@pytest.mark.benchmark(group="replay-scaling", disable_gc=True)  # see the module docstring
@pytest.mark.parametrize("n", SCALES)
def test_replay_scaling(benchmark: Any, perf: Any, scale_log: Any, n: int) -> None:
    path, reqs = scale_log(n)
    answers = benchmark.pedantic(replay_ours, args=(path, reqs), rounds=SCALE_ROUNDS[n], warmup_rounds=1)
    check(answers, reqs)
    perf.keep(f"replay {n}", benchmark, items=len(reqs))


def test_target_replay_is_linear(perf: Any, request: pytest.FixtureRequest) -> None:
    names = [f"replay {n}" for n in SCALES]
    perf.need(request.config, *names)
    for small, big in pairwise(names):
        perf.at_most(f"per answer: {big} / {small}", big, small, 2)


# -- --record-mode all over an existing recording ------------------------------------------------
@pytest.mark.benchmark(group="rerecord")
@pytest.mark.parametrize("n", RERECORD)
def test_rerecord_all(benchmark: Any, perf: Any, stub: OpenAIStub, tmp: Path, timed: bool, n: int) -> None:
    reqs = make_requests(n if timed else TOY[n], size=16)
    path = tmp / f"all-{len(reqs)}.jsonl"
    record_ours(stub.base_url, path, reqs)
    # Each round asks the stand-in again for every answer and replaces the recording
    # (same answers: the stand-in is deterministic), so rounds need no setup.
    benchmark.pedantic(record_ours, args=(stub.base_url, path, reqs, "all"), rounds=2)
    check(replay_ours(path, reqs), reqs)
    perf.keep(f"rerecord {n}", benchmark, items=len(reqs))


def test_target_rerecord_is_linear(perf: Any, request: pytest.FixtureRequest) -> None:
    small, big = (f"rerecord {n}" for n in RERECORD)
    perf.need(request.config, small, big)
    perf.at_most(f"--record-mode all per answer: {RERECORD[1]} / {RERECORD[0]}", big, small, 1.5)
