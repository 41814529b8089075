"""A loopback server speaking the OpenAI chat-completions protocol.

It answers deterministically from the image it receives (the last one: the
query image of a few-shot prompt): the top-left pixel carries the true label
and an answer style (see :func:`mark_image`), so a test knows exactly which
answers, and which accuracy, the stand-in implies. A ``NEEDS_EXAMPLES`` image
is answered right only after labelled examples (:func:`examples_ok`).
Two styles read the prompt too (label-order tests, ``permute_labels``):
READS_PROMPT answers the number the prompt shows for the image's class (the
stub is given words that identify each class's block, ``class_texts``), and
ZERO always answers "0".
It records every request (headers included) so tests can assert on what the
real ``openai`` client sent, and it can inject 429/5xx/slow responses, refuse
requests beyond a budget (:meth:`OpenAIStub.gate`, see ``ratelimit_server``)
and die mid-run like a crashed server (:meth:`OpenAIStub.kill`).
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import socket
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

# Answer styles: how the stub words its answer for an image.
CORRECT = 0          # "Category k"
WRONG = 1            # "**Category (k+1) mod n**"
UNPARSEABLE = 2      # "I cannot tell from this image."
VERBOSE = 3          # "The image belongs to category k."
BARE = 4             # "k"
STYLES = (CORRECT, WRONG, UNPARSEABLE, VERBOSE, BARE)
CORRECT_STYLES = {CORRECT, VERBOSE, BARE}
NEEDS_EXAMPLES = 5   # "Category k" after examples of every class (examples_ok), else as WRONG
READS_PROMPT = 6     # "Category j", j = the number the prompt shows for the class (needs class_texts)
ZERO = 7             # "0", whatever the image and the prompt


def mark_image(image: np.ndarray, *, label: int, style: int, n_classes: int) -> np.ndarray:
    """Return a copy of ``image`` whose top-left pixel tells the stub what to answer."""
    out = np.array(image, dtype=np.uint8, copy=True)
    out[0, 0, 0] = label + 10 * style
    out[0, 0, 1] = n_classes
    return out


def shown_number(prompt: str, class_text: str) -> int | None:
    """The number a prompt shows for a class: the last "Category N" before the first
    occurrence of ``class_text`` (words only that class's block holds); None if absent."""
    at = prompt.find(class_text)
    found = re.findall(r"[Cc]ategory (\d+)", prompt[:at]) if at >= 0 else []
    return int(found[-1]) if found else None


def _read(image: np.ndarray, prompt: str | None, class_texts: Sequence[str] | None) -> int | None:
    label = int(image[0, 0, 0]) % 10
    if prompt is None or not class_texts or label >= len(class_texts):
        return None
    return shown_number(prompt, class_texts[label])


def answer_for(image: np.ndarray, prompt: str | None = None, class_texts: Sequence[str] | None = None, *,
               with_examples: bool = False) -> str:
    """The answer to ``image``; ``with_examples``: the request showed labelled examples of every class;
    ``prompt`` and ``class_texts``: for READS_PROMPT images."""
    code, n = int(image[0, 0, 0]), int(image[0, 0, 1])
    label, style = code % 10, code // 10
    if n < 2:
        return "This image carries no stub marking."
    if style == NEEDS_EXAMPLES:
        style = CORRECT if with_examples else WRONG
    if style == READS_PROMPT:
        shown = _read(image, prompt, class_texts)
        return "I cannot find the category in the prompt." if shown is None else f"Category {shown}"
    if style == ZERO:
        return "0"
    if style == WRONG:
        return f"**Category {(label + 1) % n}**"
    if style == UNPARSEABLE:
        return "I cannot tell from this image."
    if style == VERBOSE:
        return f"The image belongs to category {label}."
    if style == BARE:
        return f"{label}"
    return f"Category {label}"


def scored_alternatives(image: np.ndarray, prompt: str | None = None,
                        class_texts: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Score mode's first-token alternatives: the image's label at log-probability log(0.7) (the
    wrong one for WRONG-style images, the number shown for READS_PROMPT, 0 for ZERO), the
    other labels sharing 0.2, then a non-label token."""
    code, n = int(image[0, 0, 0]), int(image[0, 0, 1])
    label, style = code % 10, code // 10
    top = (label + 1) % n if style == WRONG else label
    if style == READS_PROMPT:
        top = _read(image, prompt, class_texts)
        top = label if top is None else top
    elif style == ZERO:
        top = 0
    others = [k for k in range(n) if k != top]
    alts = [{"token": str(top), "logprob": math.log(0.7)}]
    alts += [{"token": f" {k}", "logprob": math.log(0.2 / len(others))} for k in others]
    return alts + [{"token": "The", "logprob": math.log(0.1)}]


def constrained_answer(image: np.ndarray) -> str:
    """The class a constrained request gets: WRONG-style images the wrong one, UNPARSEABLE ones
    class 0 (a constrained model must pick one), the others their label."""
    code, n = int(image[0, 0, 0]), int(image[0, 0, 1])
    label, style = code % 10, code // 10
    return str((label + 1) % n if style == WRONG else 0 if style == UNPARSEABLE else label)


def examples_ok(parts: list[tuple[str, Any]]) -> bool:
    """True when every image before the last (the query) follows a text naming its marked label
    (its last number) and the examples cover every class."""
    images = [i for i, (kind, _) in enumerate(parts) if kind == "image"][:-1]
    if not images:
        return False
    shown = set()
    for i in images:
        label, n = int(parts[i][1][0, 0, 0]) % 10, int(parts[i][1][0, 0, 1])
        numbers = re.findall(r"\d+", parts[i - 1][1]) if i and parts[i - 1][0] == "text" else []
        if not numbers or int(numbers[-1]) != label:
            return False
        shown.add(label)
    return shown == set(range(n))


def decode_data_url(url: str) -> np.ndarray:
    from PIL import Image

    header, _, payload = url.partition(",")
    assert header == "data:image/png;base64", header
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB"))


def message_parts(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """A chat request's content in order: ("text", str) and ("image", decoded array) parts."""
    parts: list[tuple[str, Any]] = []
    for msg in body.get("messages", []):
        content = msg.get("content")
        for part in content if isinstance(content, list) else [{"type": "text", "text": content}]:
            if part.get("type") == "text":
                parts.append(("text", part["text"]))
            elif part.get("type") == "image_url":
                parts.append(("image", decode_data_url(part["image_url"]["url"])))
    return parts


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a burst of new connections (high concurrency) is never reset by a full backlog


class OpenAIStub:
    """``with OpenAIStub() as stub:`` then point a client at ``stub.base_url``."""

    def __init__(self, *, delay_s: float = 0.0, class_texts: Sequence[str] | None = None) -> None:
        self.delay_s = delay_s
        self.class_texts = list(class_texts) if class_texts is not None else None  # for READS_PROMPT images
        self.requests: list[dict[str, Any]] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._faults: list[tuple[int, float]] = []  # (status or 0 for slow, seconds)
        self._odd: list[str] = []  # odd 200 bodies to send next (see odd_next)
        self._lock = threading.Lock()
        self.answered = 0  # chat completions sent (200s with an answer)
        self.dead = False  # killed: answers nothing more
        self._kill_after: int | None = None
        self._connections: set[socket.socket] = set()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # keep-alive without a 40 ms stall per request

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with stub._lock:
                    stub._connections.add(self.connection)

            def finish(self) -> None:
                with stub._lock:
                    stub._connections.discard(self.connection)
                try:
                    super().finish()
                except OSError:  # a killed server's connection
                    pass

            def do_POST(self) -> None:
                stub._handle(self)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> OpenAIStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def kill(self) -> None:
        """Die like a crashed server: stop listening, drop every open connection (requests
        in flight get no answer) and answer nothing more."""
        with self._lock:
            self.dead = True
            connections = list(self._connections)
        self._server.shutdown()
        self._server.server_close()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def kill_after(self, answers: int) -> None:
        """Die (:meth:`kill`) right after sending the ``answers``-th answer: exactly that many are given."""
        with self._lock:
            self._kill_after = answers

    def gate(self, body: dict[str, Any]) -> tuple[int | None, dict[str, str]]:
        """Before answering a request: a status to refuse it with (None: answer it) and
        headers for the response. Subclasses enforce budgets (``ratelimit_server``)."""
        return None, {}

    def fail_next(self, count: int, *, status: int = 429) -> None:
        """The next ``count`` requests get ``status`` (with a tiny retry-after)."""
        with self._lock:
            self._faults += [(status, 0.0)] * count

    def stall_next(self, count: int, *, seconds: float) -> None:
        """The next ``count`` requests hang for ``seconds`` before answering."""
        with self._lock:
            self._faults += [(0, seconds)] * count

    def odd_next(self, count: int, kind: str) -> None:
        """The next ``count`` requests get an odd answer: "not-json", "html", "empty-choices",
        "null-content" (all malformed 200s), "refusal", "echo-key" (the Authorization header
        in the text), "401-echo" (a 401 whose message echoes the Authorization header),
        "quota" (OpenAI's 429 insufficient_quota) or "429-long" (a 429 asking to wait an hour)."""
        with self._lock:
            self._odd += [kind] * count

    def _send_odd(self, h: BaseHTTPRequestHandler, kind: str, model: str) -> None:
        auth = h.headers.get("Authorization", "")
        if kind in ("not-json", "html"):
            data = b"<html>upstream proxy says hello</html>" if kind == "html" else b"not json at all {"
            self._landed(h)
            h.send_response(200)
            h.send_header("Content-Type", "text/html" if kind == "html" else "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        if kind == "quota":
            self._send(h, 429, {"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota",
                                          "code": "insufficient_quota"}})
            return
        if kind == "429-long":
            self._send(h, 429, {"error": {"message": "Rate limit reached for requests per day.",
                                          "code": "rate_limit_exceeded"}}, {"retry-after": "3600"})
            return
        if kind == "401-echo":
            self._send(h, 401, {"error": {"message": f"invalid key in header: {auth}", "type": "auth"}})
            return
        message: dict[str, Any] = {"role": "assistant", "content": f"Category 0 (you sent {auth})"}
        choices = [{"index": 0, "finish_reason": "stop", "message": message}]
        if kind == "empty-choices":
            choices = []
        elif kind == "null-content":
            message["content"] = None
        elif kind == "refusal":
            message.update(content=None, refusal="I'm sorry, I can't help with that.")
        self._send(h, 200, {"id": "chatcmpl-odd", "object": "chat.completion", "created": 0, "model": model,
                            "choices": choices, "usage": {"prompt_tokens": 1, "completion_tokens": 1}})

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: dict[str, Any],
              extra: dict[str, str] | None = None) -> None:
        """Send JSON ``body`` with ``status`` and extra headers."""
        data = json.dumps(body).encode()
        self._landed(h)
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        h._astrobench_landed = True  # type: ignore[attr-defined]
        length = int(h.headers.get("Content-Length", 0))
        body = json.loads(h.rfile.read(length))
        if self.dead:
            h.close_connection = True
            return
        h._astrobench_landed = False  # type: ignore[attr-defined]
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
            odd = self._odd.pop(0) if self._odd and fault is None else None
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if h.path != "/v1/chat/completions":
                self._send(h, 404, {"error": {"message": f"no route {h.path}"}})
                return
            parts = message_parts(body)
            texts = [v for kind, v in parts if kind == "text"]
            images = [v for kind, v in parts if kind == "image"]
            record = {"headers": {k.lower(): v for k, v in h.headers.items()}, "body": body, "texts": texts,
                      "marks": [tuple(int(v) for v in im[0, 0, :2]) for im in images],
                      "kinds": [kind for kind, _ in parts]}
            with self._lock:
                self.requests.append(record)
            refuse, gate_headers = self.gate(body)
            if refuse is not None:
                self._send(h, refuse, {"error": {"message": "rate limit reached", "type": "requests",
                                                 "code": "rate_limit_exceeded"}}, gate_headers)
                return
            if fault is not None and fault[0]:
                self._send(h, fault[0], {"error": {"message": "injected fault", "type": "stub"}},
                           {"retry-after-ms": "5"})
                return
            if odd is not None:
                self._send_odd(h, odd, body.get("model", ""))
                return
            if fault is not None:
                time.sleep(fault[1])
            if self.delay_s:
                time.sleep(self.delay_s)
            prompt = texts[0] if texts else None
            text = (answer_for(images[-1], prompt, self.class_texts, with_examples=examples_ok(parts))
                    if images else "0")
            logprobs = None
            if images and body.get("logprobs"):  # score mode: the label digit and its alternatives
                logprobs = {"content": [{"token": text[:1], "logprob": -0.1,
                                         "top_logprobs": scored_alternatives(images[-1], prompt,
                                                                             self.class_texts)}]}
                text = logprobs["content"][0]["top_logprobs"][0]["token"]
            if images and ("response_format" in body or "guided_choice" in body):
                text = constrained_answer(images[-1])
                if "response_format" in body:
                    text = json.dumps({"category": text})
            with self._lock:
                if self.dead:  # killed while this request was in flight: no answer
                    h.close_connection = True
                    return
                self.answered += 1
                last = self.answered == self._kill_after
                self.dead = self.dead or last
            if last:
                h.close_connection = True
            self._send(h, 200, extra={"set-cookie": "session=STUB-COOKIE-SECRET; Path=/",
                                      "openai-organization": "org-STUB-SECRET", **gate_headers}, body={
                "id": f"chatcmpl-stub-{len(self.requests)}",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model", ""),
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105},
            })
            if last:
                h.wfile.flush()
                self.kill()
        finally:
            self._landed(h)

    def _landed(self, h: BaseHTTPRequestHandler) -> None:
        """A request stops counting as in flight once its answer starts (the client may
        send the next one as soon as it has read it)."""
        if getattr(h, "_astrobench_landed", False):
            return
        h._astrobench_landed = True  # type: ignore[attr-defined]
        with self._lock:
            self._in_flight -= 1
