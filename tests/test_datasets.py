"""benchmark.datasets: download -> verify -> cache -> load, faults and validation.

Everything is served from a loopback FileServer; no real dataset host is contacted.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.datasets import default_cache_dir, fetch_dataset, file_digest, load_dataset
from benchmark.core import BenchError, DatasetUnavailable
from tests.support.file_server import (
    FileServer,
    corrupted,
    galaxy_gz_bytes,
    galaxy_spec,
    git_sha1,
    lsbg_spec,
    make_galaxy_mnist_gz,
    make_lsbg_files,
    npy_bytes,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def cached_names(root: Path) -> list[str]:
    """Every file name under ``root`` (temp files included), sorted."""
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def closed_port_url(name: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


# ------------------------------------------------------------------ digests


def test_file_digest_of_real_lsbg_labels() -> None:
    path = FIXTURES / "lsbg_y_labels.npy"
    assert path.stat().st_size == 40128
    assert file_digest(path, "git-sha1") == "c7767de36d1f41d5857cec9fd7af5bf6cee05039"
    assert file_digest(path, "sha256") == \
        "0b7d9b9f3e45e1a34c601b3b501142fcb9bd82c2b70d0b2632c2170964f983f6"
    assert file_digest(path, "md5") == hashlib.md5(path.read_bytes()).hexdigest()
    labels = np.load(path)
    assert labels.dtype == np.float64 and labels.shape == (5000,)
    assert (labels[:500] == 0).sum() == 236 and (labels[:500] == 1).sum() == 264
    with pytest.raises(BenchError, match="sha1.*found 'crc32'"):
        file_digest(path, "crc32")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ASTROBENCH_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ASTROBENCH_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "astrobench"


# --------------------------------------------------------------- round trips


def test_lsbg_round_trip_and_cache(tmp_path: Path) -> None:
    files, images, labels = make_lsbg_files([3, 2, 4], seed=1)
    with FileServer(files) as server:
        spec = lsbg_spec(server, files)
        samples = load_dataset("lsbg", spec, cache_dir=tmp_path)
        assert [s.id for s in samples] == [str(i) for i in range(9)]
        assert np.array_equal(np.stack([s.image for s in samples]), images)
        assert [s.label for s in samples] == labels.tolist()
        assert all(type(s.label) is int and s.image.dtype == np.uint8 for s in samples)
        assert dict(server.hits) == {name: 1 for name in files}
        for name, data in files.items():
            assert (tmp_path / "lsbg" / name).read_bytes() == data

        again = load_dataset("lsbg", spec, cache_dir=tmp_path)
        assert dict(server.hits) == {name: 1 for name in files}  # no request
        assert [s.sha256 for s in again] == [s.sha256 for s in samples]
        assert fetch_dataset("lsbg", spec, cache_dir=tmp_path) == \
            [tmp_path / "lsbg" / name for name in files]
        assert dict(server.hits) == {name: 1 for name in files}


def test_lsbg_float_images_are_truncated(tmp_path: Path) -> None:
    files, images, labels = make_lsbg_files([2, 1], dtype="float", seed=2)
    arr = np.zeros((2, 64, 64, 3))
    arr[0, 0, 0] = [0.999, 0.5, 1.0]      # 254.745 -> 254, 127.5 -> 127, 255
    arr[1, 0, 0] = [1 / 255, 0.0039, 0.0]  # 0.9945 -> 0
    files["X_data_1.npy"] = npy_bytes(arr)
    with FileServer(files) as server:
        samples = load_dataset("lsbg", lsbg_spec(server, files), cache_dir=tmp_path)
    assert samples[0].image[0, 0].tolist() == [254, 127, 255]
    assert samples[1].image[0, 0].tolist() == [int(1 / 255 * 255), 0, 0]
    assert np.array_equal(samples[2].image, images[2])
    assert [s.label for s in samples] == labels.tolist()


def test_lsbg_limit_downloads_only_needed_files(tmp_path: Path) -> None:
    files, images, labels = make_lsbg_files([3, 3, 3], seed=3)
    with FileServer(files) as server:
        spec = lsbg_spec(server, files)
        samples = load_dataset("lsbg", spec, limit=4, cache_dir=tmp_path)
        assert [s.id for s in samples] == ["0", "1", "2", "3"]
        assert np.array_equal(np.stack([s.image for s in samples]), images[:4])
        assert [s.label for s in samples] == labels[:4].tolist()
        assert dict(server.hits) == {"y_labels.npy": 1, "X_data_1.npy": 1, "X_data_2.npy": 1}
        assert not (tmp_path / "lsbg" / "X_data_3.npy").exists()

        assert len(load_dataset("lsbg", spec, limit=3, cache_dir=tmp_path)) == 3
        assert load_dataset("lsbg", spec, limit=0, cache_dir=tmp_path) == []
        assert len(load_dataset("lsbg", spec, limit=100, cache_dir=tmp_path)) == 9
        assert server.hits["X_data_3.npy"] == 1 and sum(server.hits.values()) == 4


def test_galaxy_mnist_round_trip_and_cache(tmp_path: Path) -> None:
    gz, images, labels = make_galaxy_mnist_gz(6, seed=4)
    with FileServer() as server:
        spec = galaxy_spec(server, gz)
        samples = load_dataset("galaxy-mnist", spec, cache_dir=tmp_path)
        assert [s.id for s in samples] == [str(i) for i in range(6)]
        assert np.array_equal(np.stack([s.image for s in samples]), images)
        assert [s.label for s in samples] == labels.tolist()
        root = tmp_path / "galaxy-mnist"
        assert (root / "train_dataset.hdf5.gz").read_bytes() == gz
        assert (root / "train_dataset.hdf5").exists()

        first2 = load_dataset("galaxy-mnist", spec, limit=2, cache_dir=tmp_path)
        assert [s.id for s in first2] == ["0", "1"]
        assert np.array_equal(first2[1].image, images[1])
        assert server.hits == {"train_dataset.hdf5.gz": 1}
        assert not [n for n in cached_names(root) if n.endswith((".part", ".tmp"))]


# ------------------------------------------------------------------- faults


def test_corrupt_download_is_not_cached(tmp_path: Path) -> None:
    files, _, _ = make_lsbg_files([2, 2], seed=5)
    with FileServer(files) as server:
        spec = lsbg_spec(server, files)
        server.corrupt("X_data_2.npy")
        with pytest.raises(BenchError) as err:
            fetch_dataset("lsbg", spec, cache_dir=tmp_path)
    msg = str(err.value)
    assert not isinstance(err.value, DatasetUnavailable)
    assert "X_data_2.npy" in msg and server.url("X_data_2.npy") in msg
    assert f"expected git-sha1:{git_sha1(files['X_data_2.npy'])}" in msg
    assert f"found git-sha1:{git_sha1(corrupted(files['X_data_2.npy']))}" in msg
    assert not [n for n in cached_names(tmp_path) if "X_data_2" in n]


def test_corrupt_galaxy_download_leaves_cache_empty(tmp_path: Path) -> None:
    gz, _, _ = make_galaxy_mnist_gz(2)
    with FileServer() as server:
        spec = galaxy_spec(server, gz)
        server.corrupt("train_dataset.hdf5.gz")
        with pytest.raises(BenchError, match=hashlib.md5(corrupted(gz)).hexdigest()):
            load_dataset("galaxy-mnist", spec, cache_dir=tmp_path)
    assert cached_names(tmp_path) == []


def test_cut_off_download_then_retry(tmp_path: Path) -> None:
    files, images, _ = make_lsbg_files([2], seed=6)
    with FileServer(files) as server:
        spec = lsbg_spec(server, files)
        server.cut_off("X_data_1.npy", fraction=0.5)
        with pytest.raises(BenchError, match=r"X_data_1\.npy.*interrupted after \d+ of \d+ bytes") as err:
            load_dataset("lsbg", spec, cache_dir=tmp_path)
        assert not isinstance(err.value, DatasetUnavailable)
        assert cached_names(tmp_path) == ["y_labels.npy"]

        server.clear("X_data_1.npy")
        samples = load_dataset("lsbg", spec, cache_dir=tmp_path)
        assert np.array_equal(np.stack([s.image for s in samples]), images)
        assert server.hits["X_data_1.npy"] == 2 and server.hits["y_labels.npy"] == 1


def test_offline_with_nothing_cached(tmp_path: Path) -> None:
    files, _, _ = make_lsbg_files([1], seed=7)
    with FileServer(files) as server:
        spec = lsbg_spec(server, files)
    # server stopped: its port is closed
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("lsbg", spec, cache_dir=tmp_path)
    msg = str(err.value)
    assert "y_labels.npy" in msg and str(tmp_path / "lsbg" / "y_labels.npy") in msg
    assert "python -m benchmark fetch lsbg" in msg and server.url("y_labels.npy") in msg
    assert cached_names(tmp_path) == []

    gz, _, _ = make_galaxy_mnist_gz(1)
    spec = galaxy_spec(FileServer(), gz)
    spec["files"]["train_dataset.hdf5.gz"]["url"] = closed_port_url("train_dataset.hdf5.gz")
    with pytest.raises(DatasetUnavailable, match="train_dataset.hdf5.gz.*fetch galaxy-mnist"):
        fetch_dataset("galaxy-mnist", spec, cache_dir=tmp_path)


def test_offline_with_everything_cached(tmp_path: Path) -> None:
    files, images, labels = make_lsbg_files([2, 1], seed=8)
    gz, g_images, g_labels = make_galaxy_mnist_gz(3, seed=8)
    with FileServer(files) as server:
        spec = lsbg_spec(server, files)
        gspec = galaxy_spec(server, gz)
        fetch_dataset("lsbg", spec, cache_dir=tmp_path)
        fetch_dataset("galaxy-mnist", gspec, cache_dir=tmp_path)
    samples = load_dataset("lsbg", spec, cache_dir=tmp_path)
    assert np.array_equal(np.stack([s.image for s in samples]), images)
    assert [s.label for s in samples] == labels.tolist()
    gsamples = load_dataset("galaxy-mnist", gspec, cache_dir=tmp_path)
    assert np.array_equal(np.stack([s.image for s in gsamples]), g_images)
    assert [s.label for s in gsamples] == g_labels.tolist()


def test_http_404_is_a_bench_error_with_status(tmp_path: Path) -> None:
    files, _, _ = make_lsbg_files([1])
    with FileServer(files) as server:
        spec = lsbg_spec(server, files)
        server.status("y_labels.npy", 404)
        with pytest.raises(BenchError) as err:
            load_dataset("lsbg", spec, cache_dir=tmp_path)
    assert not isinstance(err.value, DatasetUnavailable)
    assert "HTTP 404" in str(err.value) and server.url("y_labels.npy") in str(err.value)
    assert cached_names(tmp_path) == []


def test_tampered_cached_file_is_reported(tmp_path: Path) -> None:
    files, _, _ = make_lsbg_files([1])
    with FileServer(files) as server:
        spec = lsbg_spec(server, files)
        fetch_dataset("lsbg", spec, cache_dir=tmp_path)
        path = tmp_path / "lsbg" / "X_data_1.npy"
        bad = corrupted(files["X_data_1.npy"])
        path.write_bytes(bad)
        with pytest.raises(BenchError) as err:
            load_dataset("lsbg", spec, cache_dir=tmp_path)
        assert server.hits["X_data_1.npy"] == 1
    msg = str(err.value)
    assert str(path) in msg and "delete it" in msg
    assert git_sha1(files["X_data_1.npy"]) in msg and git_sha1(bad) in msg


# --------------------------------------------------------------- validation


def _lsbg_error(tmp_path: Path, files: dict[str, bytes], **kw: object) -> str:
    with FileServer(files) as server:
        spec = lsbg_spec(server, files, **{k: v for k, v in kw.items() if k != "limit"})
        with pytest.raises(BenchError) as err:
            load_dataset("lsbg", spec, cache_dir=tmp_path, limit=kw.get("limit"))  # type: ignore[arg-type]
    return str(err.value)


@pytest.mark.parametrize("arr, found", [
    (np.zeros((2, 3, 64, 64), np.uint8), "found (2, 3, 64, 64)"),
    (np.zeros((2, 32, 32, 3), np.uint8), "found (2, 32, 32, 3)"),
    (np.zeros((64, 64, 3), np.uint8), "found (64, 64, 3)"),
])
def test_lsbg_wrong_image_shape(tmp_path: Path, arr: np.ndarray, found: str) -> None:
    files, _, _ = make_lsbg_files([2, 2])
    files["X_data_2.npy"] = npy_bytes(arr)
    msg = _lsbg_error(tmp_path, files)
    assert msg == f"X_data_2.npy: expected images of shape (N, 64, 64, 3), {found}"


def test_lsbg_float_out_of_range_and_bad_dtype(tmp_path: Path) -> None:
    files, _, _ = make_lsbg_files([2])
    files["X_data_1.npy"] = npy_bytes(np.full((2, 64, 64, 3), 2.0))
    assert "X_data_1.npy: expected float images with values in [0, 1], found values in [2.0, 2.0]" \
        in _lsbg_error(tmp_path / "a", files)
    files["X_data_1.npy"] = npy_bytes(np.zeros((2, 64, 64, 3), np.int16))
    assert "X_data_1.npy: expected images of dtype uint8, or float in [0, 1], found int16" \
        in _lsbg_error(tmp_path / "b", files)


@pytest.mark.parametrize("labels, needle", [
    (np.array([0.0, 0.5]), "expected integral label values, found 0.5 at index 1"),
    (np.array([0.0, 2.0]), "expected labels in range(2), found 2.0 at index 1"),
    (np.array([-1, 0]), "expected labels in range(2), found -1 at index 0"),
    (np.array([[0.0], [1.0]]), "expected labels of shape (N,), found (2, 1)"),
])
def test_lsbg_bad_labels(tmp_path: Path, labels: np.ndarray, needle: str) -> None:
    files, _, _ = make_lsbg_files([2])
    files["y_labels.npy"] = npy_bytes(labels)
    msg = _lsbg_error(tmp_path, files)
    assert msg.startswith("y_labels.npy: ") and needle in msg


def test_lsbg_n_classes_from_spec(tmp_path: Path) -> None:
    files, _, _ = make_lsbg_files([3])
    files["y_labels.npy"] = npy_bytes(np.array([0.0, 2.0, 1.0]))
    with FileServer(files) as server:
        samples = load_dataset("lsbg", lsbg_spec(server, files, n_classes=3), cache_dir=tmp_path)
    assert [s.label for s in samples] == [0, 2, 1]


def test_lsbg_count_mismatch(tmp_path: Path) -> None:
    files, _, _ = make_lsbg_files([3, 3, 3])
    files["y_labels.npy"] = npy_bytes(np.zeros(5))
    # caught as soon as the loaded prefix overshoots the labels
    msg = _lsbg_error(tmp_path / "a", files)
    assert msg == ("dataset lsbg (X_data_1.npy, X_data_2.npy vs y_labels.npy): expected as many "
                   "images as labels (5), found at least 6 images")
    with FileServer(files) as server:
        spec = lsbg_spec(server, files)
        assert len(load_dataset("lsbg", spec, limit=3, cache_dir=tmp_path / "b")) == 3
        with pytest.raises(BenchError, match="found at least 6 images"):
            load_dataset("lsbg", spec, limit=4, cache_dir=tmp_path / "b")
        assert server.hits["X_data_3.npy"] == 0
    files["y_labels.npy"] = npy_bytes(np.zeros(10))
    msg = _lsbg_error(tmp_path / "c", files)
    assert "X_data_1.npy, X_data_2.npy, X_data_3.npy vs y_labels.npy" in msg
    assert "expected as many images as labels (10), found 9 images" in msg


@pytest.mark.parametrize("images, labels, needle", [
    (np.zeros((2, 3, 64, 64), np.uint8), np.zeros(2, np.uint8),
     "expected images of shape (N, 64, 64, 3), found (2, 3, 64, 64)"),
    (np.zeros((2, 64, 64, 3), np.uint8), np.array([0, 4], np.uint8),
     "expected labels in range(4), found 4 at index 1"),
    (np.zeros((3, 64, 64, 3), np.uint8), np.zeros(2, np.uint8),
     "expected as many images as labels (2), found 3 images"),
    (np.full((1, 64, 64, 3), -0.5, np.float32), np.zeros(1, np.uint8),
     "expected float images with values in [0, 1], found values in [-0.5, -0.5]"),
])
def test_galaxy_mnist_validation(tmp_path: Path, images: np.ndarray, labels: np.ndarray,
                                 needle: str) -> None:
    with FileServer() as server:
        spec = galaxy_spec(server, galaxy_gz_bytes(images, labels))
        with pytest.raises(BenchError) as err:
            load_dataset("galaxy-mnist", spec, cache_dir=tmp_path)
    assert str(err.value) == f"train_dataset.hdf5.gz: {needle}"


def test_galaxy_mnist_float_images_truncated(tmp_path: Path) -> None:
    images = np.zeros((1, 64, 64, 3), np.float64)
    images[0, 0, 0] = [0.999, 0.5, 1.0]
    with FileServer() as server:
        spec = galaxy_spec(server, galaxy_gz_bytes(images, np.array([3], np.uint8)))
        [sample] = load_dataset("galaxy-mnist", spec, cache_dir=tmp_path)
    assert sample.image[0, 0].tolist() == [254, 127, 255] and sample.label == 3


# ----------------------------------------------------------------- folders


def _write_image(path: Path, color: tuple[int, int, int], *, mode: str = "RGB",
                 size: tuple[int, int] = (8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).convert(mode).save(path)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "data" / "imgs"
    _write_image(root / "lsbg" / "b.png", (10, 20, 30))
    _write_image(root / "lsbg" / "a.JPG", (200, 100, 50), size=(16, 16))
    _write_image(root / "lsbg" / "c.jpeg", (0, 0, 255))
    _write_image(root / "artifact" / "z.png", (128, 128, 128), mode="L")
    _write_image(root / "artifact" / "y.png", (1, 2, 3), mode="RGBA")
    (root / "artifact" / "notes.txt").write_text("not an image")
    (root / "artifact" / ".hidden.png").write_bytes(b"")
    return root


def test_folder_default_sorted_round_robin(image_folder: Path) -> None:
    spec = {"format": "folder", "path": "data/imgs"}
    samples = load_dataset("mine", spec, base_dir=image_folder.parent.parent)
    assert [(s.id, s.label) for s in samples] == [
        ("artifact/y.png", 0), ("lsbg/a.JPG", 1), ("artifact/z.png", 0),
        ("lsbg/b.png", 1), ("lsbg/c.jpeg", 1)]
    by_id = {s.id: s.image for s in samples}
    assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 for im in by_id.values())
    assert by_id["lsbg/b.png"].shape == (6, 8, 3)
    assert (by_id["lsbg/b.png"] == [10, 20, 30]).all()
    assert (by_id["artifact/z.png"] == 128).all()
    assert (by_id["artifact/y.png"] == [1, 2, 3]).all()
    assert by_id["lsbg/a.JPG"].shape == (16, 16, 3)
    assert np.abs(by_id["lsbg/a.JPG"].astype(int) - [200, 100, 50]).max() <= 4


def test_folder_explicit_classes_and_limit(image_folder: Path) -> None:
    spec = {"format": "folder", "path": str(image_folder), "classes": ["lsbg", "artifact"]}
    samples = load_dataset("mine", spec, limit=3)
    assert [(s.id, s.label) for s in samples] == [
        ("lsbg/a.JPG", 0), ("artifact/y.png", 1), ("lsbg/b.png", 0)]


def test_folder_errors(image_folder: Path, tmp_path: Path) -> None:
    spec = {"format": "folder", "path": str(image_folder), "classes": ["lsbg"]}
    with pytest.raises(BenchError, match=r"sub-folders \['artifact'\] that are not in classes"):
        load_dataset("mine", spec)
    spec["classes"] = ["lsbg", "artifact", "galaxy"]
    with pytest.raises(BenchError, match=r"missing \['galaxy'\]"):
        load_dataset("mine", spec)
    (image_folder / "galaxy").mkdir()
    (image_folder / "galaxy" / "readme.txt").write_text("x")
    with pytest.raises(BenchError, match=r"images in .*galaxy, found none"):
        load_dataset("mine", spec)
    with pytest.raises(BenchError, match="found nothing"):
        load_dataset("mine", {"format": "folder", "path": "nope"}, base_dir=tmp_path)
    (image_folder / "lsbg" / "broken.png").write_bytes(b"not a png")
    spec["classes"] = ["lsbg", "artifact", "galaxy"]
    _write_image(image_folder / "galaxy" / "g.png", (0, 0, 0))
    with pytest.raises(BenchError, match=r"broken\.png: expected a PNG or JPEG image"):
        load_dataset("mine", {**spec, "path": str(image_folder)})


# ------------------------------------------------------------ spec checks

_GOOD = {"url": "http://127.0.0.1:9/x", "checksum": "md5:" + "0" * 32}


@pytest.mark.parametrize("spec, needle", [
    ({"format": "tiff"}, "expected format to be one of ['folder', 'galaxy-mnist-hdf5-gz', "
                         "'lsbg-npy'], found 'tiff'"),
    ({"format": "lsbg-npy", "labels": "y.npy", "files": {"y.npy": _GOOD}}, "missing ['images']"),
    ({"format": "lsbg-npy", "images": ["x.npy"], "labels": "y.npy", "files": {"y.npy": _GOOD}},
     "datasets.ds.images: file 'x.npy' has no entry in [datasets.ds.files]; entries: ['y.npy']"),
    ({"format": "galaxy-mnist-hdf5-gz", "file": "g.gz", "files": {"h.gz": _GOOD}},
     "file 'g.gz' has no entry"),
    ({"format": "galaxy-mnist-hdf5-gz", "file": "g.gz",
      "files": {"g.gz": {"url": _GOOD["url"], "checksum": "sha1:abc"}}},
     "expected checksum \"algo:hex\" with algo one of ['git-sha1', 'md5', 'sha256']"),
    ({"format": "galaxy-mnist-hdf5-gz", "file": "g.gz",
      "files": {"g.gz": {"url": _GOOD["url"], "checksum": "md5:" + "z" * 32}}}, "found 'md5:zzz"),
    ({"format": "galaxy-mnist-hdf5-gz", "file": "g.gz", "files": {"g.gz": {"url": _GOOD["url"]}}},
     "expected { url = ..., checksum = \"algo:hex\" }"),
    ({"format": "galaxy-mnist-hdf5-gz", "file": "g.gz", "files": {"g.gz": {**_GOOD, "url": "ftp://x"}}},
     "found 'ftp://x'"),
    ({"format": "galaxy-mnist-hdf5-gz", "file": "g.gz", "files": {"g.gz": _GOOD}, "fiel": 1},
     "unknown keys ['fiel']"),
    ({"format": "folder", "path": "x", "classes": "a"}, "datasets.ds.classes: expected a non-empty list"),
    ({"format": "folder", "path": "x", "classes": ["a", "b"], "n_classes": 3},
     "n_classes = 3 but classes lists 2 folders"),
])
def test_spec_validation(tmp_path: Path, spec: dict, needle: str) -> None:
    with pytest.raises(BenchError) as err:
        load_dataset("ds", spec, cache_dir=tmp_path, base_dir=tmp_path)
    assert not isinstance(err.value, DatasetUnavailable)
    assert str(err.value).startswith("datasets.ds")
    assert needle in str(err.value)
    assert cached_names(tmp_path) == []


def test_limit_must_be_non_negative(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="expected limit to be a non-negative integer"):
        load_dataset("ds", {"format": "folder", "path": "x"}, limit=-1, base_dir=tmp_path)


def test_builtin_lsbg_source_verifies_the_real_label_file(tmp_path: Path) -> None:
    """The built-in config's checksum for y_labels.npy matches the real file, and the real
    labels load through the real spec (only the host is swapped for a loopback server;
    X_data_1.npy is synthetic, in the real format, with the 1,000 images the first file holds)."""
    from benchmark.config import load_config

    spec = load_config().datasets["lsbg"]
    real_labels = (FIXTURES / "lsbg_y_labels.npy").read_bytes()
    images = np.random.default_rng(0).integers(0, 256, (1000, 64, 64, 3), dtype=np.uint8)
    x1 = npy_bytes(images)
    with FileServer({"y_labels.npy": real_labels, "X_data_1.npy": x1}) as server:
        files = {name: dict(entry) for name, entry in spec["files"].items()}
        for name in files:
            files[name]["url"] = server.url(name)
        files["X_data_1.npy"]["checksum"] = f"git-sha1:{git_sha1(x1)}"  # synthetic stand-in
        assert files["y_labels.npy"]["checksum"] == "git-sha1:c7767de36d1f41d5857cec9fd7af5bf6cee05039"
        samples = load_dataset("lsbg", {**spec, "files": files}, limit=500, cache_dir=tmp_path)
        assert server.hits["X_data_2.npy"] == 0  # 500 samples need only the first file
    labels = [s.label for s in samples]
    assert (labels.count(0), labels.count(1)) == (236, 264)  # the paper's class balance
    assert [s.id for s in samples[:3]] == ["0", "1", "2"]


# ------------------------------------------------- folder image modes (16-bit etc.)


def _disc(lo: float, hi: float, *, size: int = 12, dtype: str = "float64") -> np.ndarray:
    """A bright disc (value ``hi``) on a faint background (``lo``)."""
    yy, xx = np.mgrid[:size, :size]
    return np.where((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2, hi, lo).astype(dtype)


def _round16(v: np.ndarray) -> np.ndarray:
    """round(v * 255 / 65535) exactly (v / 257 is never halfway)."""
    return ((v.astype(np.int64) * 2 + 257) // 514).astype(np.uint8)


def _gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)


def _png16_rgb(rgb16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = rgb16.shape
    rows = b"".join(b"\0" + rgb16[y].astype(">u2").tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _load_one(tmp_path: Path, write) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Write one image (``write(path_without_suffix) -> path``) into class a; load it."""
    root = tmp_path / "modes"
    (root / "a").mkdir(parents=True)
    path = write(root / "a" / "img")
    _write_image(root / "b" / "other.png", (0, 0, 0))
    samples = load_dataset("modes", {"format": "folder", "path": str(root)}, limit=1)
    assert samples[0].id == f"a/{path.name}"
    return samples[0].image


