"""Crash-safe response cache: answers are appended as they arrive.

One JSON object per line, keyed by :func:`request_key` (model fingerprint +
prompt + image digest). Each line is flushed and fsync'd before the next
request's answer is accepted, so a killed run keeps every answer it got and
a rerun asks the model only for what is missing. A torn last line (the
process died mid-write) is ignored on load; any other bad line is an error
naming the file and line.
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


class ResponseCache:
    """Append-only JSONL answer cache for one case (thread-safe)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._answers: dict[str, Answer] = {}
        self._digests: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        offset = 0
        for lineno, line in enumerate(lines, start=1):
            start, offset = offset, offset + len(line) + 1
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = rec["key"]
                answer = Answer.from_json(rec["answer"])
            except (ValueError, KeyError, TypeError) as exc:
                if lineno == len(lines):  # torn final write of a killed run: drop it
                    os.truncate(self.path, start)
                    continue
                raise BenchError(
                    f"{self.path}:{lineno}: expected a JSON record with 'key' and "
                    f"'answer', found {line[:80]!r} ({exc}); delete the line or the file"
                ) from exc
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
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as fh:
                fh.write(line.encode() + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            self._answers[key] = answer
            self._digests[key] = image_sha256

    def image_digests(self) -> set[str]:
        """sha256 of every image answered here (for the outside-the-sample check)."""
        return {d for d in self._digests.values() if d}

    def keys(self) -> Iterable[str]:
        return self._answers.keys()
