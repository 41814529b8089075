"""Frozen samples: a task's images, labels and digests in one compressed .npz
under ``fixtures/samples/``, so replay in CI needs no dataset download.

``python -m benchmark freeze lsbg morphology`` writes them from the real
datasets. Layout (format ``astrobench-frozen-sample/3``): arrays ``images``
(uint8 N x H x W x 3, in sample order), ``labels``, ``ids``, ``digests``
(per-image sha256) and ``meta`` (JSON). ``meta`` records the dataset, its source
(format and file checksums, or folder path and classes), ``samples_sha256`` over
every (id, label, image sha256), the ``selection`` the sample was drawn by
(:mod:`benchmark.sampling`: rule, size, seed), and for folder datasets the
folder's manifest (:func:`benchmark.datasets.folder_manifest`: class list and
every image's path, class and file sha256). Format ``/2`` (no ``selection``) is
read as the first ``count`` images.

Loading checks, in order: format, dataset, source, the samples digest over all
ids/labels/image digests, the folder manifest (when the folder exists; a frozen
sample of a folder that is gone is the only copy and is used on its own
digests), then the sha256 of each image as it is read. A replay reads no image
at all (the digests are all it needs); images are decompressed in order, one at
a time, when a request needs them (the images member is streamed, never loaded
whole).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from benchmark.core import BenchError, LazySample, Sample, atomic_writer, image_digest
from benchmark.sampling import Selection

if TYPE_CHECKING:
    from benchmark.datasets import FolderManifest, SampleSource

FORMAT = "astrobench-frozen-sample/3"
_OLDER_FORMAT = "astrobench-frozen-sample/2"  # the same without ``selection``: the first ``count`` images
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


def write_frozen(path: Path, samples: Sequence[Sample | LazySample], *, dataset: str, spec: dict[str, Any],
                 base_dir: Path | None = None, selection: Selection | None = None) -> Path:
    """Write ``samples`` atomically as a compressed .npz, one image at a time (a whole
    dataset of :class:`LazySample` freezes in flat memory).

    ``selection`` is the rule the samples were drawn by (default: the first
    ``len(samples)`` images). ``base_dir`` resolves a folder dataset's relative ``path``
    (as in ``load_dataset``); a folder dataset's folder must exist and the samples must
    agree with its labels.
    """
    if not samples:
        raise BenchError(f"nothing to freeze for dataset {dataset!r}: the sample is empty")
    manifest = _manifest(dataset, spec, base_dir, required=True)
    if manifest is not None:
        for s in samples:
            want = manifest.labels.get(s.id)
            if want != s.label:
                found = "no such image" if want is None else f"label {want}"
                raise BenchError(f"dataset {dataset!r}: expected sample {s.id} with label {s.label} "
                                 f"to match the folder {manifest.folder}, found {found} there; "
                                 f"load the sample again before freezing")
    selection = selection or Selection("first", len(samples))
    ids = np.array([s.id for s in samples])
    labels = np.array([s.label for s in samples], dtype=np.int64)
    digests: list[str] = []
    with atomic_writer(path) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("images.npy", "w", force_zip64=True) as out:
            shape: tuple[int, ...] | None = None
            for s in samples:
                image = np.ascontiguousarray(s.image, dtype=np.uint8)
                if shape is None:
                    shape = image.shape
                    np.lib.format.write_array_header_1_0(out, {"descr": "|u1", "fortran_order": False,
                                                               "shape": (len(samples), *shape)})
                elif image.shape != shape:
                    raise BenchError(f"expected images of one shape to freeze, found {shape} and "
                                     f"{image.shape} (sample {s.id})")
                out.write(image.tobytes())
                digests.append(image_digest(image))
        meta = {"format": FORMAT, "dataset": dataset, "source": source_id(spec), "count": len(samples),
                "samples_sha256": samples_digest(ids, labels, digests), "selection": selection.to_json(),
                "folder_manifest": manifest.digest if manifest is not None else None}
        for name, arr in (("labels", labels), ("ids", ids), ("digests", np.array(digests)),
                          ("meta", np.array(json.dumps(meta)))):
            with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
                np.lib.format.write_array(out, arr, allow_pickle=False)
    return path


def load_frozen(path: Path, *, dataset: str, spec: dict[str, Any], count: int | None,
                base_dir: Path | None = None) -> list[Sample] | None:
    """The first ``count`` frozen samples (all if ``None``) in memory, verified; None if the
    file holds fewer. ``base_dir`` resolves a folder dataset's relative ``path`` (as in
    ``load_dataset``). Runs read through :func:`frozen_source` instead."""
    source = frozen_source(path, dataset=dataset, spec=spec, count=count, base_dir=base_dir)
    if source is None:
        return None
    n = len(source) if count is None else count
    return [Sample(source.ids[i], source.image(i), int(source.labels[i])) for i in range(n)]


def frozen_source(path: Path, *, dataset: str, spec: dict[str, Any], count: int | None = None,
                  base_dir: Path | None = None) -> SampleSource | None:
    """The frozen sample as a :class:`~benchmark.datasets.SampleSource`: ids, labels and image
    digests verified now (a replay needs nothing more), each image decompressed when asked
    and checked against its digest. None if the file holds fewer than ``count`` samples.
    Its ``selection`` is the rule the sample was drawn by."""
    from benchmark.datasets import SampleSource

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
            manifest = _manifest(dataset, spec, base_dir)
            if manifest is not None and manifest.digest != meta.get("folder_manifest"):
                raise BenchError(
                    f"frozen sample {path}: the image folder {manifest.folder} of dataset {dataset!r} "
                    f"changed since the sample was frozen: expected manifest "
                    f"sha256:{meta.get('folder_manifest')}, found sha256:{manifest.digest}; {_REFREEZE}")
            with zf.open("images.npy") as fh:
                _images_header(path, fh, n_all)
            selection = _selection(meta)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise BenchError(f"frozen sample {path} does not load ({exc}); {_REFREEZE}") from None
    ids_list = [str(i) for i in ids]
    return SampleSource(dataset, ids_list, labels.astype(np.int64), _ZipImages(path, n_all, ids_list, digests),
                        digests=[str(d) for d in digests], selection=selection)


def _selection(meta: dict[str, Any]) -> Selection:
    """The sampling rule in ``meta``; a sample of the older format holds the first ``count``."""
    if meta["format"] == _OLDER_FORMAT:
        return Selection("first", int(meta["count"]))
    return Selection.from_json(meta.get("selection"))


class _ZipImages:
    """Reads images of a frozen sample's ``images`` member in order, decompressing as it goes
    (deflate has no random access). The last ``WINDOW`` images read are kept, so requests
    answered out of order by concurrent workers do not restart the stream; an earlier
    image than that restarts it."""

    WINDOW = 64

    def __init__(self, path: Path, n_all: int, ids: list[str], digests: np.ndarray) -> None:
        self.path, self.n_all, self.ids, self.digests = path, n_all, ids, digests
        self._lock = threading.Lock()
        self._zf: zipfile.ZipFile | None = None
        self._fh: IO[bytes] | None = None
        self._pos = 0
        self._shape: tuple[int, ...] = ()
        self._recent: OrderedDict[int, bytes] = OrderedDict()

    def _restart(self) -> None:
        if self._zf is not None:
            self._zf.close()
        self._zf = zipfile.ZipFile(self.path)
        self._fh = self._zf.open("images.npy")
        self._shape = _images_header(self.path, self._fh, self.n_all)
        self._pos = 0

    def _raw(self, index: int) -> bytes:
        with self._lock:
            data = self._recent.get(index)
            if data is not None:
                return data
            if self._fh is None or index < self._pos:
                self._restart()
            assert self._fh is not None
            size = int(np.prod(self._shape[1:]))
            while self._pos <= index:
                data = self._fh.read(size)
                if len(data) != size:
                    raise BenchError(f"frozen sample {self.path}: expected {size} bytes for image "
                                     f"{self._pos}, found {len(data)}; {_REFREEZE}")
                self._recent[self._pos] = data
                if len(self._recent) > self.WINDOW:
                    self._recent.popitem(last=False)
                self._pos += 1
            return data

    def __call__(self, index: int) -> np.ndarray:
        try:
            data = self._raw(index)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise BenchError(f"frozen sample {self.path} does not load ({exc}); {_REFREEZE}") from None
        image = np.frombuffer(data, dtype=np.uint8).reshape(self._shape[1:]).copy()
        digest = image_digest(image)
        if digest != str(self.digests[index]):
            raise BenchError(f"frozen sample {self.path}: image {self.ids[index]} has sha256 {digest}, "
                             f"expected {self.digests[index]}; the file is corrupt: {_REFREEZE}")
        return image


def _array(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    with zf.open(f"{name}.npy") as fh:
        return np.lib.format.read_array(fh, allow_pickle=False)


def _check_meta(path: Path, meta: dict[str, Any], dataset: str, spec: dict[str, Any]) -> None:
    if meta.get("format") not in (FORMAT, _OLDER_FORMAT):
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


def _images_header(path: Path, fh: IO[bytes], n_all: int) -> tuple[int, ...]:
    """Check the ``images`` member's header (uint8, ``n_all`` x H x W x 3); return its shape."""
    shape, dtype = _npy_header(fh)
    if len(shape) != 4 or shape[0] != n_all or shape[3] != 3 or dtype != np.uint8:
        raise BenchError(f"frozen sample {path}: expected uint8 images of shape ({n_all}, H, W, 3), "
                         f"found {dtype} {shape}; {_REFREEZE}")
    return shape


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
