"""Dataset loading: download, verify, cache and read the benchmark's image sets.

A dataset is a ``[datasets.NAME]`` table of the config (``spec``). Remote files
(``[datasets.NAME.files]``: ``url`` + ``checksum = "algo:hex"``) are downloaded
once into ``cache_dir / NAME / FILE``, atomically and checksum-verified; local
folders (format ``folder``) are read in place. Every loader returns
``Sample``s with uint8 HxWx3 images and integer labels, after validating the
data and failing with a :class:`BenchError` that says what was expected and
what was found.

Trust: a cached file is hashed against its configured checksum every time it
is loaded (no size/mtime shortcut). GalaxyMNIST's gunzipped HDF5 has its
sha256 recorded when it is decompressed and checked before every read; if it
no longer matches, a note goes to stderr and it is decompressed again from
the (verified) ``.gz``.

Downloads: only "no network" (connection refused, DNS failure, unreachable
network, connect timeout) raises :class:`DatasetUnavailable`, which the
plugin turns into a skip. Anything that breaks after the server answered (a
body shorter than Content-Length, a reset mid-body), an HTTP error status or a
checksum mismatch is a :class:`BenchError` (a failure); nothing is cached.

Folder images (:func:`pil_to_rgb8`) become uint8 HxWx3 by these rules; no
contrast stretch is ever applied:

- 8-bit modes ``1 L LA P PA RGB RGBA RGBX CMYK YCbCr``: Pillow's conversion;
  alpha is dropped and the colour values as stored are kept (``P`` with
  transparency and ``PA`` go through RGBA). 16-bit RGB(A) PNGs arrive here
  already reduced by Pillow to their high byte.
- 16-bit grayscale ``I;16 I;16L I;16B I;16N``: scaled by the full 16-bit
  range, ``round(v * 255 / 65535)``.
- ``I`` (32-bit integer): as 16-bit if every value is in 0..65535, else an
  error.
- ``F`` (32-bit float): ``round(v * 255)`` if every value is finite and in
  [0, 1], else an error.
- Grayscale is replicated to 3 channels; any other mode is an error that
  names the file, its mode and the supported modes.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.client
import json
import os
import re
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmark.core import BenchError, DatasetUnavailable, LazySample, Sample, write_atomic

if TYPE_CHECKING:
    from PIL import Image

    from benchmark.sampling import Selection

CACHE_ENV = "ASTROBENCH_CACHE_DIR"
DIGEST_ALGOS = ("git-sha1", "md5", "sha256")
_HEX_LEN = {"git-sha1": 40, "md5": 32, "sha256": 64}
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
_FITS_SUFFIXES = (".fits", ".fit", ".fts")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", *_FITS_SUFFIXES)
_IMAGE_SHAPE = (64, 64, 3)
# Descriptive keys any dataset table may carry besides its format's own.
_META_KEYS = {"format", "description", "license", "citation", "n_classes"}


# ----------------------------------------------------------------- public API


def default_cache_dir() -> Path:
    """``$ASTROBENCH_CACHE_DIR``, else ``~/.cache/astrobench``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "astrobench"


def file_digest(path: Path, algo: str) -> str:
    """Hex digest of a file; ``git-sha1`` is sha1 of ``b"blob <size>\\0" + content``."""
    path = Path(path)
    hasher = _new_hasher(algo, path.stat().st_size)
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def fetch_dataset(name: str, spec: dict, *, cache_dir: Path | None = None) -> list[Path]:
    """Download and verify every file of the dataset; return the cached paths.

    Folder datasets have nothing to download and return ``[]``.
    """
    fmt, files = _check_spec(name, spec)
    if fmt == "folder":
        return []
    root = _dataset_cache(name, cache_dir)
    paths = [_ensure_file(name, fname, entry, root) for fname, entry in files.items()]
    if fmt == "galaxy-mnist-hdf5-gz":
        _decompressed(name, spec["file"], files[spec["file"]], root)
    return paths


