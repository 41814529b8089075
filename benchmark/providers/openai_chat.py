"""OpenAI-compatible chat completions (GPT-4o, vLLM, Ollama, ...).

One image per request (after the labelled example images of a few-shot
prompt) as a base64 PNG data URL, temperature 0 by default; requests run
concurrently under an adaptive limit (``benchmark.providers.throttle``:
halved on a 429, honouring Retry-After and the rate-limit headers) and are
spread over the ``base_url`` replicas. A 429 is asked again up to
``rate_limit_retries`` times; 5xx, connection errors, timeouts and a 200
whose body is not a chat completion up to ``max_retries`` times (on another
replica when one is up, else after an exponential backoff); then the answer
is reported as failed, never recorded. A refusal is an answer of its own.
With ``batch = true`` the requests go through the Batch API first
(:mod:`benchmark.providers.openai_batch`).
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from benchmark.providers import OnAnswer
from benchmark.providers.throttle import (FAILED, LIMITED, MAX_RETRY_AFTER_S, OK, RETRIED_4XX, ReplicaPool, Throttle,
                                         backoff_s)
from benchmark.core import Answer, BenchError, Request
from benchmark.schema import OPENAI_SETTINGS, model_settings
from benchmark.recording.completions import (MalformedResponse, answer_from_completion, class_probabilities,
                                             parse_completion)
from benchmark.recording.recording import RecordingWriteError
from benchmark.recording.scrub import Scrubber

_SETTINGS = OPENAI_SETTINGS  # keys and defaults: benchmark.schema.OpenAIModel


_EXTRA_BODY = ("guided_choice",)  # server-specific request keys, sent through the client's extra_body


def _n_classes_of(request: Any) -> int:
    """The class count a recorded request was asked with (kept in score mode's key)."""
    return int(request.get("n_classes", 0)) if isinstance(request, dict) else 0


def png_data_url(image: np.ndarray) -> str:
    """Encode a uint8 HxWx3 image as a base64 PNG data URL."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def settings_from(model: Any) -> dict[str, Any]:
    """Validated settings of a ``ModelConfig``, defaults filled in (rules: benchmark.schema)."""
    return model_settings("openai", model.name, model.settings)


def base_urls(settings: dict[str, Any]) -> list[str | None]:
    """The replicas' URLs: ``base_url`` as a list (None: the openai client's default)."""
    url = settings["base_url"]
    return list(url) if isinstance(url, list) else [url]


def missing_key_message(name: str, env: str) -> str:
    return (f"model {name!r} needs an API key for live calls: set the environment variable {env} "
            f"(named by models.{name}.api_key_env)")


@dataclass
class _Attempt:
    """How one HTTP attempt ended (see ``benchmark.providers.throttle`` for the outcomes)."""

    outcome: str
    headers: Any
    completion: dict[str, Any] | None = None
    problem: str = ""
    server_down: bool = False  # connection error, timeout or 5xx: the replica rests
    malformed: bool = False


def _total_tokens(completion: dict[str, Any] | None) -> int | None:
    usage = (completion or {}).get("usage") or {}
    return sum(int(usage.get(k) or 0) for k in ("prompt_tokens", "completion_tokens")) or None


class OpenAIChatProvider:
    """Classifies each request with one chat-completions call."""

    def __init__(self, *, name: str, model: str, settings: dict[str, Any], api_key: str | None,
                 http_client: Any = None) -> None:
        self.has_key = bool(api_key)
        self._api_key = api_key
        self._http_client = http_client
        self._scrubber = Scrubber([api_key])
        self.backoff_s = 0.5  # first wait before asking again (5xx, connection error, malformed 200)
        self.name = name
        self.model = model
        self.settings = settings
        self._example_urls: dict[str, str] = {}  # few-shot examples' data URLs by image sha256
        self._throttle = Throttle(maximum=settings["concurrency"], floor=settings["min_concurrency"])
        self._pool = ReplicaPool(base_urls(settings), self._make_client)

    def _make_client(self, base_url: str | None) -> Any:
        """An openai client for one replica. It never retries: :meth:`_one` does, so that each
        429 reaches the throttle and a failing replica is left for another."""
        import openai

        return openai.OpenAI(
            api_key=self._api_key or "no-key:replay-only",
            base_url=base_url,
            max_retries=0,
            timeout=float(self.settings["timeout_s"]),
            http_client=self._http_client,
        )

    @property
    def _client(self) -> Any:
        """The first replica's openai client, built on the first live call (replay never needs one)."""
        return self._pool.client(self._pool.replicas[0])

    @classmethod
    def from_config(cls, model: Any, *, bench: Any = None, api_key: str | None = None,
                    require_key: bool = True, **_: Any) -> OpenAIChatProvider:
        """``require_key=False`` builds a replay-only client when the key is absent."""
        settings = settings_from(model)
        if api_key is None:
            api_key = os.environ.get(settings["api_key_env"])
            if not api_key and require_key:
                raise BenchError(missing_key_message(model.name, settings["api_key_env"]))
        return cls(name=model.name, model=model.model, settings=settings, api_key=api_key)

    http = True  # recorded through vcrpy (benchmark.recording.http)

    def can_call_live(self) -> bool:
        return self.has_key

    def why_not_live(self) -> str:
        return missing_key_message(self.name, self.settings["api_key_env"])

    def request_body(self, request: Request, *, image_ref: bool = False) -> dict[str, Any]:
        """The chat-completions JSON; ``image_ref`` puts the image's sha256 in
        place of its data URL (the canonical form recordings are keyed by)."""
        def image_part(load: Any, sha256: str, *, example: bool = False) -> dict[str, Any]:
            if image_ref:
                image_url: dict[str, Any] = {"sha256": sha256}
            elif example:  # the same examples precede every query of a case: encoded once
                if sha256 not in self._example_urls:
                    self._example_urls[sha256] = png_data_url(load())
                image_url = {"url": self._example_urls[sha256]}
            else:
                image_url = {"url": png_data_url(load())}
            if self.settings["detail"] is not None:
                image_url["detail"] = self.settings["detail"]
            return {"type": "image_url", "image_url": image_url}

        content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
        for example in request.examples:  # few-shot: each example's text, then its image
            content += [{"type": "text", "text": example.text},
                        image_part(lambda e=example: e.image, example.image_sha256, example=True)]
        if request.text is not None:  # extraction: the model's answer; few-shot: the query text
            content.append({"type": "text", "text": request.text})
        if request.image is not None:
            content.append(image_part(request.load_image, request.image_sha256))
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": self.settings["temperature"],
        }
        if self.settings["max_tokens"] is not None:
            body["max_tokens"] = self.settings["max_tokens"]
        if self.settings["seed"] is not None:
            body["seed"] = self.settings["seed"]
        if self.settings["n"] is not None:
            body["n"] = self.settings["n"]
        if self.settings["mode"] == "score":  # one token, with the alternatives' log-probabilities
            body.update(max_tokens=1, logprobs=True, top_logprobs=20)
        labels = [str(k) for k in range(request.n_classes)]
        if self.settings["constrain"] == "json-schema":  # OpenAI structured outputs: a valid class or a refusal
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "classification", "strict": True,
                "schema": {"type": "object", "properties": {"category": {"type": "string", "enum": labels}},
                           "required": ["category"], "additionalProperties": False}}}
        elif self.settings["constrain"] == "guided-choice":  # vLLM: the answer is one of the labels
            body["guided_choice"] = labels
        return body

    def _scored(self, answer: Answer, completion: dict[str, Any], n_classes: int) -> Answer:
        """Score mode: class probabilities from the first token's alternatives; the class is their argmax."""
        if self.settings["mode"] == "score" and answer.refusal is None:
            probs = class_probabilities(completion, n_classes)
            if probs is not None:
                answer.probs = probs
                answer.label = max(range(n_classes), key=probs.__getitem__)
                answer.meta["reason"] = "score: most probable label token"
        return answer

    def _constrained(self, answer: Answer) -> Answer:
        """A constrained answer's class comes from its structure, not from the free-text parser."""
        mode = self.settings["constrain"]
        if mode is None or answer.refusal is not None:
            return answer
        text = answer.raw.strip()
        if mode == "json-schema":
            try:
                data = json.loads(text)
                text = str(data.get("category", "")) if isinstance(data, dict) else ""
            except ValueError:
                text = ""
        if text.isdigit():
            answer.label = int(text)
            answer.meta["reason"] = f"constrained ({mode}): {text}"
        return answer

    def answer_of(self, sample_id: str, completion: dict[str, Any], n_classes: int, *,
                  latency_s: float = 0.0, via: str | None = None) -> Answer:
        """The one way from a compact completion to an Answer: live, batch and replayed alike
        (``via``: how it came when not live, e.g. "batch", costed at the batch price)."""
        answer = answer_from_completion(sample_id, completion, latency_s=latency_s)
        if via:
            answer.meta["via"] = via
        return self._scored(self._constrained(answer), completion, n_classes)

    def wire_request(self, request: Request) -> dict[str, Any]:
        """The request body with the image as its sha256 (no PNG encoding): what vcrpy's hook
        derives from the live body."""
        return self.request_body(request, image_ref=True)

    def canonical_request(self, request: Request) -> dict[str, Any]:
        """What determines the answer: the wire request (images as their sha256, few-shot examples
        included) and the few-shot examples' ids (the repeat and label shift: recording.answers)."""
        body = self.wire_request(request)
        if self.settings["mode"] == "score":
            body = {**body, "n_classes": request.n_classes}  # which label tokens are read
        if request.examples:
            body = {**body, "example_ids": [e.id for e in request.examples]}
        return body

    def from_record(self, sample_id: str, record: dict[str, Any]) -> Answer:
        return self.answer_of(sample_id, parse_completion(record["response"]), _n_classes_of(record.get("request")),
                              via=record.get("via"))

    def _scrub(self, text: str) -> str:
        return self._scrubber.text(text)

    def _send(self, client: Any, body: dict[str, Any], extra: dict[str, Any]) -> _Attempt:
        """One HTTP attempt. A refused request (4xx other than 408, 409, 429) stops the run."""
        import openai

        try:
            raw = client.chat.completions.with_raw_response.create(**body, extra_body=extra or None)
        except openai.RateLimitError as exc:
            if exc.code == "insufficient_quota":  # no wait helps: the account is out of credit
                raise BenchError(self._scrub(f"model {self.name!r}: the server refused the request "
                                             f"(429 insufficient_quota): {exc.message}")) from None
            return _Attempt(LIMITED, exc.response.headers, problem=self._problem(exc))
        except (openai.APIConnectionError, openai.InternalServerError) as exc:  # 5xx, timeouts
            return _Attempt(FAILED, getattr(getattr(exc, "response", None), "headers", None),
                            problem=self._problem(exc), server_down=True)
        except openai.APIStatusError as exc:
            if exc.status_code in RETRIED_4XX:  # asked again, as the openai client does
                return _Attempt(FAILED, exc.response.headers, problem=self._problem(exc))
            raise BenchError(self._scrub(f"model {self.name!r}: the server refused the request "
                                         f"({exc.status_code}): {exc.message}")) from None
        try:
            completion = parse_completion(raw.http_response.content, content_type=raw.headers.get("content-type"))
        except MalformedResponse as exc:  # a failed request: asked again, never recorded
            return _Attempt(FAILED, raw.headers, problem=self._scrub(str(exc)), malformed=True)
        return _Attempt(OK, raw.headers, completion=completion)

    def _problem(self, exc: Exception) -> str:
        return self._scrub(f"{type(exc).__name__}: {exc}")

    def _one(self, request: Request) -> Answer:
        """One request's answer: asked again after a 429 (as the server's Retry-After says),
        a 5xx or connection error (at once on another replica when one is up) or a malformed 200."""
        start = time.perf_counter()
        body = self.request_body(request)
        extra = {k: body.pop(k) for k in _EXTRA_BODY if k in body}  # not the client's own parameters
        failures = limited = 0
        while True:
            ticket = self._throttle.acquire()
            replica = self._pool.pick()
            attempt = _Attempt(FAILED, None)  # a BenchError or Ctrl-C still frees the slot
            try:
                attempt = self._send(self._pool.client(replica), body, extra)
            finally:
                self._pool.done(replica, ok=not attempt.server_down)
                wait = self._throttle.release(ticket, attempt.outcome, headers=attempt.headers,
                                              tokens=_total_tokens(attempt.completion))
            elapsed = time.perf_counter() - start
            if attempt.outcome == OK:
                self._pool.answered(replica)
                return self.answer_of(request.sample_id, attempt.completion, request.n_classes, latency_s=elapsed)
            if attempt.outcome == LIMITED:
                limited += 1
                too_long = wait is not None and wait > MAX_RETRY_AFTER_S
                if limited > self.settings["rate_limit_retries"] or too_long:
                    why = f" (the server asks to wait {wait:.0f} s)" if too_long else ""
                    return Answer(request.sample_id, raw="", latency_s=elapsed,
                                  error=f"rate limited (429) {limited} times{why}: {attempt.problem}")
                if wait is None:  # no Retry-After: this request backs off on its own
                    time.sleep(backoff_s(limited, base=self.backoff_s))
                continue  # with a Retry-After, the throttle holds every request back
            failures += 1
            if failures > self.settings["max_retries"]:  # report it, never record it
                what = "MalformedResponse" if attempt.malformed else "failed"
                return Answer(request.sample_id, raw="", latency_s=elapsed,
                              error=f"{what} after {failures} attempts: {attempt.problem}")
            if not (attempt.server_down and len(self._pool) > 1 and self._pool.any_up()):
                time.sleep(backoff_s(failures, base=self.backoff_s))  # else at once, on another replica

    def take_traffic(self) -> dict[str, Any] | None:
        """What the live requests since the last call met (``Throttle.take_stats``), with each
        replica's answers and failures when there are several; None when none was sent."""
        from benchmark.config import redact_url

        replicas = self._pool.take_stats(redact_url)
        return self._throttle.take_stats(**({"replicas": replicas} if len(replicas) > 1 else {}))

    def classify(self, requests: Sequence[Request], *, on_answer: OnAnswer | None = None) -> list[Answer]:
        """Ask concurrently; hand each answer to ``on_answer`` as it arrives. On an error
        (a refused request, Ctrl-C) stop asking: pending requests are cancelled, and the
        answers already in flight (at most ``concurrency``, paid for) are still handed
        over before the error propagates, unless handing over is what failed."""
        answers: list[Answer] = []
        pending = iter(requests)
        running: set[Any] = set()
        pool = ThreadPoolExecutor(max_workers=self.settings["concurrency"],
                                  thread_name_prefix=f"astrobench-{self.name}")

        def fill() -> None:  # at most `concurrency` requests are ever in flight
            while len(running) < self.settings["concurrency"]:
                request = next(pending, None)
                if request is None:
                    return
                running.add(pool.submit(self._one, request))

        try:
            fill()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    running.discard(fut)
                    answer = fut.result()  # re-raises a setup error at once
                    answers.append(answer)
                    if on_answer is not None:
                        on_answer(answer)
                fill()
        except BaseException as exc:
            if on_answer is not None and not isinstance(exc, RecordingWriteError):
                for fut in running:
                    try:
                        on_answer(fut.result())
                    except BaseException:  # noqa: BLE001 - the first error is the one to report
                        break
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return answers

    @property
    def batches(self) -> bool:
        """True: the answers not recorded are asked through the Batch API first (``batch = true``)."""
        return bool(self.settings["batch"])

    def classify_batch(self, requests: Sequence[Request], *, keys: Sequence[str], on_answer: Any,
                       journal: Any = None, sync: Any = None, progress: Any = None,
                       announce: Any = None, recorded: Any = None) -> list[Request]:
        """Answer ``requests`` through the Batch API (``keys``: their recording keys, the lines'
        custom ids); hand each answer to ``on_answer(answer, payload)`` with its recorded form,
        calling ``sync()`` (makes them durable) before a batch's ``journal`` entry goes (kept while
        it holds answers for requests not asked now that ``recorded(key)`` lacks); return the
        requests left for live calls (see :mod:`benchmark.providers.openai_batch`)."""
        from benchmark.providers.openai_batch import BatchJournal, BatchRunner

        runner = BatchRunner(self, self._client, journal=BatchJournal(journal), progress=progress,
                             announce=announce, sync=sync, recorded=recorded)
        return runner.run(requests, keys, on_answer)

    def close(self) -> None:
        self._pool.close()
