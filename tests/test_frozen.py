"""benchmark.frozen: frozen samples are verified (labels, ids, images, the folder they
came from) and loading the first N does not decode the rest."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.core import BenchError, Sample
from benchmark.datasets import load_dataset
from benchmark.frozen import FORMAT, load_frozen, write_frozen
from tests.support.file_server import npy_bytes

SPEC = {"format": "lsbg-npy", "images": ["x.npy"], "labels": "y.npy",
        "files": {"x.npy": {"url": "http://127.0.0.1:9/x.npy", "checksum": "md5:" + "1" * 32},
                  "y.npy": {"url": "http://127.0.0.1:9/y.npy", "checksum": "md5:" + "2" * 32}}}


def toy_samples(n: int, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    return [Sample(str(i), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), int(i % 3 == 0))
            for i in range(n)]


def rewrite_member(path: Path, name: str, change: Callable[[np.ndarray], np.ndarray]) -> None:
    """Replace the array ``name`` inside the .npz, keeping every other member as it is."""
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    members[f"{name}.npy"] = npy_bytes(change(np.load(io.BytesIO(members[f"{name}.npy"]))))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            zf.writestr(member, data)


def test_round_trip_with_count(tmp_path: Path) -> None:
    samples = toy_samples(7)
    path = write_frozen(tmp_path / "toy.npz", samples, dataset="toy", spec=SPEC)
    for count, n in ((None, 7), (7, 7), (3, 3), (0, 0)):
        loaded = load_frozen(path, dataset="toy", spec=SPEC, count=count)
        assert loaded is not None
        assert [(s.id, s.label, s.sha256) for s in loaded] == \
            [(s.id, s.label, s.sha256) for s in samples[:n]]
        assert all(s.image.dtype == np.uint8 and s.image.flags.writeable for s in loaded)
    assert load_frozen(path, dataset="toy", spec=SPEC, count=8) is None  # too few


def test_zeroed_labels_are_detected(tmp_path: Path) -> None:
    path = write_frozen(tmp_path / "toy.npz", toy_samples(6), dataset="toy", spec=SPEC)
    rewrite_member(path, "labels", np.zeros_like)
    with pytest.raises(BenchError) as err:
        load_frozen(path, dataset="toy", spec=SPEC, count=2)
    msg = str(err.value)
    assert str(path) in msg and "labels" in msg and "re-freeze" in msg
    assert "expected sha256:" in msg and "found sha256:" in msg


def test_changed_ids_are_detected(tmp_path: Path) -> None:
    path = write_frozen(tmp_path / "toy.npz", toy_samples(4), dataset="toy", spec=SPEC)
    rewrite_member(path, "ids", lambda ids: ids[::-1].copy())
    with pytest.raises(BenchError, match=r"toy\.npz.*re-freeze"):
        load_frozen(path, dataset="toy", spec=SPEC, count=None)


def test_corrupt_image_in_the_returned_prefix_is_detected(tmp_path: Path) -> None:
    path = write_frozen(tmp_path / "toy.npz", toy_samples(6), dataset="toy", spec=SPEC)

    def flip(images: np.ndarray) -> np.ndarray:
        images[2, 5, 5, 0] ^= 1
        return images

    rewrite_member(path, "images", flip)
    assert len(load_frozen(path, dataset="toy", spec=SPEC, count=2) or []) == 2  # not returned
    with pytest.raises(BenchError, match=r"toy\.npz: image 2 has sha256 .*corrupt.*re-freeze"):
        load_frozen(path, dataset="toy", spec=SPEC, count=3)


def test_old_format_is_a_clear_error(tmp_path: Path) -> None:
    samples = toy_samples(3)
    path = tmp_path / "old.npz"
    np.savez_compressed(  # the layout of astrobench-frozen-sample/1
        path, images=np.stack([s.image for s in samples]),
        labels=np.array([s.label for s in samples], dtype=np.int64),
        ids=np.array([s.id for s in samples]), digests=np.array([s.sha256 for s in samples]),
        meta=np.array(json.dumps({"format": "astrobench-frozen-sample/1", "dataset": "toy",
                                  "source": "0" * 64, "count": 3})))
    with pytest.raises(BenchError) as err:
        load_frozen(path, dataset="toy", spec=SPEC, count=None)
    msg = str(err.value)
    assert str(path) in msg and f"expected format {FORMAT!r}" in msg
    assert "found 'astrobench-frozen-sample/1'" in msg and "re-freeze" in msg


def test_the_first_n_do_not_decode_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    samples = toy_samples(300)
    path = write_frozen(tmp_path / "big.npz", samples, dataset="toy", spec=SPEC)
    read = [0]
    original = zipfile.ZipExtFile.read

    def counting_read(self: zipfile.ZipExtFile, n: int = -1) -> bytes:
        data = original(self, n)
        read[0] += len(data)
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting_read)
    loaded = load_frozen(path, dataset="toy", spec=SPEC, count=10)
    assert loaded is not None and [s.sha256 for s in loaded] == [s.sha256 for s in samples[:10]]
    all_images = 300 * 64 * 64 * 3
    assert read[0] < all_images // 10, f"decoded {read[0]} bytes for 10 of 300 images"


# ------------------------------------------------------------- folder datasets


def _folder(root: Path, n_per_class: int = 3) -> None:
    rng = np.random.default_rng(1)
    for c in ("artifact", "lsbg"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{c[0]}{i}.png")


def _freeze_folder(tmp_path: Path, spec: dict, base_dir: Path | None = None) -> Path:
    samples = load_dataset("mine", spec, base_dir=base_dir)
    return write_frozen(tmp_path / "frozen" / "mine.npz", samples, dataset="mine", spec=spec,
                        base_dir=base_dir)


def test_relabelled_folder_invalidates_its_frozen_sample(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _folder(root)
    spec = {"format": "folder", "path": str(root), "classes": ["artifact", "lsbg"]}
    path = _freeze_folder(tmp_path, spec)
    assert len(load_frozen(path, dataset="mine", spec=spec, count=4) or []) == 4

    (root / "artifact" / "a1.png").rename(root / "lsbg" / "a1.png")  # relabel one image
    with pytest.raises(BenchError) as err:
        load_frozen(path, dataset="mine", spec=spec, count=4)
    msg = str(err.value)
    assert str(path) in msg and str(root) in msg and "changed since" in msg and "re-freeze" in msg
    assert "expected manifest sha256:" in msg and "found sha256:" in msg

    path = _freeze_folder(tmp_path, spec)  # re-freeze: fine again
    assert load_frozen(path, dataset="mine", spec=spec, count=None) is not None


def test_edited_or_added_folder_image_invalidates_its_frozen_sample(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _folder(root)
    spec = {"format": "folder", "path": str(root)}
    path = _freeze_folder(tmp_path, spec)
    Image.new("RGB", (8, 8), (255, 255, 255)).save(root / "lsbg" / "l0.png")  # same name, new pixels
    with pytest.raises(BenchError, match="changed since"):
        load_frozen(path, dataset="mine", spec=spec, count=1)
    path = _freeze_folder(tmp_path, spec)
    Image.new("RGB", (8, 8)).save(root / "lsbg" / "l9.png")
    with pytest.raises(BenchError, match="changed since"):
        load_frozen(path, dataset="mine", spec=spec, count=1)


def test_folder_relative_to_base_dir_and_gone_folder(tmp_path: Path) -> None:
    _folder(tmp_path / "data" / "imgs")
    spec = {"format": "folder", "path": "data/imgs"}
    path = _freeze_folder(tmp_path, spec, base_dir=tmp_path)
    loaded = load_frozen(path, dataset="mine", spec=spec, count=2, base_dir=tmp_path)
    assert [s.id for s in loaded or []] == ["artifact/a0.png", "lsbg/l0.png"]
    (tmp_path / "data" / "imgs" / "lsbg" / "l0.png").unlink()
    with pytest.raises(BenchError, match="changed since"):
        load_frozen(path, dataset="mine", spec=spec, count=2, base_dir=tmp_path)
    # the folder is gone: the frozen sample is the only copy and is used on its own digests
    shutil.rmtree(tmp_path / "data")
    assert len(load_frozen(path, dataset="mine", spec=spec, count=2, base_dir=tmp_path) or []) == 2


def test_freezing_samples_that_disagree_with_the_folder_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _folder(root)
    spec = {"format": "folder", "path": str(root)}
    samples = load_dataset("mine", spec)
    wrong = [Sample(s.id, s.image, 1 - s.label) if s.id == "lsbg/l2.png" else s for s in samples]
    with pytest.raises(BenchError) as err:
        write_frozen(tmp_path / "mine.npz", wrong, dataset="mine", spec=spec)
    msg = str(err.value)
    assert "lsbg/l2.png" in msg and "label 0" in msg and "label 1" in msg and str(root) in msg
    assert not (tmp_path / "mine.npz").exists()


def test_freezing_a_folder_sample_needs_the_folder(tmp_path: Path) -> None:
    _folder(tmp_path / "data" / "imgs")
    spec = {"format": "folder", "path": "data/imgs"}
    samples = load_dataset("mine", spec, base_dir=tmp_path)
    with pytest.raises(BenchError) as err:  # resolved against the wrong folder
        write_frozen(tmp_path / "mine.npz", samples, dataset="mine", spec=spec, base_dir=tmp_path / "x")
    assert str(tmp_path / "x" / "data" / "imgs") in str(err.value) and "found nothing" in str(err.value)
    assert not (tmp_path / "mine.npz").exists()


def test_freeze_command_then_load_then_relabel(tmp_path: Path) -> None:
    """`python -m benchmark freeze` writes a sample that load_frozen accepts, until the folder changes."""
    import os
    import subprocess
    import sys

    from benchmark.config import load_config

    root = tmp_path / "imgs"
    _folder(root)
    (tmp_path / "prompts" / "mine").mkdir(parents=True)
    (tmp_path / "prompts" / "mine" / "paper.txt").write_text("Category 0 or 1? Answer with the number.")
    cfg = tmp_path / "mine.toml"
    cfg.write_text(f'[datasets.mine]\nformat = "folder"\npath = "{root}"\n\n'
                   '[tasks.mine]\ndataset = "mine"\nclasses = ["artifact", "lsbg"]\nprompts = ["paper"]\n')
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "benchmark", "--bench-config", str(cfg), "freeze", "mine"],
                          cwd=repo, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ASTROBENCH_FIXTURES_DIR": str(tmp_path / "frozen")})
    assert proc.returncode == 0, proc.stderr
    spec = load_config(cfg).datasets["mine"]
    path = tmp_path / "frozen" / "mine.npz"
    assert len(load_frozen(path, dataset="mine", spec=spec, count=None) or []) == 6
    (root / "lsbg" / "l0.png").rename(root / "artifact" / "l0.png")
    with pytest.raises(BenchError, match="changed since"):
        load_frozen(path, dataset="mine", spec=spec, count=None)