def test_folder_16bit_grayscale_png_is_scaled_not_clipped_white(tmp_path: Path) -> None:
    """A 16-bit survey cutout: faint sky (1000) and a bright galaxy (40000) with a ramp."""
    v = _disc(1000, 40000, dtype="uint16")
    v[0] = np.linspace(0, 65535, v.shape[1]).astype(np.uint16)  # a full-range ramp in row 0

    def write(stem: Path) -> Path:
        Image.fromarray(v).save(stem.with_suffix(".png"))  # mode I;16
        return stem.with_suffix(".png")

    image = _load_one(tmp_path, write)
    assert (image == 255).mean() < 0.1, "16-bit pixels were clipped to white"
    assert np.array_equal(image, _gray3(_round16(v)))
    assert image[6, 6, 0] > image[2, 10, 0]  # the disc is still brighter than the sky


def test_folder_16bit_rgb_png_keeps_its_structure(tmp_path: Path) -> None:
    v = _disc(2000, 50000, dtype="uint16")
    rgb16 = np.stack([v, v // 2, v // 4], axis=2)

    def write(stem: Path) -> Path:
        stem.with_suffix(".png").write_bytes(_png16_rgb(rgb16))
        return stem.with_suffix(".png")

    image = _load_one(tmp_path, write)
    # Pillow reduces 16-bit RGB to its high byte; at most 1 below round(v / 257)
    diff = _round16(rgb16).astype(int) - image.astype(int)
    assert diff.min() >= 0 and diff.max() <= 1
    assert image[6, 6, 0] > 150 and image[2, 10, 0] < 10


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "P+transparency", "RGB", "RGBA", "CMYK"])
def test_folder_8bit_modes_keep_their_values(tmp_path: Path, mode: str) -> None:
    rgb = np.zeros((12, 12, 3), np.uint8)
    rgb[:] = (20, 30, 40)
    rgb[3:9, 3:9] = (230, 200, 180)  # a bright square on a faint background

    def write(stem: Path) -> Path:
        im = Image.fromarray(rgb)
        options: dict[str, object] = {}
        if mode == "1":
            im = im.convert("L").point(lambda x: 255 if x > 128 else 0).convert("1")
        elif mode.startswith("P"):
            im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
            if mode == "P+transparency":  # the background is transparent
                options["transparency"] = im.getpixel((0, 0))
        elif mode == "CMYK":
            im = im.convert(mode)
            options = {"quality": 100, "subsampling": 0}
        elif mode != "RGB":
            im = im.convert(mode)
        suffix = ".jpg" if mode == "CMYK" else ".png"
        im.save(stem.with_suffix(suffix), **options)
        with Image.open(stem.with_suffix(suffix)) as back:
            assert back.mode == mode.split("+")[0]
        return stem.with_suffix(suffix)

    image = _load_one(tmp_path, write)
    assert image.shape == (12, 12, 3) and image.dtype == np.uint8
    gray = rgb.astype(float) @ [0.299, 0.587, 0.114]
    expected = {
        "1": _gray3(np.where(gray > 128, 255, 0)),
        "L": _gray3(np.floor(gray + 0.5)),
        "LA": _gray3(np.floor(gray + 0.5)),
    }.get(mode, rgb)  # alpha dropped: the stored colour values are kept
    tol = 3 if mode == "CMYK" else (1 if mode in ("L", "LA") else 0)
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= tol


