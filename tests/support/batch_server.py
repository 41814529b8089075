"""A loopback OpenAI Files + Batches API on top of the chat-completions stand-in.

:class:`BatchServer` is an :class:`~tests.support.openai_stub.OpenAIStub` (the chat endpoint, for
live retries, on the same ``base_url``) that also serves ``POST /v1/files`` (multipart,
``purpose=batch``), ``GET /v1/files/{id}/content``, ``POST /v1/batches`` and
``GET /v1/batches/{id}`` as the OpenAI API does. Each batch line is answered as the stub answers
the same body (from the image's marked pixel; usage 100 + 5 tokens), with the completion ids a
fresh stub gives when asked the lines one by one in order, so a test knows every answer.

How each batch goes is scripted with a :class:`Plan` (queued with :meth:`BatchServer.plan`;
default: completes at the first poll): end after N polls or hold until :meth:`release`; lines in
the error file with an HTTP status, lines missing from both files, malformed 200 bodies; an
expired batch (the lines after the first ``done`` in the error file as ``batch_expired``), a
failed one (validation errors, no output), a cancelled one, or a creation refused with a 400.
``calls`` counts every endpoint.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.openai_stub import (
    OpenAIStub,
    answer_for,
    constrained_answer,
    examples_ok,
    message_parts,
    scored_alternatives,
)

ENDPOINT = "/v1/chat/completions"


@dataclass
class Plan:
    """How one batch goes (line numbers count from 0, in the input file's order)."""

    polls: int = 1                 # the batch ends at this retrieve; in_progress before it
    hold: bool = False             # in_progress until BatchServer.release(), then ends at the next retrieve
    status: str = "completed"      # completed | expired | failed | cancelled
    errors: dict[int, int] = field(default_factory=dict)  # line -> HTTP status, written to the error file
    missing: set[int] = field(default_factory=set)        # lines in neither file
    malformed: set[int] = field(default_factory=set)      # 200 lines whose body is not a chat completion
    done: int | None = None        # expired / cancelled: the first `done` lines ran, the rest did not
    refuse: bool = False           # batches.create answers 400 (no batch is made)


def completion_for(body: dict[str, Any], number: int, class_texts: Sequence[str] | None = None) -> dict[str, Any]:
    """The chat completion OpenAIStub(class_texts=...) sends for ``body`` as its ``number``-th request
    (from the last image, the query of a few-shot prompt; the first text is the prompt)."""
    parts = message_parts(body)
    images = [v for kind, v in parts if kind == "image"]
    prompt = next((v for kind, v in parts if kind == "text"), None)
    text = answer_for(images[-1], prompt, class_texts, with_examples=examples_ok(parts)) if images else "0"
    logprobs = None
    if images and body.get("logprobs"):
        logprobs = {"content": [{"token": text[:1], "logprob": -0.1,
                                 "top_logprobs": scored_alternatives(images[-1], prompt, class_texts)}]}
        text = logprobs["content"][0]["top_logprobs"][0]["token"]
    if images and ("response_format" in body or "guided_choice" in body):
        text = constrained_answer(images[-1])
        if "response_format" in body:
            text = json.dumps({"category": text})
    return {"id": f"chatcmpl-stub-{number}", "object": "chat.completion", "created": 0,
            "model": body.get("model", ""),
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105}}


