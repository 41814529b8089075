"""Frozen samples: a task's images, labels and digests in one compressed file
under ``fixtures/samples/``, so replay in CI needs no dataset download.

``python -m benchmark freeze lsbg morphology`` writes them from the real
datasets; replay uses a frozen sample when present, after checking every
image against its stored sha256 and the file against the dataset source it
was made from.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core import BenchError, Sample

FORMAT = "astrobench-frozen-sample/1"
FIXTURES_ENV = "ASTROBENCH_FIXTURES_DIR"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "samples"


def frozen_dir() -> Path:
    env = os.environ.get(FIXTURES_ENV)
    return Path(env) if env else DEFAULT_DIR


def source_id(spec: dict[str, Any]) -> str:
    """Identifies a dataset's source: its format and file checksums (or folder path)."""
    files = {name: entry.get("checksum") for name, entry in sorted((spec.get("files") or {}).items())}
    blob = json.dumps({"format": spec.get("format"), "files": files, "path": spec.get("path"),
                       "images": spec.get("images"), "file": spec.get("file")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def write_frozen(path: Path, samples: list[Sample], *, dataset: str, spec: dict[str, Any]) -> Path:
    """Write ``samples`` atomically as a compressed .npz."""
    if not samples:
        raise BenchError(f"nothing to freeze for dataset {dataset!r}: the sample is empty")
    shapes = {s.image.shape for s in samples}
    if len(shapes) != 1:
        raise BenchError(f"expected images of one shape to freeze, found {sorted(shapes)}")
    meta = {"format": FORMAT, "dataset": dataset, "source": source_id(spec), "count": len(samples)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez_compressed(
            tmp,
            images=np.stack([s.image for s in samples]).astype(np.uint8),
            labels=np.array([s.label for s in samples], dtype=np.int64),
            ids=np.array([s.id for s in samples]),
            digests=np.array([s.sha256 for s in samples]),
            meta=np.array(json.dumps(meta)),
        )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_frozen(path: Path, *, dataset: str, spec: dict[str, Any], count: int | None) -> list[Sample] | None:
    """The first ``count`` frozen samples, verified; None if the file holds fewer."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            images, labels = data["images"], data["labels"]
            ids, digests = data["ids"], data["digests"]
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"frozen sample {path} does not load ({exc}); delete it or re-freeze") from None
    if meta.get("format") != FORMAT or meta.get("dataset") != dataset:
        raise BenchError(f"frozen sample {path}: expected format {FORMAT!r} for dataset {dataset!r}, "
                         f"found {meta.get('format')!r} for {meta.get('dataset')!r}")
    if meta.get("source") != source_id(spec):
        raise BenchError(f"frozen sample {path} was made from a different source of dataset {dataset!r} "
                         f"than the config names; re-freeze it (python -m benchmark freeze) or delete it")
    if count is not None and len(images) < count:
        return None
    n = len(images) if count is None else count
    samples = []
    for i in range(n):
        sample = Sample(str(ids[i]), images[i], int(labels[i]))
        if sample.sha256 != str(digests[i]):
            raise BenchError(f"frozen sample {path}: image {ids[i]} has sha256 {sample.sha256}, "
                             f"expected {digests[i]}; the file is corrupt: re-freeze it")
        samples.append(sample)
    return samples