def test_to_rgb8_16bit_modes_scale_by_the_full_range() -> None:
    from benchmark.datasets import pil_to_rgb8

    v = np.array([[0, 128, 129, 385, 1000], [32767, 40000, 65406, 65407, 65535]], np.uint16)
    expected = _gray3(np.array([[0, 0, 1, 1, 4], [127, 156, 254, 255, 255]]))
    assert np.array_equal(_round16(v), expected[..., 0])
    for mode, raw in (("I;16", v.astype("<u2").tobytes()), ("I;16L", v.astype("<u2").tobytes()),
                      ("I;16B", v.astype(">u2").tobytes())):
        im = Image.frombytes(mode, (5, 2), raw)
        assert np.array_equal(pil_to_rgb8(im, source="x.png"), expected), mode
    im = Image.new("I", (5, 2))
    im.putdata(v.ravel().tolist())
    assert np.array_equal(pil_to_rgb8(im, source="x.png"), expected)


def test_to_rgb8_32bit_and_float_modes_in_range_or_a_clear_error() -> None:
    from benchmark.datasets import pil_to_rgb8

    f = np.array([[0.0, 0.1, 0.5], [0.999, 1 / 255, 1.0]], np.float32)
    im = Image.frombytes("F", (3, 2), f.tobytes())
    assert np.array_equal(pil_to_rgb8(im, source="f.tif"),
                          _gray3(np.floor(f.astype(np.float64) * 255 + 0.5)))
    for bad, found in ((np.array([[0.0, 1.5]], np.float32), "[0.0, 1.5]"),
                       (np.array([[-0.25, 0.5]], np.float32), "[-0.25, 0.5]"),
                       (np.array([[np.nan, 0.5]], np.float32), "non-finite")):
        with pytest.raises(BenchError) as err:
            pil_to_rgb8(Image.frombytes("F", (2, 1), bad.tobytes()), source="dir/f.png")
        msg = str(err.value)
        assert msg.startswith("dir/f.png: ") and "mode 'F'" in msg and "[0, 1]" in msg and found in msg

    big = Image.new("I", (2, 1))
    big.putdata([5, 70000])
    with pytest.raises(BenchError) as err:
        pil_to_rgb8(big, source="dir/i.png")
    msg = str(err.value)
    assert msg.startswith("dir/i.png: ") and "mode 'I'" in msg and "0..65535" in msg and "70000" in msg

    with pytest.raises(BenchError) as err:
        pil_to_rgb8(Image.new("HSV", (2, 2)), source="dir/h.png")
    msg = str(err.value)
    assert msg.startswith("dir/h.png: ") and "found mode 'HSV'" in msg and "I;16" in msg and "RGBA" in msg