class BatchServer(OpenAIStub):
    """``with BatchServer() as server:`` then point a client at ``server.base_url``."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.calls: Counter[str] = Counter()  # "files.create", "files.content", "batches.create", "batches.retrieve"
        self.files: dict[str, bytes] = {}
        self.uploads: list[list[dict[str, Any]]] = []  # each uploaded input file's lines
        self.batches: dict[str, dict[str, Any]] = {}
        self._plans: list[Plan] = []
        self._run: dict[str, dict[str, Any]] = {}  # batch id -> plan, polls seen, released, result files
        self._batch_lock = threading.Lock()
        server = self

        def do_get(h: BaseHTTPRequestHandler) -> None:
            server._batch_api(h, "GET")

        self._server.RequestHandlerClass.do_GET = do_get  # type: ignore[attr-defined]

    def plan(self, *plans: Plan) -> None:
        """The next batches go as ``plans`` say (then: completed at the first poll)."""
        with self._batch_lock:
            self._plans += plans

    def release(self) -> None:
        """Batches held by ``Plan(hold=True)`` end at their next retrieve."""
        with self._batch_lock:
            for run in self._run.values():
                run["released"] = True

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        if h.path.startswith(("/v1/files", "/v1/batches")):
            self._batch_api(h, "POST")
        else:
            super()._handle(h)

    # -- the endpoints -------------------------------------------------------------------------
    def _batch_api(self, h: BaseHTTPRequestHandler, method: str) -> None:
        h._astrobench_landed = True  # type: ignore[attr-defined]  # not a chat request: no in-flight count
        length = int(h.headers.get("Content-Length", 0))
        data = h.rfile.read(length) if length else b""
        parts = h.path.split("?")[0].strip("/").split("/")  # v1, files|batches, [id, [content]]
        with self._batch_lock:
            if method == "POST" and parts == ["v1", "files"]:
                self.calls["files.create"] += 1
                self._json(h, 200, self._create_file(h.headers.get("Content-Type", ""), data))
            elif method == "GET" and len(parts) == 4 and parts[1] == "files" and parts[3] == "content":
                self.calls["files.content"] += 1
                if parts[2] not in self.files:
                    self._json(h, 404, {"error": {"message": f"no file {parts[2]}", "type": "invalid_request_error"}})
                else:
                    self._bytes(h, self.files[parts[2]])
            elif method == "POST" and parts == ["v1", "batches"]:
                self.calls["batches.create"] += 1
                status, body = self._create_batch(json.loads(data))
                self._json(h, status, body)
            elif method == "GET" and len(parts) == 3 and parts[1] == "batches":
                self.calls["batches.retrieve"] += 1
                if parts[2] not in self.batches:
                    self._json(h, 404, {"error": {"message": f"no batch {parts[2]}", "type": "invalid_request_error"}})
                else:
                    self._json(h, 200, self._poll(parts[2]))
            else:
                self._json(h, 404, {"error": {"message": f"no route {method} {h.path}"}})

    def _create_file(self, content_type: str, data: bytes) -> dict[str, Any]:
        msg = BytesParser(policy=email_policy).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + data)
        fields = {part.get_param("name", header="content-disposition"): part for part in msg.iter_parts()}
        assert fields["purpose"].get_content().strip() == "batch", fields["purpose"].get_content()
        content = fields["file"].get_payload(decode=True)
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = content
        self.uploads.append([json.loads(line) for line in content.splitlines() if line.strip()])
        return {"id": file_id, "object": "file", "bytes": len(content), "created_at": 0,
                "filename": fields["file"].get_filename(), "purpose": "batch", "status": "processed"}

    def _create_batch(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        file_id = body.get("input_file_id")
        if file_id not in self.files:
            return 400, {"error": {"message": f"no input file {file_id}", "type": "invalid_request_error"}}
        if body.get("endpoint") != ENDPOINT or body.get("completion_window") != "24h":
            return 400, {"error": {"message": f"unexpected endpoint or window in {body}", "type": "invalid"}}
        lines = [json.loads(line) for line in self.files[file_id].splitlines() if line.strip()]
        batch_id = f"batch_{len(self.batches) + 1}"
        plan = self._plans.pop(0) if self._plans else Plan()
        if plan.refuse:
            return 400, {"error": {"message": "scripted refusal: too many enqueued tokens", "type": "invalid_request"}}
        errors = [{"code": "invalid_request", "line": n + 1, "message": f"line {n + 1}: expected a POST to "
                   f"{ENDPOINT} with a unique custom_id and a model", "param": None}
                  for n, line in enumerate(lines)
                  if line.get("method") != "POST" or line.get("url") != ENDPOINT or "model" not in line["body"]]
        if len({line["custom_id"] for line in lines}) != len(lines):
            errors.append({"code": "duplicate_custom_id", "line": None, "message": "custom ids repeat",
                           "param": None})
        if plan.status == "failed" and not errors:
            errors = [{"code": "invalid_request", "line": 1, "message": "scripted validation failure", "param": None}]
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": ENDPOINT, "errors": None, "input_file_id": file_id,
            "completion_window": "24h", "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": 0, "metadata": body.get("metadata"),
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
        self._run[batch_id] = {"plan": plan, "polls": 0, "released": False, "lines": lines,
                               "validation": errors}
        return 200, self.batches[batch_id]

    def _poll(self, batch_id: str) -> dict[str, Any]:
        batch, run = self.batches[batch_id], self._run[batch_id]
        if batch["status"] in ("completed", "expired", "failed", "cancelled"):
            return batch
        run["polls"] += 1
        plan: Plan = run["plan"]
        total = len(run["lines"])
        if run["validation"]:
            batch.update(status="failed", errors={"object": "list", "data": run["validation"]})
        elif run["polls"] < plan.polls or (plan.hold and not run["released"]):
            shown = total * run["polls"] // (plan.polls + 1) if not plan.hold else 0
            batch.update(status="in_progress", request_counts={"total": total, "completed": shown, "failed": 0})
        else:
            self._finish(batch_id, batch, run, plan)
        return batch

    def _finish(self, batch_id: str, batch: dict[str, Any], run: dict[str, Any], plan: Plan) -> None:
        ran = len(run["lines"]) if plan.done is None else plan.done
        out, err = [], []
        for n, line in enumerate(run["lines"]):
            record: dict[str, Any] = {"id": f"batch_req_{batch_id}_{n}", "custom_id": line["custom_id"]}
            if n in plan.missing:
                continue
            if n >= ran:
                if plan.status == "expired":
                    err.append({**record, "response": None, "error": {
                        "code": "batch_expired",
                        "message": "This request could not be executed before the completion window expired."}})
                continue
            if n in plan.errors:
                status = plan.errors[n]
                err.append({**record, "error": None, "response": {
                    "status_code": status, "request_id": f"req_{n}",
                    "body": {"error": {"message": f"scripted {status}", "type": "server_error" if status >= 500
                                       else "invalid_request_error"}}}})
                continue
            body = (completion_for(line["body"], n + 1, self.class_texts) if n not in plan.malformed else
                    {"id": "chatcmpl-odd", "object": "chat.completion", "choices": []})
            out.append({**record, "error": None, "response": {"status_code": 200, "request_id": f"req_{n}",
                                                              "body": body}})
        counts = {"total": len(run["lines"]), "completed": len(out), "failed": len(err)}
        batch.update(status=plan.status, request_counts=counts,
                     output_file_id=self._result_file(out), error_file_id=self._result_file(err))

    def _result_file(self, lines: list[dict[str, Any]]) -> str | None:
        if not lines:
            return None
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = "".join(json.dumps(line) + "\n" for line in lines).encode()
        return file_id

    # -- sending --------------------------------------------------------------------------------
    def _json(self, h: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        self._send(h, status, body)

    @staticmethod
    def _bytes(h: BaseHTTPRequestHandler, data: bytes) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

