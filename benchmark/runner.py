"""Run requests through a provider with caching, progress and resume."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from benchmark.providers import Provider
from benchmark.store import ResponseCache, request_key
from benchmark.core import Answer, BenchError, Request


def answer_requests(
    provider: Provider,
    requests: Sequence[Request],
    *,
    cache: ResponseCache | None = None,
    progress: str | None = None,
    refresh: bool = False,
) -> dict[str, Answer]:
    """Answer every request, keyed by sample id.

    Answers already in ``cache`` are reused; the provider is asked only for
    the rest, and each new answer is persisted the moment it arrives, so an
    interrupted run resumes where it stopped. ``progress`` is a label for a
    progress bar on stderr (None: no bar). ``refresh`` asks the provider
    for everything again; new answers then supersede the cached ones.
    """
    counts = Counter(r.sample_id for r in requests)
    if len(counts) != len(requests):
        dupes = sorted(i for i, n in counts.items() if n > 1)[:5]
        raise BenchError(f"expected unique sample ids, found duplicates: {dupes}")

    fingerprint = provider.fingerprint()
    keys = {r.sample_id: request_key(fingerprint, r) for r in requests}
    digests = {r.sample_id: r.image_sha256 for r in requests}
    answers: dict[str, Answer] = {}
    missing: list[Request] = []
    for r in requests:
        hit = cache.get(keys[r.sample_id]) if cache is not None and not refresh else None
        if hit is not None:
            answers[r.sample_id] = replace(hit, sample_id=r.sample_id, meta={**hit.meta, "cached": True})
        else:
            missing.append(r)
    if not missing:
        return answers

    bar = None
    if progress is not None:
        from tqdm import tqdm

        bar = tqdm(
            total=len(requests),
            initial=len(answers),
            desc=progress,
            unit="img",
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )

    def on_answer(answer: Answer) -> None:
        if answer.sample_id not in keys:
            raise BenchError(f"provider answered unknown sample id {answer.sample_id!r}")
        if cache is not None and answer.error is None:
            cache.put(keys[answer.sample_id], answer, image_sha256=digests[answer.sample_id])
        answers[answer.sample_id] = answer
        if bar is not None:
            bar.update(1)

    try:
        provider.classify(missing, on_answer=on_answer)
    finally:
        if bar is not None:
            bar.close()
    lost = [r.sample_id for r in missing if r.sample_id not in answers]
    if lost:
        raise BenchError(f"provider returned no answer for {len(lost)} samples, e.g. {lost[:5]}")
    return answers
