"""The world of the end-to-end runs of ``pytest cases``: LSBG and Galaxy10-style
morphology data in the datasets' real formats, served by a loopback
:class:`FileServer`, a user config pointing ``gpt-4o`` at a loopback
:class:`OpenAIStub`, and the exact accuracies the stand-in's answers give.

The ``world`` fixture of ``tests/conftest.py`` serves it (:func:`serve_world`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tests.support.file_server import FileServer, galaxy_gz_bytes, npy_bytes
from tests.support.openai_stub import (
    BARE,
    CORRECT,
    CORRECT_STYLES,
    UNPARSEABLE,
    VERBOSE,
    WRONG,
    OpenAIStub,
    mark_image,
)

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-e2e-DISTINCTIVE-SECRET-42"

# LSBG: 12 images in two .npy files, sample_size 10 -> the first 10 are used.
LSBG_STYLES = [CORRECT, CORRECT, VERBOSE, BARE, CORRECT, WRONG, UNPARSEABLE, CORRECT, VERBOSE, CORRECT, WRONG, WRONG]
# Morphology: 12 images, sample_size 12 (the built-in 500 is more than the dataset holds); WRONG answers label+1, so 1->2 becomes right once 1 and 2 merge.
MORPH_STYLES = [CORRECT, WRONG, CORRECT, WRONG, VERBOSE, WRONG, UNPARSEABLE, CORRECT, CORRECT, BARE, WRONG, CORRECT]
MORPH_LABELS = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]


def build_data(rng: np.random.Generator):
    lsbg_labels = np.array([i % 2 for i in range(12)], dtype=np.float64)
    lsbg_images = np.stack([
        mark_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), label=int(lsbg_labels[i]),
                   style=LSBG_STYLES[i], n_classes=2) for i in range(12)])
    morph_images = np.stack([
        mark_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), label=MORPH_LABELS[i],
                   style=MORPH_STYLES[i], n_classes=4) for i in range(12)])
    files = {
        "X_data_1.npy": npy_bytes(lsbg_images[:6]),
        "X_data_2.npy": npy_bytes(lsbg_images[6:]),
        "y_labels.npy": npy_bytes(lsbg_labels),
        "train_dataset.hdf5.gz": galaxy_gz_bytes(morph_images, np.array(MORPH_LABELS, dtype=np.uint8)),
    }
    return files


def user_config(server: FileServer, stub: OpenAIStub, files: dict[str, bytes]) -> str:
    def entry(name: str, algo: str = "sha256") -> str:
        digest = hashlib.new(algo, files[name]).hexdigest()
        return f'"{name}" = {{ url = "{server.url(name)}", checksum = "{algo}:{digest}" }}'

    return f"""
[tasks.lsbg]
sample_size = 10

[tasks.morphology]
sample_size = 12

[datasets.lsbg]
images = ["X_data_1.npy", "X_data_2.npy"]

[datasets.lsbg.files]
{entry("X_data_1.npy")}
{entry("X_data_2.npy")}
{entry("y_labels.npy")}

[datasets.galaxy-mnist.files]
{entry("train_dataset.hdf5.gz", "md5")}

[models.gpt-4o]
base_url = "{stub.base_url}"
api_key_env = "ASTROBENCH_E2E_KEY"
concurrency = 4
"""


def expected_accuracy(styles, labels, merge=None) -> float:
    correct = 0
    for style, label in zip(styles, labels):
        if style in CORRECT_STYLES:
            correct += 1
        elif style == WRONG and merge is not None:
            correct += merge[label] == merge[(label + 1) % 4]
    return correct / len(styles)


Run = Callable[..., subprocess.CompletedProcess]


@contextmanager
def serve_world(tmp_path: Path) -> Iterator[tuple[Run, OpenAIStub, FileServer, Path]]:
    """Serve the data and the model; yield ``(run, stub, server, tmp_path)``, where ``run(*args)``
    runs ``pytest cases`` with the user config ``tmp_path / "user.toml"``."""
    files = build_data(np.random.default_rng(7))
    with FileServer(files) as server, OpenAIStub(delay_s=0.01) as stub:
        cfg = tmp_path / "user.toml"
        cfg.write_text(user_config(server, stub, files))
        env = {
            **os.environ,
            "ASTROBENCH_CACHE_DIR": str(tmp_path / "cache"),
            "ASTROBENCH_CASSETTE_DIR": str(tmp_path / "cassettes-from-test-server"),
            "ASTROBENCH_E2E_KEY": KEY,
            "PYTHONPATH": str(REPO),
            # the built-in open model (smolvlm): the hub offline and an empty cache, so its
            # cases are skipped (a developer's cached weights are never used)
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_CACHE": str(tmp_path / "empty-hf-cache"),
        }
        env.pop("ASTROBENCH_CONFIG", None)

        def run(*args: str, extra_env: dict | None = None, mode: str = "once") -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "pytest", "cases", "--bench-config", str(cfg),
                 "-p", "no:cacheprovider", "--bench-no-progress", "--record-mode", mode, *args],
                cwd=REPO, env={**env, **(extra_env or {})}, capture_output=True, text=True, timeout=300, check=False,
            )

        yield run, stub, server, tmp_path
