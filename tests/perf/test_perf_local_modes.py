"""Throughput of the transformers provider's modes on the tiny LLaVA-NeXT, on CPU (pytest-benchmark).

Same model, images and prompt (the paper's LLaVA morphology prompt, paper
prompt format) for every test of the group ``local-modes``:

* ``generate``: the paper's method, 200 new tokens (forced with
  ``min_new_tokens=200``), batch 1, then parsing of the text;
* ``score``: one forward pass, batch 1 and batch 8 (left-padded).

torch runs on one thread (toy matrices; restored afterwards). Each test warms
up once at its batch size. Targets, asserted from the stats (mean time per
image): score batch 1 >= 10x faster than generate; score batch 8 >= 1.0x
batch 1: batching only saves per-call overhead on this tiny model on a CPU
(1.2-1.7x measured on a 2-core CPU), so the ratio is printed and only a
slowdown fails. The model is random and tiny: only the ratios mean anything
(tests/perf/gpu_llava.py measures the real size on a GPU). With
``--benchmark-disable`` the runs are toy sized (16 tokens, 8 images).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmark.config import ModelConfig
from benchmark.core import Request
from benchmark.parsing import parse_answer

ROOT = Path(__file__).resolve().parents[2]
PROMPT = ROOT / "cases" / "prompts" / "morphology" / "paper-llava.txt"
N_CLASSES = 4
NEW_TOKENS = 200          # the paper's max_new_tokens, forced (toy: 16)
GEN_IMAGES = 2            # images per generate round (toy: 1)
SCORE_IMAGES = 32         # images per score round (toy: 8)
ROUNDS = {"generate": 3, "score": 5}


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    torch = pytest.importorskip("torch")

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from tests.support.tiny_llava import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("perf-tiny-llava") / "tiny")


@pytest.fixture(scope="module")
def images(timed: bool) -> list[Request]:
    prompt = PROMPT.read_text(encoding="utf-8")
    rng = np.random.default_rng(0)
    n = SCORE_IMAGES if timed else 8
    return [Request(f"s{i}", prompt, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), N_CLASSES)
            for i in range(n)]


def make(path: Path, reqs: list[Request], *, warm: bool, **settings: Any) -> Any:
    from benchmark.providers.hf import TransformersProvider

    p = TransformersProvider.from_config(
        ModelConfig("tiny", "transformers", str(path), settings={"prompt_format": "paper", **settings}))
    if warm:  # load + warm up at the measured batch size
        p.classify(reqs[:p.settings["batch_size"]])
    return p


@pytest.fixture(scope="module")
def score_b1() -> list[Any]:
    return []  # the answers of test_score[1]: batch 8 must give the same


@pytest.mark.benchmark(group="local-modes")
def test_generate_200_tokens_batch1(benchmark: Any, perf: Any, one_thread: None, tiny_model: Path,
                                    images: list[Request], timed: bool) -> None:
    tokens = NEW_TOKENS if timed else 16
    reqs = images[:GEN_IMAGES if timed else 1]
    p = make(tiny_model, reqs, warm=timed, mode="generate", max_new_tokens=tokens, min_new_tokens=tokens,
             batch_size=1)

    def run() -> list[Any]:
        answers = p.classify(reqs)
        for a in answers:
            a.label = parse_answer(a.raw, N_CLASSES)
        return answers

    answers = benchmark.pedantic(run, rounds=ROUNDS["generate"])
    assert [a.sample_id for a in answers] == [r.sample_id for r in reqs]
    assert all(a.usage["completion_tokens"] == tokens and isinstance(a.raw, str) for a in answers), \
        [a.usage for a in answers]
    assert all(a.label is None or a.label in range(N_CLASSES) for a in answers)
    perf.keep("generate", benchmark, items=len(reqs))


@pytest.mark.benchmark(group="local-modes")
@pytest.mark.parametrize("batch", [1, 8])
def test_score(benchmark: Any, perf: Any, one_thread: None, tiny_model: Path, images: list[Request],
               score_b1: list[Any], timed: bool, batch: int) -> None:
    p = make(tiny_model, images, warm=timed, mode="score", batch_size=batch)
    answers = benchmark.pedantic(p.classify, args=(images,), rounds=ROUNDS["score"])
    probs = np.array([a.probs for a in answers])
    assert probs.shape == (len(images), N_CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert [a.label for a in answers] == [int(np.argmax(row)) for row in probs]
    if batch == 1:
        score_b1[:] = answers
    elif score_b1:  # results equal batch size 1 (left padding, position ids)
        np.testing.assert_allclose(probs, [a.probs for a in score_b1], atol=1e-4)
    perf.keep(f"score batch {batch}", benchmark, items=len(images))


def test_target_score_vs_generate(perf: Any, request: pytest.FixtureRequest) -> None:
    perf.need(request.config, "generate", "score batch 1")
    perf.at_least("tiny LLaVA: generate 200 tok / score (batch 1)", "generate", "score batch 1", 10)


def test_target_batch8_vs_batch1(perf: Any, request: pytest.FixtureRequest) -> None:
    perf.need(request.config, "score batch 1", "score batch 8")
    # 1.2-1.7x on a 2-core CPU: only a slowdown fails (see the module docstring).
    perf.at_least("tiny LLaVA score: batch 1 / batch 8", "score batch 1", "score batch 8", 1.0)