def test_folder_unsupported_mode_names_the_file(tmp_path: Path) -> None:
    def write(stem: Path) -> Path:
        big = Image.new("I", (4, 4))
        big.putdata([70000] * 16)
        big.save(stem.with_suffix(".png"), format="TIFF")  # TIFF bytes under a .png name
        return stem.with_suffix(".png")

    with pytest.raises(BenchError) as err:
        _load_one(tmp_path, write)
    msg = str(err.value)
    assert str(tmp_path / "modes" / "a" / "img.png") in msg and "mode 'I'" in msg
    assert "found values in [70000, 70000]" in msg


# ------------------------------------------- cached files are verified on every load


def _edit_keeping_size_and_mtime(path: Path, offset: int) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_cached_file_edited_in_place_with_same_size_and_mtime_is_detected(tmp_path: Path) -> None:
    files, images, _ = make_lsbg_files([2], seed=11)
    with FileServer(files) as server:
        spec = lsbg_spec(server, files)
        assert np.array_equal(np.stack([s.image for s in load_dataset("lsbg", spec, cache_dir=tmp_path)]),
                              images)
        path = tmp_path / "lsbg" / "X_data_1.npy"
        _edit_keeping_size_and_mtime(path, len(files["X_data_1.npy"]) - 10)  # one pixel
        with pytest.raises(BenchError) as err:
            load_dataset("lsbg", spec, cache_dir=tmp_path)
        assert server.hits["X_data_1.npy"] == 1
    msg = str(err.value)
    assert not isinstance(err.value, DatasetUnavailable)
    assert str(path) in msg and f"expected git-sha1:{git_sha1(files['X_data_1.npy'])}" in msg
    assert f"found git-sha1:{git_sha1(path.read_bytes())}" in msg


