"""Frozen samples: a task's images, labels and digests in one compressed .npz
under ``fixtures/samples/``, so replay in CI needs no dataset download.

``python -m benchmark freeze lsbg morphology`` writes them from the real
datasets. Layout (format ``astrobench-frozen-sample/2``): arrays ``images``
(uint8 N x H x W x 3), ``labels``, ``ids``, ``digests`` (per-image sha256) and
``meta`` (JSON). ``meta`` records the dataset, its source (format and file
checksums, or folder path and classes), ``samples_sha256`` over every
(id, label, image sha256), and for folder datasets the folder's manifest
(:func:`benchmark.datasets.folder_manifest`: class list and every image's
path, class and file sha256).

Loading checks, in order: format, dataset, source, the samples digest over all
ids/labels/image digests, the folder manifest (when the folder exists; a frozen
sample of a folder that is gone is the only copy and is used on its own
digests), then the sha256 of each returned image. Only the first ``count``
images are decompressed (the images member is streamed, not loaded whole).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from benchmark.core import BenchError, Sample, write_atomic

if TYPE_CHECKING:
    from benchmark.datasets import FolderManifest

FORMAT = "astrobench-frozen-sample/2"
FIXTURES_ENV = "ASTROBENCH_FIXTURES_DIR"
DEFAULT_DIR = Path("fixtures") / "samples"  # relative to the project (pytest's rootdir, or the current folder)
_REFREEZE = "re-freeze it (python -m benchmark freeze TASK) or delete it"


def frozen_dir() -> Path:
    env = os.environ.get(FIXTURES_ENV)
    return Path(env) if env else DEFAULT_DIR


def source_id(spec: dict[str, Any]) -> str:
    """Identifies a dataset's source: its format and file checksums (or folder path and classes)."""
    files = {name: entry.get("checksum") for name, entry in sorted((spec.get("files") or {}).items())}
    blob = json.dumps({"format": spec.get("format"), "files": files, "path": spec.get("path"),
                       "classes": spec.get("classes"), "images": spec.get("images"),
                       "file": spec.get("file")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def samples_digest(ids: Any, labels: Any, digests: Any) -> str:
    """sha256 over every (id, label, image sha256), in order."""
    h = hashlib.sha256()
    for i, label, digest in zip(ids, labels, digests, strict=True):
        h.update(json.dumps([str(i), int(label), str(digest)]).encode() + b"\n")
    return h.hexdigest()


def _manifest(dataset: str, spec: dict[str, Any], base_dir: Path | None, *,
              required: bool = False) -> FolderManifest | None:
    from benchmark.datasets import folder_manifest

    if spec.get("format") != "folder":
        return None
    return folder_manifest(dataset, spec, base_dir=base_dir, required=required)


def write_frozen(path: Path, samples: list[Sample], *, dataset: str, spec: dict[str, Any],
                 base_dir: Path | None = None) -> Path:
    """Write ``samples`` atomically as a compressed .npz.

    ``base_dir`` resolves a folder dataset's relative ``path`` (as in ``load_dataset``);
    a folder dataset's folder must exist and the samples must agree with its labels.
    """
    if not samples:
        raise BenchError(f"nothing to freeze for dataset {dataset!r}: the sample is empty")
    shapes = {s.image.shape for s in samples}
    if len(shapes) != 1:
        raise BenchError(f"expected images of one shape to freeze, found {sorted(shapes)}")
    manifest = _manifest(dataset, spec, base_dir, required=True)
    if manifest is not None:
        for s in samples:
            want = manifest.labels.get(s.id)
            if want != s.label:
                found = "no such image" if want is None else f"label {want}"
                raise BenchError(f"dataset {dataset!r}: expected sample {s.id} with label {s.label} "
                                 f"to match the folder {manifest.folder}, found {found} there; "
                                 f"load the sample again before freezing")
    ids = np.array([s.id for s in samples])
    labels = np.array([s.label for s in samples], dtype=np.int64)
    digests = np.array([s.sha256 for s in samples])
    meta = {"format": FORMAT, "dataset": dataset, "source": source_id(spec), "count": len(samples),
            "samples_sha256": samples_digest(ids, labels, digests),
            "folder_manifest": manifest.digest if manifest is not None else None}
    buf = io.BytesIO()
    np.savez_compressed(buf, images=np.stack([s.image for s in samples]).astype(np.uint8),
                        labels=labels, ids=ids, digests=digests, meta=np.array(json.dumps(meta)))
    write_atomic(path, buf.getvalue())
    return path


def load_frozen(path: Path, *, dataset: str, spec: dict[str, Any], count: int | None,
                base_dir: Path | None = None) -> list[Sample] | None:
    """The first ``count`` frozen samples (all if ``None``), verified; None if the file holds fewer.

    ``base_dir`` resolves a folder dataset's relative ``path`` (as in ``load_dataset``).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(str(_array(zf, "meta")))
            if not isinstance(meta, dict):
                raise ValueError(f"meta: expected a JSON object, found {meta!r}")
            _check_meta(path, meta, dataset, spec)
            ids, labels, digests = _array(zf, "ids"), _array(zf, "labels"), _array(zf, "digests")
            n_all = _check_index(path, meta, ids, labels, digests)
            if count is not None and n_all < count:
                return None
            n = n_all if count is None else count
            manifest = _manifest(dataset, spec, base_dir)
            if manifest is not None and manifest.digest != meta.get("folder_manifest"):
                raise BenchError(
                    f"frozen sample {path}: the image folder {manifest.folder} of dataset {dataset!r} "
                    f"changed since the sample was frozen: expected manifest "
                    f"sha256:{meta.get('folder_manifest')}, found sha256:{manifest.digest}; {_REFREEZE}")
            images = _first_images(path, zf, n, n_all)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise BenchError(f"frozen sample {path} does not load ({exc}); {_REFREEZE}") from None
    samples = []
    for i in range(n):
        sample = Sample(str(ids[i]), images[i], int(labels[i]))
        if sample.sha256 != str(digests[i]):
            raise BenchError(f"frozen sample {path}: image {ids[i]} has sha256 {sample.sha256}, "
                             f"expected {digests[i]}; the file is corrupt: {_REFREEZE}")
        samples.append(sample)
    return samples


def _array(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    with zf.open(f"{name}.npy") as fh:
        return np.lib.format.read_array(fh, allow_pickle=False)


def _check_meta(path: Path, meta: dict[str, Any], dataset: str, spec: dict[str, Any]) -> None:
    if meta.get("format") != FORMAT:
        old = str(meta.get("format", "")).startswith(FORMAT.rsplit("/", 1)[0] + "/")
        why = " (an older layout without a digest of its labels)" if old else ""
        raise BenchError(f"frozen sample {path}: expected format {FORMAT!r}, found "
                         f"{meta.get('format')!r}{why}; {_REFREEZE}")
    if meta.get("dataset") != dataset:
        raise BenchError(f"frozen sample {path}: expected a sample of dataset {dataset!r}, found "
                         f"one of {meta.get('dataset')!r}; {_REFREEZE}")
    if meta.get("source") != source_id(spec):
        raise BenchError(f"frozen sample {path} was made from a different source of dataset {dataset!r} "
                         f"than the config names; {_REFREEZE}")


def _check_index(path: Path, meta: dict[str, Any], ids: np.ndarray, labels: np.ndarray,
                 digests: np.ndarray) -> int:
    """Validate ids/labels/digests against ``meta``; return how many samples the file holds."""
    n = meta.get("count")
    shapes_ok = ids.ndim == labels.ndim == digests.ndim == 1
    if not shapes_ok or not len(ids) == len(labels) == len(digests) == n:
        raise BenchError(f"frozen sample {path}: expected {n} ids, labels and digests, found "
                         f"{ids.shape}, {labels.shape}, {digests.shape}; {_REFREEZE}")
    if labels.dtype.kind not in "iu":
        raise BenchError(f"frozen sample {path}: expected integer labels, found dtype {labels.dtype}; "
                         f"{_REFREEZE}")
    found = samples_digest(ids, labels, digests)
    if found != meta.get("samples_sha256"):
        raise BenchError(f"frozen sample {path}: its ids, labels and image digests do not match the "
                         f"digest recorded when it was frozen: expected sha256:{meta.get('samples_sha256')}, "
                         f"found sha256:{found}; the file was changed after freezing: {_REFREEZE}")
    return int(n)


def _first_images(path: Path, zf: zipfile.ZipFile, n: int, n_all: int) -> np.ndarray:
    """Decompress only the first ``n`` images of the ``images`` member."""
    with zf.open("images.npy") as fh:
        shape, dtype = _npy_header(fh)
        if len(shape) != 4 or shape[0] != n_all or shape[3] != 3 or dtype != np.uint8:
            raise BenchError(f"frozen sample {path}: expected uint8 images of shape ({n_all}, H, W, 3), "
                             f"found {dtype} {shape}; {_REFREEZE}")
        size = n * shape[1] * shape[2] * 3
        data = fh.read(size)
    if len(data) != size:
        raise BenchError(f"frozen sample {path}: expected {size} bytes for {n} images, found "
                         f"{len(data)}; {_REFREEZE}")
    return np.frombuffer(data, dtype=np.uint8).reshape(n, *shape[1:]).copy()


def _npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f"images: expected .npy format 1.0 or 2.0, found {version}")
    shape, fortran_order, dtype = readers[version](fh)
    if fortran_order:
        raise ValueError("images: expected C order, found Fortran order")
    return tuple(shape), dtype