def load_dataset(
    name: str,
    spec: dict,
    *,
    limit: int | None = None,
    cache_dir: Path | None = None,
    base_dir: Path | None = None,
) -> list[Sample]:
    """Load the first ``limit`` samples (all if ``None``) into memory, downloading as needed.

    ``base_dir`` is the folder that relative ``path``s of folder datasets
    resolve against (the config file's folder; default: the current one).
    Runs read through :func:`open_dataset` instead, one image at a time.
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise BenchError(f"dataset {name}: expected limit to be a non-negative integer or None, "
                         f"found {limit!r}")
    source = open_dataset(name, spec, cache_dir=cache_dir, base_dir=base_dir)
    n = len(source) if limit is None else min(limit, len(source))
    return [Sample(source.ids[i], source.image(i), int(source.labels[i])) for i in range(n)]


class SampleSource:
    """A dataset as an index: every id and label in memory (small), each image read from
    disk when asked (:meth:`image`) and never kept.

    ``ids[i]``/``labels[i]`` describe image ``i`` in the dataset's order; :meth:`index_of`
    finds an id. :meth:`sample` gives a :class:`LazySample` (what runs use), :meth:`digest`
    the image's sha256, known without reading the image where the source stores it (a
    frozen sample). ``reads`` counts the images read so far. ``selection`` is the sampling
    rule a frozen sample was drawn with (None for a dataset).
    """

    def __init__(self, name: str, ids: list[str], labels: np.ndarray, read: Callable[[int], np.ndarray], *,
                 digests: Sequence[str] | None = None, selection: Selection | None = None) -> None:
        self.name, self.ids, self.labels = name, ids, labels
        self._read = read
        self._digests = digests
        self._index: dict[str, int] | None = None
        self.selection = selection
        self.reads = 0

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, sample_id: str) -> int:
        if self._index is None:
            self._index = {sid: i for i, sid in enumerate(self.ids)}
        try:
            return self._index[sample_id]
        except KeyError:
            raise BenchError(f"dataset {self.name}: expected a sample id of the dataset, found "
                             f"{sample_id!r}") from None

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as uint8 HxWx3, read now."""
        self.reads += 1
        return self._read(index)

    def digest(self, index: int) -> str | None:
        """The image's sha256 if the source knows it without reading the image."""
        return None if self._digests is None else str(self._digests[index])

    def sample(self, index: int) -> LazySample:
        return LazySample(self.ids[index], int(self.labels[index]), partial(self.image, index),
                          self.digest(index))

    def samples(self, indices: Sequence[int]) -> list[LazySample]:
        return [self.sample(i) for i in indices]


def open_dataset(name: str, spec: dict, *, cache_dir: Path | None = None,
                 base_dir: Path | None = None) -> SampleSource:
    """The dataset as a :class:`SampleSource`: labels (and file listings) are read now,
    images when asked. Remote files are downloaded and verified as they are first needed
    (the image files of ``lsbg-npy`` one by one, as the images asked for reach them)."""
    fmt, files = _check_spec(name, spec)
    if fmt == "folder":
        return _folder_source(name, spec, base_dir=base_dir)
    root = _dataset_cache(name, cache_dir)
    if fmt == "lsbg-npy":
        return _lsbg_source(name, spec, files, root)
    return _galaxy_mnist_source(name, spec, files, root)


# ---------------------------------------------------------------- spec checks


@dataclass(frozen=True)
class _FileEntry:
    url: str
    algo: str
    digest: str

    @property
    def checksum(self) -> str:
        return f"{self.algo}:{self.digest}"


_FORMAT_KEYS: dict[str, tuple[set[str], set[str]]] = {
    # format: (required keys, optional keys)
    "lsbg-npy": ({"images", "labels", "files"}, set()),
    "galaxy-mnist-hdf5-gz": ({"file", "files"}, set()),
    "folder": ({"path"}, {"classes", "display"}),
}
_DEFAULT_N_CLASSES = {"lsbg-npy": 2, "galaxy-mnist-hdf5-gz": 4}


