"""The OpenAI Batch API for the answers a case has not recorded (``batch = true``).

The requests are written as JSON lines (``custom_id``: the request's recording
key; ``body``: exactly the body a live call sends), uploaded
(``files.create(purpose="batch")``) and submitted (``batches.create``), split
to stay under the API's limits per file. Each batch's id is journaled next
to the recording (``<recording>.batches``, written atomically) the moment it
exists, so a killed run polls the same batch again instead of paying twice;
an entry is cleared once every answer of its batch is recorded.

The batches are polled every ``batch_poll_s`` seconds with a status line.
Their output and error files are downloaded; each 2xx line's body goes
through the live answers' parser and is handed over with its recorded form
(``{"response": <compact completion>, "via": "batch"}``) under the key a live
call would have, so a replay reads it as it reads a live answer (``via``
only changes the price: ``prices.batch``).

A line with a 5xx, a malformed body, one the batch did not run before it
expired, or one missing from its output is asked again: live (``batch_retry
= "live"``, the default) or in a new batch (``"batch"``, at most
``max_retries`` more). A 4xx line (a request the server refuses), a failed
or a cancelled batch stop the run with a BenchError, after every answer
received has been handed over.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from benchmark.core import Answer, BenchError, Request, write_atomic
from benchmark.progress import Progress, _duration
from benchmark.providers.throttle import RETRIED_4XX
from benchmark.recording.completions import MalformedResponse, parse_completion
from benchmark.recording.recording import stderr_notice

ENDPOINT = "/v1/chat/completions"
JOURNAL_FORMAT = "astrobench-batches/1"
MAX_LINES = 50_000         # the Batch API's limits per input file: requests ...
MAX_BYTES = 190 * 2 ** 20  # ... and size (200 MB, with room to spare)
TERMINAL = ("completed", "expired", "cancelled", "failed")

OnBatchAnswer = Callable[[Answer, "dict[str, Any] | None"], None]  # (answer, its recorded form)


class BatchJournal:
    """The batches submitted and not yet collected: a JSON file rewritten atomically
    (``path`` None: kept in memory only, e.g. with recording disabled)."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path is not None else None
        self.batches: list[dict[str, Any]] = self._read()

    def _read(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            data = exc
        if not (isinstance(data, dict) and data.get("format") == JOURNAL_FORMAT
                and isinstance(data.get("batches"), list)
                and all(isinstance(b, dict) and isinstance(b.get("id"), str) for b in data["batches"])):
            found = repr(data)[:80]
            raise BenchError(f"{self.path}: expected a batch journal ({JOURNAL_FORMAT}), found {found}; "
                             "delete it to forget its batches (their requests are then submitted again)")
        return data["batches"]

    def of(self, model: str) -> list[dict[str, Any]]:
        return [b for b in self.batches if b.get("model") == model]

    def add(self, entry: dict[str, Any]) -> None:
        self.batches.append(entry)
        self._write()

    def remove(self, batch_id: str) -> None:
        self.batches = [b for b in self.batches if b["id"] != batch_id]
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        if not self.batches:
            self.path.unlink(missing_ok=True)
            return
        write_atomic(self.path, json.dumps({"format": JOURNAL_FORMAT, "batches": self.batches}) + "\n")


@dataclass
class _Batch:
    """One submitted batch as this run follows it."""

    id: str
    keys: list[str]
    submitted: float  # time.time() of its creation
    status: str = "validating"
    completed: int = 0
    failed: int = 0
    foreign: int = 0  # answers for requests this run does not ask: the batch stays journaled for them


class BatchRunner:
    """``BatchRunner(provider, client, journal=...).run(requests, keys, on_answer)``: the
    requests' answers through the Batch API (module docstring); returns those left for live calls."""

    def __init__(self, provider: Any, client: Any, *, journal: BatchJournal, progress: Progress | None = None,
                 announce: Callable[[str], None] | None = None, sync: Callable[[], None] | None = None,
                 recorded: Callable[[str], bool] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.provider = provider
        self.client = client
        self.settings = provider.settings
        self.journal = journal
        self.progress = progress
        self.announce = announce or stderr_notice
        self.sync = sync or (lambda: None)
        self.recorded = recorded or (lambda key: False)  # is this key's answer in the recording already?
        self.sleep = sleep
        self.max_lines, self.max_bytes = MAX_LINES, MAX_BYTES
        self._kept = (f"its id is journaled in {journal.path}" if journal.path is not None else
                      "its id is not journaled (recording is off)")

    # -- the whole exchange -----------------------------------------------------------
    def run(self, requests: Sequence[Request], keys: Sequence[str], on_answer: OnBatchAnswer) -> list[Request]:
        if len(keys) != len(requests) or len(set(keys)) != len(keys):
            raise BenchError(f"internal: expected one distinct key per request, found {len(set(keys))} keys "
                             f"for {len(requests)} requests")
        by_key = dict(zip(keys, requests))
        problems: list[str] = []
        batches = self._resume(by_key)
        covered = {k for b in batches for k in b.keys}
        self._submit([k for k in keys if k not in covered], by_key, batches, problems)
        failed = self._collect(batches, by_key, on_answer, problems)
        rounds = 1
        while failed and not problems and self.settings["batch_retry"] == "batch" \
                and rounds <= self.settings["max_retries"]:
            self.announce(f"{self.provider.name}: asking {len(failed)} requests again in a new batch "
                          f"(retry {rounds} of {self.settings['max_retries']})")
            again: list[_Batch] = []
            self._submit(list(failed), by_key, again, problems)
            failed = self._collect(again, by_key, on_answer, problems)
            rounds += 1
        if problems:
            left = f"; {len(failed)} more requests got no answer" if failed else ""
            raise BenchError(f"model {self.provider.name!r}: " + "; ".join(problems) + left
                             + ". Every answer received is recorded; rerun to ask the rest")
        if failed and self.settings["batch_retry"] == "live":
            self.announce(f"{self.provider.name}: {len(failed)} requests the batch did not answer are asked live "
                          f"(e.g. {next(iter(failed.values()))})")
            return [by_key[k] for k in failed]
        for key, why in failed.items():
            on_answer(Answer(by_key[key].sample_id, raw="", error=f"no answer after {rounds} batches: {why}"), None)
        return []

    # -- submitting ---------------------------------------------------------------------
    def _resume(self, by_key: dict[str, Request]) -> list[_Batch]:
        """The journaled batches of this model, followed again instead of submitted again."""
        out = []
        for entry in self.journal.of(self.provider.name):
            keys = [str(k) for k in entry.get("requests") or []]
            mine = sum(1 for k in keys if k in by_key)
            if keys and not mine:  # paid answers for other requests: kept until a run asks for them
                self.announce(f"{self.provider.name}: batch {entry['id']} journaled in {self.journal.path} holds "
                              f"{len(keys)} answers for requests this run does not ask; kept for the run that "
                              "asks them (delete its entry to forget it)")
                continue
            self.announce(f"{self.provider.name}: resuming batch {entry['id']} ({len(keys)} requests, {mine} of "
                          f"them asked now) journaled in {self.journal.path}, not submitting them again")
            out.append(_Batch(entry["id"], keys, float(entry.get("submitted") or time.time())))
        return out

    def _submit(self, keys: list[str], by_key: dict[str, Request], out: list[_Batch], problems: list[str]) -> None:
        """Upload and create batches of ``keys`` (split at the API's limits) into ``out``, journaling
        each one; a refused or failed submission goes to ``problems`` (what was submitted is collected)."""
        import openai

        for fh, chunk in self._input_files(keys, by_key):
            with fh:
                try:
                    upload = self.client.files.create(file=(f"astrobench-{self.provider.name}.jsonl", fh),
                                                      purpose="batch")
                    batch = self.client.batches.create(
                        input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h",
                        metadata={"source": "astrobench", "model": self.provider.name, "requests": str(len(chunk))})
                except openai.APIError as exc:
                    problems.append(self._scrub(f"submitting a batch of {len(chunk)} requests failed "
                                                f"({_describe(exc)})"))
                    return
            b = _Batch(batch.id, chunk, time.time())
            try:
                self.journal.add({"id": batch.id, "input_file_id": upload.id, "model": self.provider.name,
                                  "submitted": b.submitted, "requests": chunk})
            except OSError as exc:
                self.announce(f"could not journal batch {batch.id} in {self.journal.path} ({exc}): if this run "
                              "is killed, the batch is not resumed")
            self.announce(f"{self.provider.name}: submitted batch {batch.id} ({len(chunk)} requests, input file "
                          f"{upload.id}); {self._kept} until it is collected")
            out.append(b)

    def _input_files(self, keys: list[str], by_key: dict[str, Request]) -> Iterator[tuple[IO[bytes], list[str]]]:
        """JSONL input files of at most ``max_lines`` lines and ``max_bytes`` bytes, written as they fill."""
        fh: IO[bytes] | None = None
        chunk: list[str] = []
        size = 0
        for key in keys:
            line = json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT,
                               "body": self.provider.request_body(by_key[key])},
                              separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
            if fh is not None and (len(chunk) >= self.max_lines or size + len(line) > self.max_bytes):
                fh.seek(0)
                yield fh, chunk
                fh, chunk, size = None, [], 0
            if fh is None:
                fh = tempfile.TemporaryFile()
            fh.write(line)
            chunk.append(key)
            size += len(line)
        if fh is not None:
            fh.seek(0)
            yield fh, chunk

    # -- polling and collecting -------------------------------------------------------------
    def _collect(self, batches: list[_Batch], by_key: dict[str, Request], on_answer: OnBatchAnswer,
                 problems: list[str]) -> dict[str, str]:
        """Poll until every batch has ended, handing over each one's answers as it ends;
        returns the keys to ask again, with why."""
        import openai

        failed: dict[str, str] = {}
        pending = list(batches)
        shown: tuple[Any, ...] = ()
        try:
            while pending:
                ended = []
                for b in list(pending):
                    try:
                        info = self.client.batches.retrieve(b.id)
                    except openai.NotFoundError:
                        self.announce(f"{self.provider.name}: batch {b.id} is unknown to the server (a different "
                                      "base_url or account?); forgetting it, its requests are asked again")
                        failed.update({k: f"batch {b.id} unknown to the server" for k in b.keys if k in by_key})
                        self._done(b, pending)
                        continue
                    except openai.APIError as exc:
                        raise BenchError(self._scrub(
                            f"model {self.provider.name!r}: polling batch {b.id} failed ({_describe(exc)}); the "
                            f"batch goes on on the server and {self._kept}: rerun the same command to collect "
                            "it")) from None
                    counts = info.request_counts
                    b.status = info.status
                    b.completed, b.failed = (counts.completed, counts.failed) if counts is not None else (0, 0)
                    if info.status in TERMINAL:
                        ended.append((b, info))
                state = tuple((b.status, b.completed, b.failed) for b in batches)
                self._show(batches, news=state != shown)
                shown = state
                for b, info in ended:  # answers are recorded before the journal entry goes
                    failed.update(self._take(b, info, by_key, on_answer, problems))
                    self._done(b, pending)
                if pending:
                    self.sleep(float(self.settings["batch_poll_s"]))
        except KeyboardInterrupt:
            if pending:
                self.announce(f"interrupted: {len(pending)} batches go on on the server"
                              + (f"; their ids are journaled in {self.journal.path}: rerun the same command to "
                                 "collect them" if self.journal.path is not None else ""))
            raise
        return failed

    def _done(self, b: _Batch, pending: list[_Batch]) -> None:
        """Forget an ended batch, once the answers handed over are durable, unless it holds
        answers for requests this run does not ask (paid for: a later run records them)."""
        self.sync()
        pending.remove(b)
        if not b.foreign:
            self.journal.remove(b.id)

    def _show(self, batches: list[_Batch], *, news: bool) -> None:
        if self.progress is None:
            return
        statuses = ", ".join(dict.fromkeys(b.status for b in batches))
        which = batches[0].id if len(batches) == 1 else f"{len(batches)} batches"
        total = sum(len(b.keys) for b in batches)
        elapsed = _duration(max(0.0, time.time() - min(b.submitted for b in batches)))
        self.progress.status(f"batch {which} {statuses}: {sum(b.completed for b in batches)} completed, "
                             f"{sum(b.failed for b in batches)} failed of {total}, {elapsed} since submitted",
                             news=news)

    def _take(self, b: _Batch, info: Any, by_key: dict[str, Request], on_answer: OnBatchAnswer,
              problems: list[str]) -> dict[str, str]:
        """Hand over every answer of an ended batch; the keys to ask again, with why."""
        failed: dict[str, str] = {}
        refused: dict[str, str] = {}
        answered: set[str] = set()
        foreign = 0
        for file_id in (info.output_file_id, info.error_file_id):
            for key, completion, status, why in self._lines(file_id):
                if key not in by_key:
                    foreign += not self.recorded(key)
                elif key in answered:
                    continue
                elif completion is not None:
                    request = by_key[key]
                    answer = self.provider.answer_of(request.sample_id, completion, request.n_classes, via="batch")
                    on_answer(answer, {"response": completion, "via": "batch"})
                    answered.add(key)
                    failed.pop(key, None)
                    refused.pop(key, None)
                elif status is not None and 400 <= status < 500 and status not in RETRIED_4XX:
                    refused[key] = f"sample {by_key[key].sample_id}: {why}"
                else:
                    failed.setdefault(key, why)
        b.foreign = foreign
        if foreign:
            self.announce(f"{self.provider.name}: {foreign} answers of batch {b.id} are for requests this run does "
                          "not ask (a smaller --bench-limit, or a changed prompt or sample); the batch stays "
                          f"journaled in {self.journal.path}, so the run that asks them records them without "
                          "paying again (delete its entry to forget it)")
        if info.status in ("failed", "cancelled"):
            errors = getattr(getattr(info, "errors", None), "data", None) or []
            detail = "; ".join(f"line {e.line}: {e.code}: {e.message}" if e.line is not None else
                               f"{e.code}: {e.message}" for e in errors[:3])
            problems.append(self._scrub(f"batch {b.id} {info.status} ({detail or 'no detail given'}) after "
                                        f"{len(answered)} of {len(b.keys)} answers"))
            return {}
        for key in refused:
            failed.pop(key, None)
        if refused:
            problems.append(f"the server refused {len(refused)} requests of batch {b.id} "
                            f"(e.g. {next(iter(refused.values()))})")
        lost = "not run before the batch expired" if info.status == "expired" else "missing from the batch's output"
        for key in b.keys:
            if key in by_key and key not in answered and key not in failed and key not in refused:
                failed[key] = f"{lost} (batch {b.id})"
        return failed

    def _lines(self, file_id: str | None) -> Iterator[tuple[str, dict[str, Any] | None, int | None, str]]:
        """(custom id, compact completion or None, HTTP status, why it failed) per line of a result file."""
        if not file_id:
            return
        import openai

        try:
            text = self.client.files.content(file_id).text
        except openai.APIError as exc:
            raise BenchError(self._scrub(f"model {self.provider.name!r}: downloading batch results {file_id} failed "
                                         f"({_describe(exc)}); rerun the same command to collect them")) from None
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                key = str(data["custom_id"])
            except (ValueError, KeyError, TypeError):
                self.announce(f"{file_id}:{n}: expected a batch result line with a custom_id, found {line[:60]!r}")
                continue
            response = data.get("response") if isinstance(data.get("response"), dict) else {}
            error = data.get("error") if isinstance(data.get("error"), dict) else {}
            status = response.get("status_code")
            status = status if isinstance(status, int) else None
            if status is not None and 200 <= status < 300:
                try:
                    yield key, parse_completion(response.get("body")), status, ""
                except MalformedResponse as exc:
                    yield key, None, status, self._scrub(str(exc))
                continue
            body = response.get("body") if isinstance(response.get("body"), dict) else {}
            message = error.get("message") or (body.get("error") or {}).get("message") or "no message"
            yield key, None, status, self._scrub(f"{status or error.get('code') or 'error'}: {message}")

    def _scrub(self, text: str) -> str:
        return self.provider._scrub(text)


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__}{f' {status}' if status else ''}: {getattr(exc, 'message', exc)}"
