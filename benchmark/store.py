"""Crash-safe append-only logs, and the response cache built on one.

A log is one JSON object per line; each line is flushed and fsync'd before
the writer goes on, so a killed run keeps every answer it got. A torn last
line (the process died mid-write) is cut off when the log is read, so the
next append starts on a clean line; any other bad line is an error naming
the file and line. The response cache and the cassette journals
(``benchmark.cassettes``) both use these logs.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmark.core import Answer, BenchError, Request


def request_key(fingerprint: dict[str, Any], request: Request) -> str:
    """sha256 over everything that determines an answer."""
    payload = {
        "model": fingerprint,
        "prompt": request.prompt,
        "image_sha256": request.image_sha256,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) of every line of the log at ``path`` (none if absent)."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    out: list[tuple[int, dict[str, Any]]] = []
    offset = 0
    for lineno, line in enumerate(lines, start=1):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"expected a JSON object, found {type(record).__name__}")
        except ValueError as exc:
            if lineno == len(lines):  # torn final write of a killed run: cut it off
                os.truncate(path, start)
                continue
            raise BenchError(f"{path}:{lineno}: expected a JSON record, found {line[:80]!r} ({exc}); "
                             "delete the line or the file") from None
        out.append((lineno, record))
    return out


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one record durably (callers serialise concurrent writers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        fh.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


class ResponseCache:
    """Append-only JSONL answer cache for one case (thread-safe)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._answers: dict[str, Answer] = {}
        self._digests: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        for lineno, rec in read_records(self.path):
            try:
                key = rec["key"]
                answer = Answer.from_json(rec["answer"])
            except (KeyError, TypeError, ValueError) as exc:
                raise BenchError(f"{self.path}:{lineno}: expected a record with 'key' and 'answer' "
                                 f"({exc!r}); delete the line or the file") from None
            self._answers[key] = answer
            self._digests[key] = rec.get("image_sha256", "")

    def __len__(self) -> int:
        return len(self._answers)

    def __contains__(self, key: str) -> bool:
        return key in self._answers

    def get(self, key: str) -> Answer | None:
        return self._answers.get(key)

    def put(self, key: str, answer: Answer, *, image_sha256: str = "") -> None:
        """Persist one answer durably before returning."""
        record = {"key": key, "image_sha256": image_sha256, "answer": answer.to_json()}
        with self._lock:
            append_record(self.path, record)
            self._answers[key] = answer
            self._digests[key] = image_sha256

    def image_digests(self) -> set[str]:
        """sha256 of every image answered here (for the outside-the-sample check)."""
        return {d for d in self._digests.values() if d}

    def keys(self) -> Iterable[str]:
        return self._answers.keys()