def _check_spec(name: str, spec: Any) -> tuple[str, dict[str, _FileEntry]]:
    """Validate a dataset table; return its format and parsed ``files`` entries."""
    where = f"datasets.{name}"
    if not isinstance(spec, dict):
        raise BenchError(f"{where}: expected a table, found {spec!r}")
    fmt = spec.get("format")
    if fmt not in _FORMAT_KEYS:
        raise BenchError(f"{where}: expected format to be one of {sorted(_FORMAT_KEYS)}, "
                         f"found {fmt!r}")
    required, optional = _FORMAT_KEYS[fmt]
    missing = sorted(required - set(spec))
    if missing:
        raise BenchError(f"{where}: format {fmt!r} needs keys {sorted(required)}; "
                         f"missing {missing}")
    unknown = sorted(k for k in set(spec) - required - optional - _META_KEYS
                     if not k.startswith("_"))
    if unknown:
        raise BenchError(f"{where}: unknown keys {unknown}; format {fmt!r} accepts "
                         f"{sorted(required | optional | _META_KEYS)}")
    n_classes = spec.get("n_classes")
    if n_classes is not None and (not isinstance(n_classes, int) or isinstance(n_classes, bool)
                                  or n_classes < 2):
        raise BenchError(f"{where}: expected n_classes to be an integer >= 2, found {n_classes!r}")

    if fmt == "folder":
        if not isinstance(spec["path"], str) or not spec["path"]:
            raise BenchError(f"{where}.path: expected a folder path string, found {spec['path']!r}")
        classes = spec.get("classes")
        if classes is not None:
            if (not isinstance(classes, list) or not classes
                    or not all(isinstance(c, str) and c for c in classes)):
                raise BenchError(f"{where}.classes: expected a non-empty list of folder names, "
                                 f"found {classes!r}")
            if len(set(classes)) != len(classes):
                raise BenchError(f"{where}.classes: expected unique folder names, found {classes!r}")
            if n_classes is not None and n_classes != len(classes):
                raise BenchError(f"{where}: n_classes = {n_classes} but classes lists "
                                 f"{len(classes)} folders")
        return fmt, {}

    files = _check_files(where, spec["files"])
    if fmt == "lsbg-npy":
        images = spec["images"]
        if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
            raise BenchError(f"{where}.images: expected a non-empty list of file names, "
                             f"found {images!r}")
        if len(set(images)) != len(images):
            raise BenchError(f"{where}.images: expected unique file names, found {images!r}")
        named = [("images", i) for i in images] + [("labels", spec["labels"])]
    else:
        named = [("file", spec["file"])]
    for key, fname in named:
        if not isinstance(fname, str):
            raise BenchError(f"{where}.{key}: expected a file name string, found {fname!r}")
        if fname not in files:
            raise BenchError(f"{where}.{key}: file {fname!r} has no entry in "
                             f"[{where}.files]; entries: {sorted(files)}")
    return fmt, files


def _check_files(where: str, files: Any) -> dict[str, _FileEntry]:
    if not isinstance(files, dict) or not files:
        raise BenchError(f"{where}.files: expected a table of FILE = {{ url = ..., checksum = ... }}, "
                         f"found {files!r}")
    out: dict[str, _FileEntry] = {}
    for fname, entry in files.items():
        at = f"{where}.files.{fname!r}"
        if fname in ("", ".", "..") or "/" in fname or "\\" in fname:
            raise BenchError(f"{at}: expected a plain file name (no folders), found {fname!r}")
        if not isinstance(entry, dict) or set(entry) != {"url", "checksum"}:
            raise BenchError(f"{at}: expected {{ url = ..., checksum = \"algo:hex\" }}, "
                             f"found {entry!r}")
        url, checksum = entry["url"], entry["checksum"]
        if not isinstance(url, str) or not re.match(r"^(https?|file)://", url):
            raise BenchError(f"{at}: expected an http(s):// or file:// URL, found {url!r}")
        out[fname] = _parse_checksum(at, checksum, url)
    return out


def _parse_checksum(at: str, checksum: Any, url: str) -> _FileEntry:
    algo, _, digest = checksum.partition(":") if isinstance(checksum, str) else ("", "", "")
    digest = digest.lower()
    if algo not in _HEX_LEN or not re.fullmatch(f"[0-9a-f]{{{_HEX_LEN.get(algo, 0)}}}", digest):
        raise BenchError(f"{at}: expected checksum \"algo:hex\" with algo one of {list(DIGEST_ALGOS)} "
                         f"and a {'/'.join(str(n) for n in _HEX_LEN.values())}-digit hex digest, "
                         f"found {checksum!r}")
    return _FileEntry(url=url, algo=algo, digest=digest)


# ------------------------------------------------------------ download/cache


def _new_hasher(algo: str, size: int) -> Any:
    if algo == "git-sha1":
        h = hashlib.sha1()
        h.update(b"blob %d\0" % size)
        return h
    if algo in ("md5", "sha256"):
        return hashlib.new(algo)
    raise BenchError(f"expected a digest algorithm in {list(DIGEST_ALGOS)}, found {algo!r}")


def _dataset_cache(name: str, cache_dir: Path | None) -> Path:
    return Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / name


