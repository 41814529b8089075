"""OpenAI-compatible chat completions (GPT-4o, vLLM, Ollama, ...).

One image per request (after the labelled example images of a few-shot
prompt) as a base64 PNG data URL, temperature 0 by default,
requests run concurrently (bounded) with the official client's retries and
exponential backoff on 429, 5xx, connection errors and timeouts. A 200
whose body is not a chat completion is asked again (``max_retries`` times)
and then reported as failed; a refusal is an answer of its own. With
``batch = true`` the requests go through the Batch API first
(:mod:`benchmark.providers.openai_batch`).
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from benchmark.providers import OnAnswer
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


def missing_key_message(name: str, env: str) -> str:
    return (f"model {name!r} needs an API key for live calls: set the environment variable {env} "
            f"(named by models.{name}.api_key_env)")


class OpenAIChatProvider:
    """Classifies each request with one chat-completions call."""

    def __init__(self, *, name: str, model: str, settings: dict[str, Any], api_key: str | None,
                 http_client: Any = None) -> None:
        self.has_key = bool(api_key)
        self._api_key = api_key
        self._http_client = http_client
        self._scrubber = Scrubber([api_key])
        self.malformed_backoff_s = 0.5  # first wait before asking again after a malformed 200
        self.name = name
        self.model = model
        self.settings = settings
        self._client_obj: Any = None
        self._example_urls: dict[str, str] = {}  # few-shot examples' data URLs by image sha256

    @property
    def _client(self) -> Any:
        """The openai client, built on the first live call (replay never needs one)."""
        if self._client_obj is None:
            import openai

            self._client_obj = openai.OpenAI(
                api_key=self._api_key or "no-key:replay-only",
                base_url=self.settings["base_url"],
                max_retries=self.settings["max_retries"],
                timeout=float(self.settings["timeout_s"]),
                http_client=self._http_client,
            )
        return self._client_obj

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
                  latency_s: float = 0.0) -> Answer:
        """The one way from a compact completion to an Answer: live, batch and replayed alike."""
        answer = answer_from_completion(sample_id, completion, latency_s=latency_s)
        return self._scored(self._constrained(answer), completion, n_classes)

    def wire_request(self, request: Request) -> dict[str, Any]:
        """The request body with the image as its sha256 (no PNG encoding): what vcrpy's hook
        derives from the live body."""
        return self.request_body(request, image_ref=True)

    def canonical_request(self, request: Request) -> dict[str, Any]:
        """What determines the answer: the wire request (images as their sha256, few-shot examples
        included), which repeat it is, and the few-shot examples' ids."""
        body = self.wire_request(request)
        if self.settings["mode"] == "score":
            body = {**body, "n_classes": request.n_classes}  # which label tokens are read
        if request.examples:
            body = {**body, "example_ids": [e.id for e in request.examples]}
        return {**body, "repeat": request.repeat} if request.repeat else body

    def from_record(self, sample_id: str, record: dict[str, Any]) -> Answer:
        answer = self.answer_of(sample_id, parse_completion(record["response"]), _n_classes_of(record.get("request")))
        if record.get("via"):  # how it came, when not live (e.g. "batch": costed at the batch price)
            answer.meta["via"] = record["via"]
        return answer

    def _scrub(self, text: str) -> str:
        return self._scrubber.text(text)

    def _one(self, request: Request) -> Answer:
        import openai

        start = time.perf_counter()
        body = self.request_body(request)
        problem = ""
        for attempt in range(self.settings["max_retries"] + 1):
            if attempt:
                time.sleep(min(self.malformed_backoff_s * 2 ** (attempt - 1), 8.0))
            try:
                extra = {k: body.pop(k) for k in _EXTRA_BODY if k in body}  # not the client's own parameters
                raw = self._client.chat.completions.with_raw_response.create(**body, extra_body=extra or None)
            except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
                # The client's retries are exhausted: report it, never record it.
                return Answer(request.sample_id, raw="", error=self._scrub(f"{type(exc).__name__}: {exc}"),
                              latency_s=time.perf_counter() - start)
            except openai.APIStatusError as exc:  # 4xx other than 429: a setup problem
                raise BenchError(self._scrub(f"model {self.name!r}: the server refused the request "
                                             f"({exc.status_code}): {exc.message}")) from None
            try:
                completion = parse_completion(raw.http_response.content,
                                              content_type=raw.headers.get("content-type"))
            except MalformedResponse as exc:
                problem = self._scrub(str(exc))
                continue  # a failed request: asked again, never recorded
            return self.answer_of(request.sample_id, completion, request.n_classes,
                                  latency_s=time.perf_counter() - start)
        return Answer(request.sample_id, raw="", latency_s=time.perf_counter() - start,
                      error=f"MalformedResponse after {self.settings['max_retries'] + 1} attempts: {problem}")

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
                       announce: Any = None) -> list[Request]:
        """Answer ``requests`` through the Batch API (``keys``: their recording keys, the lines'
        custom ids); hand each answer to ``on_answer(answer, payload)`` with its recorded form,
        calling ``sync()`` (makes them durable) before a batch's ``journal`` entry goes; return the
        requests left for live calls (see :mod:`benchmark.providers.openai_batch`)."""
        from benchmark.providers.openai_batch import BatchJournal, BatchRunner

        runner = BatchRunner(self, self._client, journal=BatchJournal(journal), progress=progress,
                             announce=announce, sync=sync)
        return runner.run(requests, keys, on_answer)

    def close(self) -> None:
        if self._client_obj is not None:
            self._client_obj.close()
