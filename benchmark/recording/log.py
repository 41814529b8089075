"""The one on-disk format of recorded answers: a JSON-lines log.

Line 1 is a header (``{"format": ..., ...}``); then prompt definitions
(``{"prompt": DIGEST, "text": ...}``, each long text stored once) and
records (``{"key": ..., "sample": ..., "img": ..., "request": ...,
"response" | "answer": ...}``). A record line always starts with its key,
sample id and image digest in that order, so an index is built with one
regular expression per line and a record is JSON-parsed only when it is
used: ``--bench-limit N`` parses N records, not the whole file.

Appends are flushed and fsync'd before the writer goes on, so a killed run
keeps every answer it got. A torn last line (the process died mid-write)
is cut off by the lock holder; any other bad line is an error naming the
file and line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.core import BenchError

FORMAT = "astrobench-recording/1"
_RECORD = re.compile(rb'^\{"key":"([0-9a-f]{64})","sample":("(?:[^"\\]|\\.)*"),"img":"([0-9a-f]{64}|)"')
_PROMPT_MIN = 64  # texts longer than this are stored once, as a prompt definition


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def loads_line(path: Path, lineno: int, line: bytes) -> Any:
    """JSON of one line, or a BenchError naming the file and line (also for crafted nesting)."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError) as exc:
        what = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise BenchError(f"{path}:{lineno}: expected one JSON object per line, found {line[:60]!r}... "
                         f"({what}); restore the file from version control or delete the line") from None


@dataclass
class Entry:
    """One recorded answer, parsed lazily."""

    key: str
    sample: str
    img: str
    line: bytes
    path: Path
    lineno: int

    def data(self) -> dict[str, Any]:
        """The record, parsed now and not kept (a replay of n answers holds their lines, not
        n parsed records as well)."""
        data = loads_line(self.path, self.lineno, self.line)
        if not isinstance(data, dict):
            raise BenchError(f"{self.path}:{self.lineno}: expected a record object, found "
                             f"{type(data).__name__}")
        return data

    def where(self) -> str:
        return f"{self.path}:{self.lineno}"


@dataclass
class LogContent:
    header: dict[str, Any]
    prompts: dict[str, str]
    entries: dict[str, Entry]


def read_log(path: Path, *, repair: bool = False) -> LogContent | None:
    """Header, prompt texts and records of the log at ``path`` (None if absent).

    ``repair`` (lock holder only) cuts a torn last line off the file.
    Two records with the same key must hold the same answer, or the log is
    inconsistent and this raises, naming both lines.
    """
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BenchError(f"cannot read recorded answers {path}: {exc}") from None
    lines = blob.split(b"\n")
    if lines and not blob.endswith(b"\n") and lines[-1]:
        torn = lines.pop()  # the last write never finished
        try:
            json.loads(torn)
            lines.append(torn)  # complete JSON, only the newline is missing
        except (ValueError, RecursionError):
            if repair:
                os.truncate(path, len(blob) - len(torn))
    header: dict[str, Any] | None = None
    prompts: dict[str, str] = {}
    entries: dict[str, Entry] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        m = _RECORD.match(line)
        if header is None:
            header = loads_line(path, lineno, line)
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                found = header.get("format") if isinstance(header, dict) else type(header).__name__
                raise BenchError(f"{path}:{lineno}: expected a first line with format {FORMAT!r}, "
                                 f"found {found!r}; this is not an astrobench recording (re-record it "
                                 "with --record-mode rewrite, or restore it from version control)")
            continue
        if m is None:
            obj = loads_line(path, lineno, line)
            if not (isinstance(obj, dict) and isinstance(obj.get("prompt"), str)
                    and isinstance(obj.get("text"), str)):
                raise BenchError(f"{path}:{lineno}: expected a record or a prompt definition, "
                                 f"found {line[:60]!r}...")
            prompts[obj["prompt"]] = obj["text"]
            continue
        key = m.group(1).decode()
        entry = Entry(key, json.loads(m.group(2)), m.group(3).decode(), line, path, lineno)
        old = entries.get(key)
        if old is not None and old.line != line and _answer_part(old) != _answer_part(entry):
            raise BenchError(f"{path}: lines {old.lineno} and {lineno} hold different answers for the "
                             f"same request (key {key[:16]}...); keep one of them (a merge gone "
                             "wrong?) or re-record with --record-mode rewrite")
        entries.setdefault(key, entry)
    if header is None:
        raise BenchError(f"{path}: expected a header line with format {FORMAT!r}, found an empty file")
    return LogContent(header, prompts, entries)


def _answer_part(entry: Entry) -> Any:
    data = entry.data()
    return data.get("response", data.get("answer"))


def digest_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compact_texts(obj: Any, prompts: dict[str, str]) -> Any:
    """``obj`` with every long ``text``/``prompt`` string replaced by ``{"prompt": DIGEST}``."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in ("text", "prompt") and isinstance(v, str) and len(v) > _PROMPT_MIN:
                d = digest_text(v)
                prompts[d] = v
                out[k] = {"prompt": d}
            else:
                out[k] = compact_texts(v, prompts)
        return out
    if isinstance(obj, list):
        return [compact_texts(v, prompts) for v in obj]
    return obj


def record_line(key: str, sample: str, img: str, rest: dict[str, Any]) -> bytes:
    """A record line, key first (see the module docstring)."""
    head = f'{{"key":"{key}","sample":{json.dumps(sample, ensure_ascii=False)},"img":"{img}"'
    body = dumps(rest)
    return (head + ("," + body[1:] if body != "{}" else "}")).encode()


class Appender:
    """An open log that appends durably: each line is on disk before ``append`` returns."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self._fh = open(path, "ab")
        if new:
            self.append(dumps(header).encode())

    def append(self, line: bytes, *, sync: bool = True) -> None:
        """``sync=False``: written but not yet durable; :meth:`sync` makes it so (for answers that
        can be had again until then, e.g. a batch's output)."""
        self._fh.write(line + b"\n")
        self._fh.flush()
        if sync:
            os.fsync(self._fh.fileno())

    def sync(self) -> None:
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def prompt_line(digest: str, text: str) -> bytes:
    """A prompt definition line: a long text stored once, referred to by its digest."""
    return dumps({"prompt": digest, "text": text}).encode()


def iter_lines(header: dict[str, Any], prompts: dict[str, str], lines: list[bytes]) -> Iterator[bytes]:
    yield dumps(header).encode()
    for d in sorted(prompts):
        yield prompt_line(d, prompts[d])
    yield from lines
