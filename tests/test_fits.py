"""FITS cutouts in folder datasets, displayed as astronomers display them (astropy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmark.core import BenchError
from benchmark.datasets import fits_to_rgb8, load_dataset

fits = pytest.importorskip("astropy.io.fits")
vis = pytest.importorskip("astropy.visualization")


def blob(size: int = 32, row: int = 5, col: int = 20, peak: float = 1000.0, sky: float = 10.0) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    return sky + peak * np.exp(-((y - row) ** 2 + (x - col) ** 2) / (2 * 2.0 ** 2))


def write(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data.astype(np.float32)).writeto(path)
    return path


def test_one_band_is_stretched_and_flipped_north_up(tmp_path):
    data = blob()
    image = fits_to_rgb8(write(tmp_path / "a.fits", data), {}, source="a")
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    # FITS row 5 (near the bottom) is drawn near the top of the image: row 31 - 5 = 26
    assert image[26, 20, 0] == 255 and image[5, 20, 0] == 0 and image[0, 0, 0] == 0
    norm = vis.AsinhStretch()(vis.PercentileInterval(99.5)(data.astype(np.float32), clip=True))
    expected = np.flipud(np.round(255 * np.clip(norm, 0, 1)).astype(np.uint8))
    assert np.array_equal(image[..., 0], expected)  # the default: asinh over a 99.5% interval


def test_two_stretches_give_two_images_of_the_same_source(tmp_path):
    path = write(tmp_path / "a.fits", blob())
    asinh = fits_to_rgb8(path, {"stretch": "asinh", "interval": "zscale"}, source="a")
    linear = fits_to_rgb8(path, {"stretch": "linear", "interval": "minmax"}, source="a")
    assert not np.array_equal(asinh, linear)
    # the faint wings of the source show far more under asinh than linear
    assert asinh[26, 25, 0] > linear[26, 25, 0] + 20


def test_three_bands_use_lupton_colour(tmp_path):
    r, g, b = blob(peak=1000.0), blob(peak=100.0), blob(peak=10.0)
    image = fits_to_rgb8(write(tmp_path / "rgb.fits", np.stack([r, g, b])), {}, source="rgb")
    expected = np.flipud(vis.make_lupton_rgb(r, g, b, Q=8.0, stretch=0.5))
    assert np.array_equal(image, expected)
    assert image[26, 20, 0] > image[26, 20, 1] > image[26, 20, 2]  # a red source stays red


def test_a_folder_task_of_fits_cutouts_loads_with_its_display(tmp_path):
    for i in range(3):
        write(tmp_path / "images" / "galaxy" / f"g{i}.fits", blob(row=5 + i))
        write(tmp_path / "images" / "star" / f"s{i}.fits", blob(peak=50.0 + i))
    spec = {"format": "folder", "path": str(tmp_path / "images"), "display": {"stretch": "log"}}
    samples = load_dataset("cutouts", spec)
    assert [s.label for s in samples] == [0, 1] * 3 and samples[0].id == "galaxy/g0.fits"
    assert all(s.image.shape == (32, 32, 3) for s in samples)
    other = load_dataset("cutouts", {**spec, "display": {"stretch": "linear"}})
    assert samples[0].sha256 != other[0].sha256  # the display is part of what is scored (and recorded)


def test_odd_fits_files_are_clear_errors(tmp_path):
    with pytest.raises(BenchError, match=r"expected one band \(H x W\) or three \(3 x H x W\), found data of shape"):
        fits_to_rgb8(write(tmp_path / "cube.fits", np.zeros((4, 8, 8))), {}, source="cube")
    (tmp_path / "bad.fits").write_bytes(b"not a fits file")
    with pytest.raises(BenchError, match="expected a FITS file"):
        fits_to_rgb8(tmp_path / "bad.fits", {}, source="bad")


def test_a_misspelt_display_setting_is_a_usage_error(tmp_path):
    from benchmark.config import parse_config

    write(tmp_path / "images" / "a" / "x.fits", blob())
    write(tmp_path / "images" / "b" / "y.fits", blob())
    raw = {"datasets": {"c": {"format": "folder", "path": str(tmp_path / "images"), "display": {"strech": "log"}}},
           "tasks": {"t": {"dataset": "c", "classes": ["a", "b"], "prompts": []}}, "models": {}}
    with pytest.raises(BenchError, match=r"strech.*did you mean 'stretch'"):
        parse_config(raw, prompt_dirs={})
