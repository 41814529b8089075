"""The small value types that flow through the benchmark.

task config -> Sample -> Request -> provider -> Answer -> parser -> metrics.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import numpy as np


class BenchError(Exception):
    """A problem the user can fix: bad config, bad data, bad cassette.

    The message always says what was expected and what was found.
    """


class Unavailable(BenchError):
    """Something a case needs cannot be had right now (data offline, no API key).

    Cases that hit this are skipped with the message, never passed or crashed.
    """


class DatasetUnavailable(Unavailable):
    """The data is neither cached nor downloadable right now (e.g. offline)."""


class ModelUnavailable(Unavailable):
    """A live call is needed and the model cannot be asked now: its API key is not set, or its
    local weights are neither cached nor downloadable (in record mode ``once``: ``make bench``)."""


@contextmanager
def atomic_writer(path: Path | str) -> Iterator[IO[bytes]]:
    """A binary file that appears at ``path`` only once fully written (temp file in the
    same folder, fsync, rename); on an error nothing appears."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path | str, data: str | bytes) -> None:
    """Write a file so that a crash never leaves it half-written (temp file, fsync, rename
    in the same folder)."""
    with atomic_writer(path) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def image_digest(image: np.ndarray) -> str:
    """sha256 of a uint8 HxWx3 image: shape header + C-order pixel bytes.

    Independent of any PNG encoder, so it is stable across Pillow versions.
    """
    arr = np.ascontiguousarray(image, dtype=np.uint8)
    h = hashlib.sha256(f"{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``id`` is stable (source index or relative path)."""

    id: str
    image: np.ndarray  # uint8, H x W x 3
    label: int

    @cached_property
    def sha256(self) -> str:
        """Computed once per sample (requests, cassette checks and freezing share it)."""
        return image_digest(self.image)


class LazySample:
    """One labelled image of a dataset that stays on disk: ``image`` reads it each time it
    is asked (the caller drops it when done); ``sha256`` is computed once and kept (or given
    by the source, e.g. a frozen sample, so a replay never reads the image)."""

    __slots__ = ("id", "label", "read", "_sha256")

    def __init__(self, id: str, label: int, read: Callable[[], np.ndarray], sha256: str | None = None) -> None:
        self.id, self.label, self.read, self._sha256 = id, label, read, sha256

    @property
    def image(self) -> np.ndarray:
        return self.read()

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = image_digest(self.read())
        return self._sha256

    def __repr__(self) -> str:
        return f"LazySample(id={self.id!r}, label={self.label})"


ImageLoader = Callable[[], np.ndarray]


@dataclass(frozen=True)
class Example:
    """A labelled example image shown before the query image (few-shot prompts)."""

    id: str  # the dataset's sample id; never one of the evaluated sample (benchmark.fewshot)
    label: int
    image: np.ndarray  # uint8, H x W x 3
    text: str  # the text part sent right before the image, e.g. "Example of category 1:"
    image_sha256: str = ""

    def __post_init__(self) -> None:
        if not self.image_sha256:
            object.__setattr__(self, "image_sha256", image_digest(self.image))


@dataclass(frozen=True)
class Request:
    """One classification request: a prompt, and an image or a second text part.

    Parts are sent in this order: ``prompt``, each example (its text, its image), ``text``, ``image``.
    ``image`` is the pixels, or a loader that reads them (a dataset's image stays on
    disk until a provider sends it); use :meth:`load_image`.
    """

    sample_id: str
    prompt: str
    image: np.ndarray | ImageLoader | None  # None for text-only requests (e.g. answer extraction)
    n_classes: int
    image_sha256: str = ""
    text: str | None = None  # a text part before the image: what an extractor reads, or few-shot's query text
    repeat: int = 0  # which repeat of the same request (``repeats``); part of the recording key when > 0
    examples: tuple[Example, ...] = ()  # few-shot: the same labelled examples for every query of a case
    shift: int = 0  # which label shift of a permuted prompt (``permute_labels``); in the recording key when > 0

    def __post_init__(self) -> None:
        if not self.image_sha256 and self.image is not None:
            object.__setattr__(self, "image_sha256", image_digest(self.load_image()))

    def load_image(self) -> np.ndarray | None:
        """The image's pixels (read now when ``image`` is a loader; not kept), or None."""
        return self.image() if callable(self.image) else self.image


@dataclass
class Answer:
    """What a provider returned for one request.

    ``raw`` is the model's text; ``label`` is the class index if the provider
    already knows it (score mode), otherwise the session fills it from the
    parser. ``None`` means unparseable, never a default class. ``refusal``
    holds the model's refusal text when it declined to answer (an outcome
    of its own, counted apart from unparseable).
    """

    sample_id: str
    raw: str
    label: int | None = None
    probs: list[float] | None = None
    usage: dict[str, int] = field(default_factory=dict)
    latency_s: float = 0.0
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # provider extras (e.g. both-mode labels)
    refusal: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "sample_id": self.sample_id,
            "raw": self.raw,
            "label": self.label,
            "probs": self.probs,
            "usage": self.usage,
            "latency_s": self.latency_s,
            "error": self.error,
            "meta": self.meta,
            "refusal": self.refusal,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Answer:
        return cls(
            sample_id=str(data["sample_id"]),
            raw=data.get("raw", ""),
            label=data.get("label"),
            probs=data.get("probs"),
            usage=dict(data.get("usage") or {}),
            latency_s=float(data.get("latency_s") or 0.0),
            error=data.get("error"),
            meta=dict(data.get("meta") or {}),
            refusal=data.get("refusal"),
        )
