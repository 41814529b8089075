"""Few-shot prompts: labelled example images, drawn from the dataset beyond the evaluated sample.

A prompt variant with ``shots = k`` (``[tasks.NAME.variants.VARIANT]``) sends, in one user turn,
the prompt file's text, then k examples of every class (each its text part, ``example_text`` with
``{label}`` and ``{name}`` filled in, then its image), then ``query_text`` and the query image.
Every query of a case gets the same examples.

The pool: every image of the dataset that is not in the task's sample (its first ``sample_size``
images, or its stratified sample; ``--bench-limit`` changes neither the pool nor the examples)
and whose pixels (sha256) are not those of a sample image, so an example is never a test image, even where the data holds
duplicates.

The draw (:func:`draw_examples`) works on ids and labels only: per class, in class order, a
partial Fisher-Yates shuffle of the class's pool (in dataset order) driven by the raw 64-bit
outputs of ``numpy.random.PCG64(shot_seed)``, made unbiased by rejection. Only the PCG64 bit
stream is used, which NumPy keeps stable (its ``Generator`` methods carry no such promise), so a
seed and the same data give the same examples on every machine and NumPy version. Examples are
sent in rounds: the first example of each class in class order, then the second, and so on.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core import BenchError, DatasetUnavailable, Example, LazySample

_2_64 = 1 << 64


def _below(bits: np.random.PCG64, n: int) -> int:
    """A uniform integer in [0, n) from PCG64's raw outputs (rejection: no modulo bias)."""
    limit = _2_64 - _2_64 % n
    while True:
        x = int(bits.random_raw())
        if x < limit:
            return x % n


def draw_examples(pool_ids: Sequence[str], pool_labels: Sequence[int], *, exclude: Collection[str] = (),
                  k: int, n_classes: int, seed: int, where: str = "few-shot") -> list[tuple[str, int]]:
    """``k`` (id, label) pairs per class from the pool minus ``exclude``, in rounds (see the module
    docstring); a class with fewer than ``k`` pool images is a BenchError starting with ``where``."""
    if len(pool_ids) != len(pool_labels):
        raise BenchError(f"{where}: expected as many pool labels as ids ({len(pool_ids)}), found {len(pool_labels)}")
    if k < 1:
        raise BenchError(f"{where}: expected shots >= 1, found {k}")
    left_out = set(exclude)
    by_class: list[list[str]] = [[] for _ in range(n_classes)]
    for sid, label in zip(pool_ids, pool_labels):
        if not 0 <= label < n_classes:
            raise BenchError(f"{where}: expected labels in 0..{n_classes - 1}, found {label} for {sid!r}")
        if sid not in left_out:
            by_class[label].append(sid)
    short = [f"class {c}: {len(ids)}" for c, ids in enumerate(by_class) if len(ids) < k]
    if short:
        raise BenchError(f"{where}: expected at least {k} images of every class outside the sample to draw "
                         f"{k} examples per class, found {'; '.join(short)}")
    bits = np.random.PCG64(seed)
    chosen = []
    for ids in by_class:
        order = list(range(len(ids)))
        for i in range(k):
            j = i + _below(bits, len(ids) - i)
            order[i], order[j] = order[j], order[i]
        chosen.append([ids[i] for i in order[:k]])
    return [(chosen[c][r], c) for r in range(k) for c in range(n_classes)]


def choose_examples(items: Sequence[Any], sample: Sequence[Any], *, k: int, seed: int,
                    classes: Sequence[str], example_text: str, where: str = "few-shot") -> tuple[Example, ...]:
    """The examples from ``items`` (the whole dataset, in its order; ``Sample`` or ``LazySample``)
    given the evaluated ``sample``: the pool is the rest, less any image with the pixels of a sample
    image (each pool image is read once to know its digest, unless the source knows it)."""
    in_sample, sample_digests = {s.id for s in sample}, {s.sha256 for s in sample}
    pool = [s for s in items if s.id not in in_sample]
    duplicates = {s.id for s in pool if s.sha256 in sample_digests}
    chosen = draw_examples([s.id for s in pool], [s.label for s in pool], exclude=duplicates, k=k,
                           n_classes=len(classes), seed=seed,
                           where=f"{where} ({len(items)} images, {len(in_sample)} of them the sample, "
                                 f"{len(duplicates)} more left out as copies of sample images)")
    by_id = {s.id: s for s in pool}
    return tuple(Example(sid, label, by_id[sid].image, example_text.format(label=label, name=classes[label]),
                         by_id[sid].sha256) for sid, label in chosen)


def load_items(name: str, spec: dict[str, Any], *, base_dir: Path | None, variant: str) -> list[LazySample]:
    """Every item of the dataset, in its order, its image read when asked: the one place few-shot
    reads data (a frozen sample holds only the sample, so the dataset itself is needed, also to replay)."""
    from benchmark.datasets import folder_path, open_dataset

    why = (f"prompt variant {variant!r} draws its few-shot examples from the images of dataset {name!r} "
           "beyond the sample (a frozen sample holds only the sample), so it needs the dataset itself")
    if spec.get("format") == "folder" and not folder_path(spec, base_dir).is_dir():
        raise DatasetUnavailable(f"{why}; expected its image folder at {folder_path(spec, base_dir)}, found nothing")
    try:
        source = open_dataset(name, spec, base_dir=base_dir)
        return [source.sample(i) for i in range(len(source))]
    except DatasetUnavailable as exc:
        raise DatasetUnavailable(f"{why}: {exc}") from None