def _ensure_file(name: str, fname: str, entry: _FileEntry, root: Path) -> Path:
    """The cached copy of one file, downloading it if absent; verified on every call.

    A cached file is hashed each time (not trusted on size and mtime): what is
    about to be read is what the checksum describes.
    """
    path = root / fname
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        _download(name, fname, entry, path)  # verified while streaming
        return path
    found = file_digest(path, entry.algo)
    if found != entry.digest:
        raise BenchError(
            f"dataset {name}: cached file {path} does not match its checksum: expected "
            f"{entry.checksum}, found {entry.algo}:{found}; delete it so it is downloaded "
            f"again from {entry.url}")
    return path


_OFFLINE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN,
                   errno.EHOSTDOWN}


def _is_offline(reason: object) -> bool:
    """True for the errors of "no network" while connecting: refused, DNS, unreachable, timeout."""
    return isinstance(reason, (socket.gaierror, TimeoutError)) or (
        isinstance(reason, OSError) and reason.errno in _OFFLINE_ERRNOS)


def _unavailable(name: str, fname: str, entry: _FileEntry, path: Path, why: str) -> DatasetUnavailable:
    return DatasetUnavailable(
        f"dataset {name}: {fname} is not cached at {path} and could not be downloaded from "
        f"{entry.url} ({why}). Run `python -m benchmark fetch {name}` on a machine with network "
        f"access, or place the file at {path} (checksum {entry.checksum})")


def _broken(name: str, fname: str, entry: _FileEntry, received: int, total: int | None,
            why: str) -> BenchError:
    if total is None:
        counts = f"interrupted after {received} bytes (no Content-Length)"
    else:
        counts = (f"interrupted after {received} of {total} bytes: expected {total} bytes "
                  f"(Content-Length), found {received}")
    return BenchError(f"dataset {name}: downloading {fname} from {entry.url} was {counts} "
                      f"({why}); nothing was cached, run again to retry")


