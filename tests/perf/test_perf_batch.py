"""The OpenAI Batch API round trip on the loopback Files + Batches server (pytest-benchmark).

Group ``batch-round-trip``: n requests not yet recorded, answered by batch into a
fresh recording: write the JSONL (PNG-encoding every image), upload it, create the
batch, poll it (the server ends it at the first poll; ``batch_poll_s`` 1 ms),
download the output file, parse and journal every answer (one fsync per batch),
fold the journal. Beside it, for scale, the same 500 requests asked live
(concurrency 8, one fsync per answer) against the same server. Group
``batch-replay``: replay of the recording the batch wrote, GC off as in
test_perf_replay's ``replay-scaling``. Images are 64 x 64 (the GalaxyMNIST size).

Target (asserted by ``test_target_batch_round_trip_is_linear``): the round trip's
time per answer at 5,000 within 2x of that at 500. With ``--benchmark-disable``
(``make test``) the sizes are toy ones and only the answers are checked.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmark.config import ModelConfig
from benchmark.core import Request
from benchmark.providers.openai_chat import OpenAIChatProvider
from benchmark.recording import Recording, answer_requests
from tests.support.batch_server import BatchServer
from tests.support.folder_task import images, requests
from tests.support.openai_stub import answer_for

SIZES = (500, 5_000)
ROUNDS = {500: 5, 5_000: 2}
TOY = {500: 10, 5_000: 20}


def provider(base_url: str, **settings: Any) -> OpenAIChatProvider:
    model = ModelConfig("bench", "openai", "gpt-4o", settings={"base_url": base_url, "max_tokens": 20,
                                                               "batch_poll_s": 0.001, **settings})
    return OpenAIChatProvider.from_config(model, api_key="sk-bench-perf-key")


def record(server: BatchServer, path: Path, reqs: list[Request], *, batch: bool = True) -> dict[str, Any]:
    with Recording(path, mode="once", announce=lambda _: None) as rec:
        answers = answer_requests(provider(server.base_url, batch=batch), reqs, recording=rec)
        rec.finish(complete=True)
    return answers


def replay(path: Path, reqs: list[Request]) -> dict[str, Any]:
    with Recording(path, mode="none") as rec:
        return answer_requests(provider("http://127.0.0.1:9/v1", batch=True), reqs, recording=rec)


def check(answers: dict[str, Any], reqs: list[Request]) -> None:
    assert {k: a.raw for k, a in answers.items()} == {r.sample_id: answer_for(r.image) for r in reqs}


@pytest.fixture(scope="module")
def server() -> Iterator[BatchServer]:
    with BatchServer() as s:
        yield s


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("perf-batch-from-test-server")


@pytest.fixture(scope="module")
def reqs_of(timed: bool) -> Any:
    built: dict[int, list[Request]] = {}

    def get(n: int) -> list[Request]:
        if n not in built:
            built[n] = requests(images(n if timed else TOY[n]))
        return built[n]

    return get


@pytest.mark.benchmark(group="batch-round-trip")
@pytest.mark.parametrize("n", SIZES)
def test_batch_round_trip(benchmark: Any, perf: Any, server: BatchServer, tmp: Path, reqs_of: Any, n: int) -> None:
    reqs = reqs_of(n)
    fresh = (tmp / f"batch-{len(reqs)}-{i}.jsonl" for i in itertools.count())
    chat_calls = len(server.requests)
    answers = benchmark.pedantic(lambda path: record(server, path, reqs), setup=lambda: ((next(fresh),), {}),
                                 rounds=ROUNDS[n])
    check(answers, reqs)
    assert all(a.meta.get("via") == "batch" for a in answers.values())
    assert len(server.uploads[-1]) == len(reqs) and len(server.requests) == chat_calls  # one batch, nothing live
    perf.keep(f"batch trip {n}", benchmark, items=len(reqs))


@pytest.mark.benchmark(group="batch-round-trip")
def test_live_round_trip_500_for_scale(benchmark: Any, perf: Any, server: BatchServer, tmp: Path,
                                       reqs_of: Any) -> None:
    reqs = reqs_of(500)
    fresh = (tmp / f"live-{len(reqs)}-{i}.jsonl" for i in itertools.count())
    answers = benchmark.pedantic(lambda path: record(server, path, reqs, batch=False),
                                 setup=lambda: ((next(fresh),), {}), rounds=ROUNDS[500])
    check(answers, reqs)
    perf.keep("live trip 500", benchmark, items=len(reqs))


@pytest.mark.benchmark(group="batch-replay", disable_gc=True)  # as replay-scaling (test_perf_replay)
@pytest.mark.parametrize("n", SIZES)
def test_replay_of_a_batch_recording(benchmark: Any, perf: Any, server: BatchServer, tmp: Path, reqs_of: Any,
                                     n: int) -> None:
    reqs = reqs_of(n)
    path = tmp / f"replay-{len(reqs)}.jsonl"
    record(server, path, reqs)
    answers = benchmark.pedantic(replay, args=(path, reqs), rounds=5, warmup_rounds=1)
    check(answers, reqs)
    assert all(a.meta.get("via") == "batch" and a.meta.get("cached") for a in answers.values())
    perf.keep(f"batch replay {n}", benchmark, items=len(reqs))


def test_target_batch_round_trip_is_linear(perf: Any, request: pytest.FixtureRequest) -> None:
    small, big = (f"batch trip {n}" for n in SIZES)
    perf.need(request.config, small, big)
    perf.at_most(f"batch round trip per answer: {SIZES[1]} / {SIZES[0]}", big, small, 2)
