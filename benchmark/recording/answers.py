"""Answer requests from a recording where it can, from the source where it must.

The same function serves every answer source: an HTTP model, an
in-process model and the answer extractor. A source (a provider) gives
``canonical_request(request)`` (what determines the answer),
``from_record(sample_id, record)`` (the same parser as its live answers)
and, for in-process sources, ``to_record(answer)``; HTTP sources
(``http = True``) are recorded by vcrpy (:mod:`benchmark.recording.http`).
A source with ``batches = True`` (an OpenAI model with ``batch = true``)
first answers through ``classify_batch``, which hands over each answer
with its recorded form (journaled without an fsync each: it calls ``sync``
once per batch, before it forgets the batch) and returns the requests left
for live calls.

Recorded answers come straight from the recording's index: no image
encoding, no HTTP client. Requests with the same key (e.g. a duplicate
image) are asked once. Each live answer is journaled, counted and shown
the moment it arrives.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

from benchmark.core import Answer, BenchError, Request
from benchmark.progress import Progress
from benchmark.recording.keys import canonical_json, content_key
from benchmark.recording.recording import Recording, batches_path


def answer_requests(
    source: Any,
    requests: Sequence[Request],
    *,
    recording: Recording | None = None,
    progress: Progress | None = None,
    label: str = "",
    vcr_config: dict[str, Any] | None = None,
    vcr_configure: Callable[[Any], None] | None = None,
    need_live: Callable[[int], None] | None = None,
) -> dict[str, Answer]:
    """Every request's answer, keyed by sample id (see the module docstring).

    ``need_live(n)`` is called before the first of ``n`` live calls (e.g. to
    check the API key), after everything recorded was served and before
    anything is written. ``progress`` shows the live part under ``label``.
    """
    counts = Counter(r.sample_id for r in requests)
    if len(counts) != len(requests):
        dupes = sorted(i for i, n in counts.items() if n > 1)[:5]
        raise BenchError(f"expected unique sample ids, found duplicates: {dupes}")
    keys: dict[str, str] = {}
    canon: dict[str, dict[str, Any]] = {}  # kept only for the requests to ask (a recording stores it)
    answers: dict[str, Answer] = {}
    missing: dict[str, list[Request]] = {}
    if recording is not None:
        _check_same_images(recording, requests)
    replayed: set[str] = set()
    for r in requests:
        request = _canonical(source, r)
        key = keys[r.sample_id] = content_key(canonical_json(request))
        entry = recording.get(key) if recording is not None else None
        if entry is None:
            missing.setdefault(key, []).append(r)
            canon[r.sample_id] = request
            continue
        try:
            answer = source.from_record(r.sample_id, entry.data())
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchError(f"{entry.where()}: the recorded answer does not parse ({exc!r}); "
                             "re-record it with --record-mode rewrite") from None
        answer.meta["cached"] = True
        if key in replayed:  # a duplicate image: one call was paid for, and counted once
            answer.usage = {}
        replayed.add(key)
        answers[r.sample_id] = answer
    if not missing:
        return answers
    if recording is not None and recording.strict:
        raise _missing_error(recording, [rs[0] for rs in missing.values()])
    if need_live is not None:
        need_live(len(missing))

    if progress is not None:
        progress.start(label or source.name, len(requests), replayed=len(answers))
    tap = None
    if recording is not None and getattr(source, "http", False):
        from benchmark.recording.http import HttpTap

        tap = HttpTap(vcr_config=vcr_config, configure=vcr_configure, path=f"{recording.path}.vcr")
    live = 0
    unrecorded: list[str] = []
    # vcrpy sees the wire body, which a repeat does not change; it keys what it hands over by that
    wire = getattr(source, "wire_request", None)
    tap_keys = {rs[0].sample_id: content_key(canonical_json(wire(rs[0]))) if wire else key
                for key, rs in missing.items()} if tap else {}

    def on_answer(answer: Answer, payload: dict[str, Any] | None = None) -> None:
        """``payload``: the recorded form, when the source has it at hand (a batch answer)."""
        nonlocal live
        handed = payload is not None
        key = keys.get(answer.sample_id)
        group = missing.get(key) if key is not None else None
        if not group:
            raise BenchError(f"{source.name}: answered unknown sample id {answer.sample_id!r}")
        if recording is not None and answer.error is None:
            if payload is None:
                payload = ({"response": tap.take(tap_keys[answer.sample_id])} if tap is not None
                           else source.to_record(answer))
            if payload.get("response", payload.get("answer")) is None:
                unrecorded.append(answer.sample_id)
            else:
                first = group[0]
                recording.put(key, sample=first.sample_id, img=first.image_sha256,
                              request=canon[first.sample_id], payload=payload,
                              sync=not handed)  # a handed-over answer is synced by its source
        for r in group:  # a duplicate image shares the answer, not its cost (one call was paid for)
            answers[r.sample_id] = answer if r.sample_id == answer.sample_id else replace(
                answer, sample_id=r.sample_id, meta=dict(answer.meta), usage={})
        live += len(group)
        if progress is not None:
            progress.advance(len(group))

    asks = [rs[0] for rs in missing.values()]
    try:
        if getattr(source, "batches", False):
            asks = source.classify_batch(
                asks, keys=[keys[r.sample_id] for r in asks], on_answer=on_answer, progress=progress,
                journal=batches_path(recording.path) if recording is not None else None,
                sync=recording.sync if recording is not None else None,
                recorded=(lambda k: recording.get(k) is not None) if recording is not None else None,
                announce=recording.announce if recording is not None else None)
        if asks:
            with tap if tap is not None else nullcontext():
                source.classify(asks, on_answer=on_answer)
    finally:
        if progress is not None:
            progress.close()
    lost = [rs[0].sample_id for rs in missing.values() if rs[0].sample_id not in answers]
    if lost:
        raise BenchError(f"{source.name}: no answer for {len(lost)} samples, e.g. {lost[:5]}")
    if unrecorded and recording is not None:
        recording.announce(f"{len(unrecorded)} answers of {source.name} were not recorded (a vcr_config "
                           f"hook dropped them), e.g. sample {unrecorded[0]}")
    return answers


def _canonical(source: Any, request: Request) -> dict[str, Any]:
    """The source's canonical request, for every source alike with which repeat it is (the same
    request asked again) and the label shift of a permuted prompt (the prompt text already
    differs; the shift makes each record say which numbering it answered), each when not 0."""
    extra = {k: v for k, v in (("repeat", request.repeat), ("label_shift", request.shift)) if v}
    return {**source.canonical_request(request), **extra}


def _check_same_images(recording: Recording, requests: Sequence[Request]) -> None:
    """A recorded answer for a sample id whose image changed means the data changed."""
    for r in requests:
        if not r.image_sha256:
            continue
        for e in recording.entries_for(r.sample_id):
            if e.img and e.img != r.image_sha256:
                raise BenchError(
                    f"{e.where()}: sample {r.sample_id} was recorded for an image with sha256 "
                    f"{e.img[:16]}..., but the sample's image now has {r.image_sha256[:16]}...: the "
                    "dataset or the sample changed since it was recorded; re-record with --record-mode rewrite")


def _missing_error(recording: Recording, missing: list[Request]) -> BenchError:
    ids = ", ".join(r.sample_id for r in missing[:10]) + (", ..." if len(missing) > 10 else "")
    state = "has no recording" if not recording.path.exists() else "has no recorded answer"
    why = "" if recording.mode == "none" else " (the recording is complete, so 'once' only replays)"
    if batches_path(recording.path).exists():
        why += (f" (batches submitted for them are pending in {batches_path(recording.path)}; the command "
                "below collects them)")
    return BenchError(
        f"{recording.path} {state} for {len(missing)} of the requested samples (sample ids: {ids}) in "
        f"record mode {recording.mode!r}{why}; record them with:\n  "
        f"{recording.resolve_hint or 'pytest ...'} --record-mode new_episodes")