def _download(name: str, fname: str, entry: _FileEntry, dest: Path) -> None:
    """Stream ``entry.url`` into ``dest`` atomically: temp file, hash, verify, fsync, rename.

    Raises :class:`DatasetUnavailable` only when the host cannot be reached at all;
    a transfer that breaks or arrives wrong is a :class:`BenchError`.
    """
    from tqdm import tqdm

    request = urllib.request.Request(entry.url, headers={"User-Agent": "astrobench"})
    fd, tmp_name = tempfile.mkstemp(prefix=f".{fname}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
            except urllib.error.HTTPError as exc:
                exc.close()
                raise BenchError(f"dataset {name}: downloading {fname} from {entry.url} failed: "
                                 f"expected HTTP 200, found HTTP {exc.code} {exc.reason}") from None
            except urllib.error.URLError as exc:  # raised while connecting and sending
                if _is_offline(exc.reason):
                    raise _unavailable(name, fname, entry, dest, str(exc.reason)) from None
                raise BenchError(f"dataset {name}: cannot download {fname} from {entry.url}: "
                                 f"{exc.reason}") from None
            except (OSError, http.client.HTTPException) as exc:  # the server broke off its answer
                raise BenchError(f"dataset {name}: downloading {fname} from {entry.url} failed: "
                                 f"expected an HTTP response, found {exc!r}") from None
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                # git-sha1 needs the size up front; without Content-Length, hash the file after
                sized = total is not None or entry.algo != "git-sha1"
                hasher = _new_hasher(entry.algo, total or 0) if sized else None
                received = 0
                bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                           desc=f"{name}/{fname}", file=sys.stderr, leave=False,
                           disable=not sys.stderr.isatty())
                try:
                    while True:
                        chunk = response.read(_CHUNK)
                        if not chunk:
                            break
                        out.write(chunk)
                        if hasher is not None:
                            hasher.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                except http.client.IncompleteRead as exc:
                    received += len(exc.partial)
                    raise _broken(name, fname, entry, received, total,
                                  "the connection closed early") from None
                except (OSError, http.client.HTTPException) as exc:
                    raise _broken(name, fname, entry, received, total, repr(exc)) from None
                finally:
                    bar.close()
            if total is not None and received != total:
                raise _broken(name, fname, entry, received, total, "the connection closed early")
            out.flush()
            os.fsync(out.fileno())
        found = hasher.hexdigest() if hasher is not None else file_digest(tmp, entry.algo)
        if found != entry.digest:
            raise BenchError(
                f"dataset {name}: downloaded {fname} from {entry.url} does not match its checksum: "
                f"expected {entry.checksum}, found {entry.algo}:{found} ({received} bytes); "
                f"the file was not cached")
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _decompressed(name: str, fname: str, entry: _FileEntry, root: Path) -> Path:
    """The gunzipped copy of the verified ``fname``, checked before every read.

    ``<out>.source`` records the .gz checksum and the sha256 of the output when it
    is decompressed. An output that no longer matches is decompressed again from
    the .gz (with a note on stderr); a missing or stale record redoes it silently.
    """
    gz = _ensure_file(name, fname, entry, root)
    out = root / (fname[:-3] if fname.endswith(".gz") else fname + ".raw")
    record = out.with_name(out.name + ".source")
    try:
        source, _, recorded = record.read_text().strip().partition(" ")
    except OSError:
        source = recorded = ""
    if out.exists() and source == entry.checksum and recorded.startswith("sha256:"):
        found = file_digest(out, "sha256")
        if f"sha256:{found}" == recorded:
            return out
        print(f"dataset {name}: {out} does not match the digest recorded when it was "
              f"decompressed: expected {recorded}, found sha256:{found}; decompressing it again "
              f"from the verified {gz}", file=sys.stderr)
    record.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=root)
    tmp = Path(tmp_name)
    hasher = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as dst, gzip.open(gz, "rb") as src:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
                hasher.update(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, out)
    except (OSError, EOFError) as exc:
        raise BenchError(f"dataset {name}: {gz}: expected a gzip-compressed file, "
                         f"found one that cannot be decompressed ({exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    write_atomic(record, f"{entry.checksum} sha256:{hasher.hexdigest()}\n")
    return out


# ------------------------------------------------------------------ validation


def _n_classes(spec: dict, fmt: str) -> int:
    return int(spec.get("n_classes") or _DEFAULT_N_CLASSES[fmt])


def _check_image_array(what: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if len(shape) != 4 or tuple(shape[1:]) != _IMAGE_SHAPE:
        raise BenchError(f"{what}: expected images of shape (N, 64, 64, 3), found {tuple(shape)}")
    if dtype != np.uint8 and dtype.kind != "f":
        raise BenchError(f"{what}: expected images of dtype uint8, or float in [0, 1], "
                         f"found {dtype}")


def _to_uint8(what: str, images: np.ndarray) -> np.ndarray:
    """Copy a (prefix of an) image array into memory as uint8, as matplotlib's imsave would."""
    if images.dtype == np.uint8:
        return np.array(images)
    arr = np.asarray(images)
    if arr.size:
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (lo >= 0.0 and hi <= 1.0):  # also false for NaN
            raise BenchError(f"{what}: expected float images with values in [0, 1], "
                             f"found values in [{lo}, {hi}]")
    return (arr * 255).astype(np.uint8)


def _check_labels(what: str, labels: np.ndarray, n_classes: int) -> np.ndarray:
    if labels.ndim != 1:
        raise BenchError(f"{what}: expected labels of shape (N,), found {labels.shape}")
    if labels.dtype.kind not in "iuf":
        raise BenchError(f"{what}: expected integer or float labels, found dtype {labels.dtype}")
    arr = np.asarray(labels)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.argmax(bad))
            raise BenchError(f"{what}: expected integral label values, "
                             f"found {arr[i].item()!r} at index {i}")
    out = arr.astype(np.int64)
    bad = (out < 0) | (out >= n_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise BenchError(f"{what}: expected labels in range({n_classes}), "
                         f"found {arr[i].item()!r} at index {i}")
    return out


def _count_mismatch(what: str, n_images: int, n_labels: int, *, partial: bool = False) -> BenchError:
    seen = "at least " if partial else ""
    return BenchError(f"{what}: expected as many images as labels ({n_labels}), "
                      f"found {seen}{n_images} images")


# --------------------------------------------------------------------- formats


def _load_npy(what: Path, *, mmap: bool) -> np.ndarray:
    try:
        return np.load(what, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BenchError(f"{what.name}: expected a NumPy .npy array file, found one that cannot "
                         f"be read ({exc})") from None


class _NpyImages:
    """LSBG's image files as one index: a file is downloaded, verified and its header checked
    the first time an image in it (or after it) is asked for; each image is read from the
    file on its own (``np.fromfile`` at its offset, so nothing stays mapped in memory)."""

    def __init__(self, name: str, spec: dict, files: dict[str, _FileEntry], root: Path, n_labels: int) -> None:
        self.name, self.files, self.root, self.n_labels = name, files, root, n_labels
        self.image_names: list[str] = spec["images"]
        self.labels_name: str = spec["labels"]
        self.starts: list[int] = []  # first index of each opened file
        self.parts: list[tuple[str, Path, np.dtype, int, bool]] = []  # fname, path, dtype, offset, C order
        self.count = 0

    def _open_next(self) -> None:
        i = len(self.parts)
        fname = self.image_names[i]
        path = _ensure_file(self.name, fname, self.files[fname], self.root)
        arr = _load_npy(path, mmap=True)
        _check_image_array(fname, arr.shape, arr.dtype)
        total_here = self.count + arr.shape[0]
        all_loaded = i == len(self.image_names) - 1
        if total_here > self.n_labels or (all_loaded and total_here != self.n_labels):
            raise _count_mismatch(f"dataset {self.name} ({', '.join(self.image_names[:i + 1])} "
                                  f"vs {self.labels_name})", total_here, self.n_labels,
                                  partial=not all_loaded)
        offset = int(getattr(arr, "offset", 0))
        self.starts.append(self.count)
        self.parts.append((fname, path, arr.dtype, offset, bool(arr.flags.c_contiguous)))
        self.count = total_here
        del arr

    def __call__(self, index: int) -> np.ndarray:
        while index >= self.count and len(self.parts) < len(self.image_names):
            self._open_next()
        if not 0 <= index < self.count:
            raise IndexError(f"dataset {self.name}: image index {index} out of range")
        k = bisect_right(self.starts, index) - 1
        fname, path, dtype, offset, c_order = self.parts[k]
        local = index - self.starts[k]
        size = int(np.prod(_IMAGE_SHAPE))
        if c_order:
            arr = np.fromfile(path, dtype=dtype, count=size, offset=offset + local * size * dtype.itemsize)
            image = arr.reshape(_IMAGE_SHAPE)
        else:  # a Fortran-order file: read through a short-lived mapping
            image = np.array(_load_npy(path, mmap=True)[local])
        return _to_uint8(fname, image)


def _lsbg_source(name: str, spec: dict, files: dict[str, _FileEntry], root: Path) -> SampleSource:
    n_classes = _n_classes(spec, "lsbg-npy")
    labels_name: str = spec["labels"]
    labels = _check_labels(labels_name,
                           _load_npy(_ensure_file(name, labels_name, files[labels_name], root),
                                     mmap=False), n_classes)
    return SampleSource(name, [str(i) for i in range(len(labels))], labels,
                        _NpyImages(name, spec, files, root, len(labels)))


def _galaxy_mnist_source(name: str, spec: dict, files: dict[str, _FileEntry], root: Path) -> SampleSource:
    import h5py

    fname: str = spec["file"]
    path = _decompressed(name, fname, files[fname], root)
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise BenchError(f"{fname}: expected an HDF5 file inside the gzip, found one h5py cannot "
                         f"open ({exc})") from None
    try:
        missing = [k for k in ("images", "labels") if not isinstance(fh.get(k), h5py.Dataset)]
        if missing:
            raise BenchError(f"{fname}: expected HDF5 datasets 'images' and 'labels', "
                             f"found {sorted(fh.keys())}")
        images_ds, labels_ds = fh["images"], fh["labels"]
        _check_image_array(fname, images_ds.shape, images_ds.dtype)
        labels = _check_labels(fname, labels_ds[()], _n_classes(spec, "galaxy-mnist-hdf5-gz"))
        if images_ds.shape[0] != len(labels):
            raise _count_mismatch(fname, images_ds.shape[0], len(labels))
    except BaseException:
        fh.close()
        raise

    def read(index: int) -> np.ndarray:  # one image per read (an HDF5 slice); the file stays open
        return _to_uint8(fname, images_ds[index])

    return SampleSource(name, [str(i) for i in range(len(labels))], labels, read)


def folder_listing(name: str, spec: dict, base_dir: Path | None
                    ) -> tuple[Path, list[str], list[list[Path]]]:
    """The folder, its classes (index = label) and each class's images, sorted by name."""
    where = f"datasets.{name}"
    folder = folder_path(spec, base_dir)
    if not folder.is_dir():
        raise BenchError(f"{where}: expected an image folder with one sub-folder per class at "
                         f"{folder}, found {'a file' if folder.exists() else 'nothing'}")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes: list[str] = spec.get("classes") or found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise BenchError(f"{where}: {folder} has sub-folders {unknown} that are not in "
                         f"classes {classes}")
    missing = [c for c in classes if c not in found]
    if missing:
        raise BenchError(f"{where}: expected a sub-folder for each class {classes} in {folder}, "
                         f"missing {missing}")
    if len(classes) < 2:
        raise BenchError(f"{where}: expected at least 2 class sub-folders in {folder}, "
                         f"found {classes}")
    per_class: list[list[Path]] = []
    for c in classes:
        imgs = sorted((p for p in (folder / c).iterdir()
                       if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in _IMAGE_SUFFIXES), key=lambda p: p.name)
        if not imgs:
            raise BenchError(f"{where}: expected .png/.jpg/.jpeg images in {folder / c}, found none")
        per_class.append(imgs)
    return folder, classes, per_class


def folder_path(spec: dict, base_dir: Path | None) -> Path:
    """A folder dataset's folder: ``path``, relative ones against ``base_dir`` (the config file's folder)."""
    folder = Path(spec["path"]).expanduser()
    if not folder.is_absolute():
        folder = Path(base_dir if base_dir is not None else spec.get("_base_dir", ".")) / folder
    return folder


@dataclass(frozen=True)
class FolderManifest:
    """What a folder dataset holds: ``digest`` is the sha256 of the class list and the
    sorted (relative path, class, sha256 of the file's bytes) of every image."""

    folder: Path
    digest: str
    labels: dict[str, int]  # relative path (the sample id) -> label


def folder_manifest(name: str, spec: dict, *, base_dir: Path | None = None,
                    required: bool = False) -> FolderManifest | None:
    """The manifest of a folder dataset's images; ``None`` if the folder does not
    exist, unless ``required`` (then that is an error)."""
    fmt, _ = _check_spec(name, spec)
    if fmt != "folder":
        raise BenchError(f"datasets.{name}: expected format 'folder' for a folder manifest, "
                         f"found {fmt!r}")
    if not required and not folder_path(spec, base_dir).exists():
        return None
    folder, classes, per_class = folder_listing(name, spec, base_dir)
    entries = sorted((p.relative_to(folder).as_posix(), c, file_digest(p, "sha256"))
                     for c, imgs in zip(classes, per_class) for p in imgs)
    blob = json.dumps({"classes": classes, "images": entries}, separators=(",", ":"))
    labels = {rel: classes.index(c) for rel, c, _ in entries}
    return FolderManifest(folder, hashlib.sha256(blob.encode()).hexdigest(), labels)


_8BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_SUPPORTED_MODES = (*_8BIT_MODES, *_16BIT_MODES, "I", "F")


def pil_to_rgb8(im: Image.Image, *, source: str) -> np.ndarray:
    """A Pillow image as uint8 HxWx3, by the rules in the module docstring.

    ``source`` (the file) starts every error message.
    """
    mode = im.mode
    if mode in _8BIT_MODES:
        if mode == "PA" or (mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    if mode in _16BIT_MODES or mode == "I":
        values = np.asarray(im).astype(np.int64)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise BenchError(f"{source}: mode 'I' (32-bit integer) image: expected values in "
                             f"0..65535 to scale as 16-bit, found values in "
                             f"[{values.min()}, {values.max()}]")
        gray = (values * 2 + 257) // 514  # round(v * 255 / 65535); never halfway
    elif mode == "F":
        values = np.asarray(im).astype(np.float64)
        if not np.isfinite(values).all():
            raise BenchError(f"{source}: mode 'F' (32-bit float) image: expected finite values "
                             f"in [0, 1], found non-finite values")
        if values.size and (values.min() < 0.0 or values.max() > 1.0):
            raise BenchError(f"{source}: mode 'F' (32-bit float) image: expected values in "
                             f"[0, 1], found values in [{values.min()}, {values.max()}]")
        gray = np.floor(values * 255.0 + 0.5)
    else:
        raise BenchError(f"{source}: expected an image in one of the Pillow modes "
                         f"{list(_SUPPORTED_MODES)}, found mode {mode!r}")
    return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)


def fits_to_rgb8(path: Path, display: dict[str, Any], *, source: str) -> np.ndarray:
    """A FITS cutout as the uint8 HxWx3 image the model sees, displayed as astronomers do.

    The first HDU with data is read: one band (H x W), or three (3 x H x W, in r, g, b
    order). One band: ``interval`` (min-max, a ``percentile``, or IRAF's zscale) sets the
    limits, then ``stretch`` (linear, sqrt, log, asinh); grey in all three channels. Three
    bands: Lupton et al. (2004) colour (``make_lupton_rgb``, ``lupton_q``,
    ``lupton_stretch``), or each band displayed as one band (``rgb = "bands"``). Rows are
    flipped so that north is up as in ds9 (FITS row 0 is the bottom). Non-finite pixels
    take the band's median. Needs astropy (``pip install "astro-vlm-bench[fits]"``).
    """
    try:
        from astropy.io import fits
        from astropy import visualization as vis
    except ImportError as exc:
        raise BenchError(f"{source}: FITS images need astropy ({exc}); install it with:\n"
                         'pip install "astro-vlm-bench[fits]"') from None
    try:
        with fits.open(path, memmap=False) as hdul:
            data = next((h.data for h in hdul if getattr(h, "data", None) is not None), None)
            data = None if data is None else np.array(data, dtype=float)
    except (OSError, ValueError, TypeError) as exc:
        raise BenchError(f"{source}: expected a FITS file, found one astropy cannot read ({exc})") from None
    if data is None or not (data.ndim == 2 or (data.ndim == 3 and data.shape[0] == 3)):
        found = "no image data" if data is None else f"data of shape {data.shape}"
        raise BenchError(f"{source}: expected one band (H x W) or three (3 x H x W), found {found}")
    bands = [data] if data.ndim == 2 else list(data)
    for band in bands:
        bad = ~np.isfinite(band)
        if bad.all():
            raise BenchError(f"{source}: expected finite pixel values, found none")
        band[bad] = np.median(band[~bad])
    d = {"stretch": "asinh", "interval": "percentile", "percentile": 99.5, "rgb": "lupton",
         "lupton_q": 8.0, "lupton_stretch": 0.5, **display}
    if len(bands) == 3 and d["rgb"] == "lupton":
        rgb = vis.make_lupton_rgb(*bands, Q=d["lupton_q"], stretch=d["lupton_stretch"])
        return np.ascontiguousarray(np.flipud(rgb), dtype=np.uint8)
    interval = {"minmax": vis.MinMaxInterval(), "zscale": vis.ZScaleInterval(),
                "percentile": vis.PercentileInterval(d["percentile"])}[d["interval"]]
    stretch = {"linear": vis.LinearStretch(), "sqrt": vis.SqrtStretch(), "log": vis.LogStretch(),
               "asinh": vis.AsinhStretch()}[d["stretch"]]
    shown = [np.round(255 * np.clip(stretch(interval(b, clip=True)), 0, 1)).astype(np.uint8) for b in bands]
    rgb = np.stack(shown * 3 if len(shown) == 1 else shown, axis=-1)
    return np.ascontiguousarray(np.flipud(rgb))


def _folder_source(name: str, spec: dict, *, base_dir: Path | None) -> SampleSource:
    """The folder's images in the classes' interleaved order (first of each class, then the
    second of each, ...), as ids (relative paths) and labels; each image decoded when asked."""
    folder, _, per_class = folder_listing(name, spec, base_dir)
    order: list[tuple[int, Path]] = []
    for rank in range(max(len(imgs) for imgs in per_class)):
        order.extend((label, imgs[rank]) for label, imgs in enumerate(per_class) if rank < len(imgs))
    paths = [path for _, path in order]
    display = spec.get("display") or {}

    def read(index: int) -> np.ndarray:
        return read_folder_image(name, paths[index], display)

    return SampleSource(name, [p.relative_to(folder).as_posix() for p in paths],
                        np.array([label for label, _ in order], dtype=np.int64), read)


def read_folder_image(name: str, path: Path, display: dict[str, Any]) -> np.ndarray:
    """One image of a folder dataset as the uint8 HxWx3 the model sees (PNG/JPEG or FITS)."""
    from PIL import Image

    if path.suffix.lower() in _FITS_SUFFIXES:
        return fits_to_rgb8(path, display, source=f"datasets.{name}: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return pil_to_rgb8(im, source=f"datasets.{name}: {path}")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BenchError(f"datasets.{name}: {path}: expected a PNG or JPEG image, found one "
                         f"Pillow cannot read ({exc})") from None
