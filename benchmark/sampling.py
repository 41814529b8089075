"""Which images of a dataset a task classifies, and in which order (``sample`` in a task).

- ``first`` (the default, as in the paper): the first ``sample_size`` images in the
  dataset's order.
- ``stratified``: every class keeps its share of the dataset (largest remainder, so
  each class gets ``floor`` or ``ceil`` of ``size x share``; exact when that is whole).
  Within a class, images are taken in the order of ``sha256(seed, id)``: the same
  sample on every machine and with every NumPy version (NumPy's ``Generator`` streams
  may change between versions), and independent of the order the files are listed in.
  The sample is ordered so that every prefix (``--bench-limit N``) is itself as close
  to stratified as whole numbers allow (Webster's sequential apportionment).

A selection only needs the dataset's ids and labels, never its images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.core import BenchError, LazySample

if TYPE_CHECKING:
    from benchmark.config import TaskConfig

RULES = ("first", "stratified")


@dataclass(frozen=True)
class Selection:
    """A task's sampling rule: ``size`` None = the whole dataset (``sample_size = "all"``)."""

    rule: str = "first"
    size: int | None = None
    seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "size": "all" if self.size is None else self.size}
        if self.rule == "stratified":
            out["seed"] = self.seed
        return out

    @classmethod
    def from_json(cls, data: Any) -> Selection:
        """The inverse of :meth:`to_json`; ValueError if ``data`` is not one."""
        if not isinstance(data, dict) or data.get("rule") not in RULES:
            raise ValueError(f"selection: expected {{rule, size, seed}}, found {data!r}")
        size, seed = data.get("size"), data.get("seed")
        return cls(str(data["rule"]), None if size == "all" else int(size), None if seed is None else int(seed))

    def describe(self) -> str:
        size = "all" if self.size is None else str(self.size)
        return f"{self.rule} {size}" + (f" (seed {self.seed})" if self.rule == "stratified" else "")


    def serves(self, wanted: Selection) -> bool:
        """A frozen sample drawn by this rule holds (a prefix of) the ``wanted`` sample."""
        if wanted.rule == "first":
            return self.rule == "first" and (wanted.size is not None or self.size is None)
        return self == wanted


def task_sample(task: TaskConfig, spec: dict[str, Any], *, limit: int | None = None,
                frozen: Path | None = None, base_dir: Path | None = None) -> list[LazySample]:
    """The task's sample in order, cut to ``limit``: from the frozen sample ``frozen`` when it
    holds this sample (same rule, enough images), else drawn from the dataset. Images stay
    on disk until asked for."""
    from benchmark.datasets import open_dataset
    from benchmark.frozen import frozen_source

    assert task.dataset is not None
    selection = task.selection
    sizes = [s for s in (selection.size, limit) if s is not None]
    count = min(sizes) if sizes else None
    if frozen is not None and frozen.exists():
        source = frozen_source(frozen, dataset=task.dataset, spec=spec, count=count, base_dir=base_dir)
        if source is not None and source.selection.serves(selection):
            return source.samples(range(len(source) if count is None else count))
    source = open_dataset(task.dataset, spec, base_dir=base_dir)
    indices = select(source.ids, source.labels, selection, n_classes=task.n_classes,
                     where=f"tasks.{task.name} (dataset {task.dataset})")
    return source.samples(indices[:limit] if limit is not None else indices)


def select(ids: Sequence[str], labels: Sequence[int], selection: Selection, *, n_classes: int,
           where: str) -> list[int]:
    """The indices (into ``ids``/``labels``) of the sample, in sample order.

    ``where`` starts every error message (e.g. ``tasks.lsbg (dataset lsbg)``).
    """
    total = len(ids)
    size = total if selection.size is None else selection.size
    if size > total:
        raise BenchError(f"{where}: expected sample_size <= {total} (the images of the dataset), "
                         f"found {size}; use sample_size = \"all\" for every image")
    if selection.rule == "first":
        return list(range(size))
    if selection.rule != "stratified":
        raise BenchError(f"{where}: expected sample to be one of {list(RULES)}, found {selection.rule!r}")
    return _stratified(ids, labels, size, seed=selection.seed or 0, n_classes=n_classes, where=where)


def _stratified(ids: Sequence[str], labels: Sequence[int], size: int, *, seed: int, n_classes: int,
                where: str) -> list[int]:
    members: list[list[int]] = [[] for _ in range(n_classes)]
    outside: set[int] = set()
    for i, label in enumerate(labels):
        if 0 <= label < n_classes:
            members[int(label)].append(i)
        else:
            outside.add(int(label))
    if outside:
        raise BenchError(f"{where}: the dataset has labels {sorted(outside)} outside 0..{n_classes - 1}")
    total = len(ids)
    empty = [c for c in range(n_classes) if not members[c]]
    if empty:
        raise BenchError(f"{where}: a stratified sample needs images of every class; classes {empty} "
                         f"have none in the dataset ({total} images); use sample = \"first\"")
    quotas = [size * len(m) / total for m in members]
    counts = [int(q) for q in quotas]
    by_remainder = sorted(range(n_classes), key=lambda c: (-(quotas[c] - counts[c]), c))
    for c in by_remainder[:size - sum(counts)]:
        counts[c] += 1
    starved = [c for c in range(n_classes) if counts[c] == 0]
    if starved:
        smallest = min(len(members[c]) for c in starved)
        need = -(-total // smallest)  # every class's quota reaches 1
        raise BenchError(f"{where}: a stratified sample of {size} gives classes {starved} no image (their "
                         f"share of the {total} images is too small: {[len(members[c]) for c in starved]} "
                         f"images); expected sample_size >= {need}, or sample = \"first\"")
    ordered = [sorted(m, key=lambda i: _rank(seed, ids[i]))[:k] for m, k in zip(members, counts)]
    taken = [0] * n_classes
    out: list[int] = []
    for _ in range(size):  # Webster: the next image goes to the class furthest below its share
        c = max((c for c in range(n_classes) if taken[c] < counts[c]),
                key=lambda c: (counts[c] / (taken[c] + 0.5), -c))
        out.append(ordered[c][taken[c]])
        taken[c] += 1
    return out


def _rank(seed: int, sample_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{sample_id}".encode()).digest()