def test_edited_decompressed_hdf5_is_detected_and_redone_from_the_verified_gz(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import h5py

    gz, images, labels = make_galaxy_mnist_gz(4, seed=12)
    with FileServer() as server:
        spec = galaxy_spec(server, gz)
        load_dataset("galaxy-mnist", spec, cache_dir=tmp_path)
    capsys.readouterr()
    hdf5 = tmp_path / "galaxy-mnist" / "train_dataset.hdf5"
    st = hdf5.stat()
    with h5py.File(hdf5, "r+") as fh:  # relabel and brighten in place
        fh["labels"][0] = (labels[0] + 1) % 4
        fh["images"][1] = 255 - images[1]
    os.utime(hdf5, ns=(st.st_atime_ns, st.st_mtime_ns))

    samples = load_dataset("galaxy-mnist", spec, cache_dir=tmp_path)  # offline: server stopped
    assert [s.label for s in samples] == labels.tolist()
    assert np.array_equal(np.stack([s.image for s in samples]), images)
    err = capsys.readouterr().err
    assert str(hdf5) in err and "expected sha256:" in err and "found sha256:" in err
    assert "decompressing it again" in err

    capsys.readouterr()
    load_dataset("galaxy-mnist", spec, cache_dir=tmp_path)
    assert capsys.readouterr().err == ""  # repaired: no note the next time


# ------------------------------------- broken downloads fail; only no network skips


@pytest.mark.parametrize("fault", ["cut_off", "reset"])
def test_broken_transfer_is_a_failure_not_a_skip(tmp_path: Path, fault: str) -> None:
    files, _, _ = make_lsbg_files([40], seed=13)  # ~490 kB: the break is mid-body
    size = len(files["X_data_1.npy"])
    with FileServer(files) as server:
        spec = lsbg_spec(server, files)
        getattr(server, fault)("X_data_1.npy", 0.25)
        with pytest.raises(BenchError) as err:
            load_dataset("lsbg", spec, cache_dir=tmp_path)
    msg = str(err.value)
    assert not isinstance(err.value, DatasetUnavailable), msg
    assert "X_data_1.npy" in msg and server.url("X_data_1.npy") in msg
    assert re.search(rf"expected {size} bytes \(Content-Length\), found \d+", msg), msg
    assert "python -m benchmark fetch" not in msg
    assert not [n for n in cached_names(tmp_path) if "X_data_1" in n]


def test_dns_failure_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kw: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    files, _, _ = make_lsbg_files([1])
    spec = lsbg_spec(FileServer(), files)
    for fname, entry in spec["files"].items():
        entry["url"] = f"http://data.example.invalid/{fname}"
    with pytest.raises(DatasetUnavailable, match=r"y_labels\.npy is not cached .*Name or service"):
        load_dataset("lsbg", spec, cache_dir=tmp_path)


def test_the_fetch_hint_names_the_users_config_that_defines_the_dataset(tmp_path: Path, monkeypatch) -> None:
    """A dataset from the user's own config is fetched with that config: the hint says how."""
    from benchmark.config import parse_config
    from benchmark.session import BenchSession

    monkeypatch.setenv("ASTROBENCH_CACHE_DIR", str(tmp_path / "cache"))
    files, _, _ = make_lsbg_files([1], seed=7)
    with FileServer(files) as server:
        spec = lsbg_spec(server, files)  # the server stops: its port is closed
    (tmp_path / "prompts" / "survey").mkdir(parents=True)
    (tmp_path / "prompts" / "survey" / "paper.txt").write_text("0 or 1?")
    raw = {"datasets": {"survey": spec}, "models": {},
           "tasks": {"survey": {"dataset": "survey", "classes": ["artifact", "LSBG"], "sample_size": 1}}}
    user = tmp_path / "my bench.toml"
    config = parse_config(raw, sources=(Path("builtin.toml"), user),
                          prompt_dirs={"survey": [tmp_path / "prompts" / "survey"]})
    bench = BenchSession(config, frozen_dir=tmp_path / "frozen", record_mode="none", progress=False)
    with pytest.raises(DatasetUnavailable) as err:
        bench.samples(config.tasks["survey"])
    assert f"Run `python -m benchmark --bench-config '{user}' fetch survey`" in str(err.value)
