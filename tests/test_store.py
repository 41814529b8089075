"""The crash-safe response cache and the resume logic around providers."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.runner import answer_requests
from benchmark.store import ResponseCache, request_key
from benchmark.core import Answer, BenchError, Request


class CountingProvider:
    """Answers "Category <label>" from the first pixel; counts calls."""

    def __init__(self, *, fail_after: int | None = None, fingerprint: dict | None = None):
        self.calls = 0
        self.fail_after = fail_after
        self._fp = fingerprint or {"provider": "counting"}

    def fingerprint(self):
        return self._fp

    def classify(self, requests, *, on_answer=None):
        out = []
        for r in requests:
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise KeyboardInterrupt("simulated interruption")
            self.calls += 1
            a = Answer(r.sample_id, raw=f"Category {int(r.image[0, 0, 0]) % 2}")
            out.append(a)
            if on_answer:
                on_answer(a)
        return out

    def close(self):
        pass


def requests(n: int, prompt: str = "p") -> list[Request]:
    return [Request(str(i), prompt, np.full((4, 4, 3), i, np.uint8), 2) for i in range(n)]


def test_resume_after_interruption_asks_only_for_missing(tmp_path):
    cache = ResponseCache(tmp_path / "c.jsonl")
    p = CountingProvider(fail_after=4)
    with pytest.raises(KeyboardInterrupt):
        answer_requests(p, requests(10), cache=cache)
    assert len(ResponseCache(tmp_path / "c.jsonl")) == 4  # persisted before the interrupt
    p2 = CountingProvider()
    answers = answer_requests(p2, requests(10), cache=ResponseCache(tmp_path / "c.jsonl"))
    assert p2.calls == 6
    assert {k: a.raw for k, a in answers.items()} == {str(i): f"Category {i % 2}" for i in range(10)}
    p3 = CountingProvider()
    answer_requests(p3, requests(10), cache=ResponseCache(tmp_path / "c.jsonl"))
    assert p3.calls == 0


def test_changed_prompt_or_model_is_a_miss(tmp_path):
    cache = ResponseCache(tmp_path / "c.jsonl")
    answer_requests(CountingProvider(), requests(3), cache=cache)
    p = CountingProvider()
    answer_requests(p, requests(3, prompt="other"), cache=cache)
    assert p.calls == 3
    p = CountingProvider(fingerprint={"provider": "counting", "temperature": 1})
    answer_requests(p, requests(3), cache=cache)
    assert p.calls == 3


def test_key_depends_on_image_prompt_and_fingerprint():
    r = requests(2)
    fp = {"m": 1}
    assert request_key(fp, r[0]) != request_key(fp, r[1])
    assert request_key(fp, r[0]) != request_key({"m": 2}, r[0])
    same_image_other_id = Request("x", "p", r[0].image, 2)
    assert request_key(fp, r[0]) == request_key(fp, same_image_other_id)


def test_torn_last_line_is_ignored_and_not_glued(tmp_path):
    path = tmp_path / "c.jsonl"
    cache = ResponseCache(path)
    cache.put("k1", Answer("1", raw="Category 1"))
    with open(path, "ab") as fh:
        fh.write(b'{"key": "k2", "answer": {"sample_')  # killed mid-write
    cache = ResponseCache(path)
    assert list(cache.keys()) == ["k1"]
    cache.put("k3", Answer("3", raw="Category 0"))
    assert sorted(ResponseCache(path).keys()) == ["k1", "k3"]


def test_corrupt_line_in_the_middle_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('garbage\n{"key": "k", "answer": {"sample_id": "1", "raw": "1"}}\n')
    with pytest.raises(BenchError, match=r"c.jsonl:1: expected a JSON record"):
        ResponseCache(path)


def test_duplicate_sample_ids_are_refused():
    r = requests(2)
    dup = [r[0], Request("0", "p", r[1].image, 2)]
    with pytest.raises(BenchError, match="unique sample ids"):
        answer_requests(CountingProvider(), dup)
