"""One case's recorded answers: the committed log, its journal and its lock.

Files, for a recording ``X.jsonl``:

* ``X.jsonl``: the committed recording, what version control and CI see.
  Written only atomically (temp file, fsync, rename), sorted, with a
  header saying whether it is ``complete`` (answers for the whole sample).
* ``X.jsonl.journal``: answers recorded by the run in progress, appended
  and fsync'd one by one. A clean end (success, failure or Ctrl-C) folds
  it into ``X.jsonl``; only a killed process leaves it behind.
* ``X.jsonl.lock``: held by the one process recording ``X``; a second
  recorder waits for it, then replays what the first one recorded.
* ``X.jsonl.batches``: the OpenAI batches submitted for ``X`` and not yet
  collected (``benchmark.providers.openai_batch``), so a killed run
  resumes them instead of paying twice.

Record modes (pytest-recording's ``--record-mode``) are applied here and
only here: ``none`` replays only; ``once`` records what is missing until
the recording is complete, then replays only; ``new_episodes`` records
what is missing; ``all`` asks again for every requested answer and keeps
the others; ``rewrite`` asks again for everything and replaces the
recording. Nothing recorded is deleted before its replacement is
complete: an interrupted ``all``/``rewrite`` keeps its journal, and the
same command resumes it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmark.core import BenchError, write_atomic
from benchmark.recording.log import (FORMAT, Appender, Entry, LogContent, compact_texts, iter_lines, prompt_line,
                                     read_log, record_line)

RECORD_MODES = ("none", "once", "new_episodes", "all", "rewrite")
_RENEWING = ("all", "rewrite")  # modes that ask again for what is recorded


def stderr_notice(msg: str) -> None:
    """Where a notice goes without a terminal reporter (``astrobench: ...`` on stderr)."""
    print(f"astrobench: {msg}", file=sys.stderr, flush=True)


def journal_path(path: Path) -> Path:
    return Path(f"{path}.journal")


def lock_path(path: Path) -> Path:
    return Path(f"{path}.lock")


def batches_path(path: Path) -> Path:
    return Path(f"{path}.batches")


class RecordingWriteError(BenchError):
    """An answer could not be written: the run must stop asking."""


class Recording:
    """``with Recording(path, mode=...) as rec:`` around one case's answers.

    ``get`` serves recorded answers, ``put`` journals a new one durably,
    ``finish(complete=...)`` marks a successful run; leaving the ``with``
    folds the journal into the committed file (see the module docstring).
    """

    def __init__(self, path: Path | str, *, mode: str, scrub: Callable[[Any], Any] | None = None,
                 announce: Callable[[str], None] = stderr_notice, resolve_hint: str = "") -> None:
        if mode not in RECORD_MODES:
            raise BenchError(f"expected --record-mode in {RECORD_MODES}, found {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self.scrub = scrub or (lambda x: x)
        self.announce = announce
        self.resolve_hint = resolve_hint  # the command that records this case, for messages
        self.committed = LogContent({"format": FORMAT, "complete": False}, {}, {})
        self.journaled: dict[str, Entry] = {}
        self._journal_prompts: dict[str, str] = {}
        self._appender: Appender | None = None
        self._lock: Any = None
        self._finished: bool | None = None  # complete flag of a successful run
        self._by_sample: dict[str, list[Entry]] | None = None
        self.added = 0

    # -- opening ------------------------------------------------------------------
    @property
    def records(self) -> bool:
        return self.mode != "none"

    def __enter__(self) -> Recording:
        if self.records:
            self._acquire()
        try:
            self._open()
        except BaseException:
            self._release()
            raise
        return self

    def _acquire(self) -> None:
        from filelock import FileLock, Timeout

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(lock_path(self.path)))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                self.announce(f"another process is recording {self.path}; waiting for it to finish "
                              f"(lock {lock_path(self.path)})")
                lock.acquire()
        except OSError as exc:
            raise BenchError(f"cannot record into {self.path.parent}: {exc}; make the folder writable "
                             "or choose another with --bench-cassette-dir") from None
        self._lock = lock
        if self.path.exists() and not os.access(self.path, os.W_OK):
            self._release()
            raise BenchError(f"cannot record into {self.path}: the file is not writable")

    def _someone_else_records(self) -> bool:
        from filelock import FileLock, Timeout

        lock = FileLock(str(lock_path(self.path)))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        except OSError:
            return False
        lock.release()
        return False

    def _open(self) -> None:
        committed = read_log(self.path)
        if committed is not None:
            self.committed = committed
        jpath = journal_path(self.path)
        if not jpath.exists() or jpath.stat().st_size == 0:
            return
        if not self.records:
            if self._someone_else_records():
                self.announce(f"{self.path} is being recorded by another process; replaying the "
                              "answers committed so far")
                return
            journal = read_log(jpath)
            n = len(journal.entries) if journal else 0
            jmode = journal.header.get("mode", "new_episodes") if journal else "new_episodes"
            raise BenchError(
                f"{jpath} holds {n} answers of an interrupted --record-mode {jmode} run that are not in "
                f"{self.path}, so this replay would differ from one of the committed file. Fold them in "
                f"with:\n  {self._hint(jmode)}\nor delete {jpath} to discard them")
        journal = read_log(jpath, repair=True)
        if journal is None:
            return
        jmode = journal.header.get("mode", "new_episodes")
        if jmode in _RENEWING:
            if jmode != self.mode:
                raise BenchError(
                    f"{jpath} holds {len(journal.entries)} answers of an unfinished --record-mode {jmode} "
                    f"run; resume it with:\n  {self._hint(jmode)}\nor delete {jpath} to discard them")
            self.journaled = dict(journal.entries)
            self._journal_prompts = dict(journal.prompts)
            self.announce(f"resuming the interrupted --record-mode {jmode} run of {self.path}: "
                          f"{len(journal.entries)} answers already recorded")
            self._appender = Appender(jpath, {})
            return
        # an interrupted once/new_episodes run: its answers are additions, fold them in now
        self.journaled = dict(journal.entries)
        self._journal_prompts = dict(journal.prompts)
        self._fold(complete=bool(self.committed.header.get("complete")))
        self.announce(f"recovered {len(journal.entries)} answers of an interrupted recording from {jpath} "
                      f"and folded them into {self.path}")

    def _hint(self, mode: str) -> str:
        base = self.resolve_hint or "pytest ..."
        return f"{base} --record-mode {mode}"

    # -- reading ------------------------------------------------------------------
    @property
    def strict(self) -> bool:
        """True when a missing answer is an error, not something to record."""
        return self.mode == "none" or (self.mode == "once" and bool(self.committed.header.get("complete")))

    def get(self, key: str) -> Entry | None:
        """The recorded answer to use for ``key`` in this mode, if any."""
        hit = self.journaled.get(key)
        if hit is None and self.mode not in _RENEWING:
            hit = self.committed.entries.get(key)
        return hit

    def entries_for(self, sample: str) -> list[Entry]:
        """Every record of a sample id (for the changed-dataset check)."""
        if self._by_sample is None:
            self._by_sample = {}
            for e in (*self.committed.entries.values(), *self.journaled.values()):
                self._by_sample.setdefault(e.sample, []).append(e)
        return self._by_sample.get(sample, [])

    # -- writing ------------------------------------------------------------------
    def put(self, key: str, *, sample: str, img: str, request: dict[str, Any], payload: dict[str, Any],
            sync: bool = True) -> None:
        """Journal one answer durably (``payload``: ``{"response": ...}`` or ``{"answer": ...}``);
        ``sync=False``: durable at the next :meth:`sync` (an answer its source can give again until then)."""
        if not self.records:
            raise BenchError("internal: put() on a replay-only recording")
        prompts: dict[str, str] = {}
        rest = compact_texts(self.scrub({"request": request, **payload}), prompts)
        line = record_line(key, sample, img, rest)
        try:
            if self._appender is None:
                self._appender = Appender(journal_path(self.path), {"format": FORMAT, "journal": True,
                                                                    "mode": self.mode, "started": time.time()})
            for d, text in prompts.items():
                if d not in self._journal_prompts:
                    self._appender.append(prompt_line(d, text))
                    self._journal_prompts[d] = text
            if sync:
                self._appender.append(line)
            else:
                self._appender.append(line, sync=False)
        except OSError as exc:
            raise RecordingWriteError(
                f"writing an answer to {journal_path(self.path)} failed ({exc}); stopped asking. "
                f"The {self.added} answers recorded before are kept; answers not yet written will be "
                f"asked again by the next run:\n  {self._hint(self.mode)}") from None
        self.journaled[key] = Entry(key, sample, img, line, journal_path(self.path), 0)
        self.added += 1

    def sync(self) -> None:
        """Make every answer put so far durable (see ``put(sync=False)``)."""
        if self._appender is None:
            return
        try:
            self._appender.sync()
        except OSError as exc:
            raise RecordingWriteError(f"writing answers to {journal_path(self.path)} failed ({exc}); stopped. "
                                      f"Rerun to ask again for what was not written:\n  {self._hint(self.mode)}"
                                      ) from None

    def finish(self, *, complete: bool) -> None:
        """The run got every answer it asked for; ``complete``: that was the whole sample."""
        self._finished = complete

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            if self.records:
                self._close()
        finally:
            self._release()

    def _close(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None
        ok = self._finished is not None
        was_complete = bool(self.committed.header.get("complete"))
        if self.mode in _RENEWING:
            if not ok:
                if self.journaled:
                    self.announce(f"the --record-mode {self.mode} run of {self.path} did not finish: its "
                                  f"{len(self.journaled)} new answers are kept in {journal_path(self.path)} "
                                  f"and {self.path} is unchanged; the same command resumes it")
                return
            if self.mode == "rewrite":
                self.committed = LogContent({"format": FORMAT}, {}, {})
                self._fold(complete=bool(self._finished))
            else:
                self._fold(complete=was_complete or bool(self._finished))
            return
        if self.journaled:
            self._fold(complete=was_complete or bool(ok and self._finished))
        elif ok and self._finished and not was_complete and self.committed.entries:
            self._fold(complete=True)

    def _fold(self, *, complete: bool) -> None:
        """Write committed + journal atomically, then drop the journal."""
        entries: dict[str, Entry] = {**self.committed.entries, **self.journaled}
        prompts = {**self.committed.prompts, **self._journal_prompts}
        ordered = sorted(entries.values(), key=lambda e: (_natural(e.sample), e.key))
        header = {"format": FORMAT, "complete": complete}
        data = b"\n".join(iter_lines(header, prompts, [e.line for e in ordered])) + b"\n"
        try:
            write_atomic(self.path, data)
        except OSError as exc:
            raise RecordingWriteError(
                f"could not write {self.path} ({exc}); the new answers are safe in "
                f"{journal_path(self.path)}; free space or fix permissions, then rerun:\n  "
                f"{self._hint(self.mode if self.mode in _RENEWING else 'new_episodes')}") from None
        journal_path(self.path).unlink(missing_ok=True)
        first = 2 + len(prompts)  # the header, then one line per prompt text, then the records
        self.committed = LogContent(header, prompts, {e.key: replace(e, path=self.path, lineno=first + i)
                                                      for i, e in enumerate(ordered)})
        self.journaled = {}
        self._journal_prompts = {}

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _natural(sample: str) -> tuple:
    return (0, int(sample), "") if sample.isdigit() else (1, 0, sample)
