"""OpenAI-compatible chat completions (GPT-4o, vLLM, Ollama, ...).

One image per request as a base64 PNG data URL, temperature 0 by default,
requests run concurrently (bounded) with the official client's retries and
exponential backoff on 429, 5xx, connection errors and timeouts.
"""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from benchmark.providers import OnAnswer
from benchmark.core import Answer, BenchError, Request

_SETTINGS = {
    "base_url": None,            # None: the openai client's default (api.openai.com)
    "api_key_env": "OPENAI_API_KEY",
    "temperature": 0.0,
    "max_tokens": None,
    "concurrency": 8,
    "max_retries": 6,
    "timeout_s": 60.0,
    "detail": None,              # image detail: None (server default), "low", "high", "auto"
    "seed": None,
}
_IGNORED = {"prices", "label"}  # used by the leaderboard, not the client


def png_data_url(image: np.ndarray) -> str:
    """Encode a uint8 HxWx3 image as a base64 PNG data URL."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def settings_from(model: Any) -> dict[str, Any]:
    unknown = set(model.settings) - set(_SETTINGS) - _IGNORED
    if unknown:
        raise BenchError(f"models.{model.name}: unknown keys {sorted(unknown)} for provider "
                         f"'openai'; expected some of {sorted(_SETTINGS)}")
    out = {**_SETTINGS, **{k: v for k, v in model.settings.items() if k in _SETTINGS}}
    if not (isinstance(out["concurrency"], int) and out["concurrency"] >= 1):
        raise BenchError(f"models.{model.name}: expected 'concurrency' >= 1, found {out['concurrency']!r}")
    if not (isinstance(out["max_retries"], int) and out["max_retries"] >= 0):
        raise BenchError(f"models.{model.name}: expected 'max_retries' >= 0, found {out['max_retries']!r}")
    return out


def missing_key_message(name: str, env: str) -> str:
    return (f"model {name!r} needs an API key for live calls: set the environment variable {env} "
            f"(named by models.{name}.api_key_env)")


class OpenAIChatProvider:
    """Classifies each request with one chat-completions call."""

    def __init__(self, *, name: str, model: str, settings: dict[str, Any], api_key: str | None,
                 http_client: Any = None) -> None:
        import openai

        self.has_key = bool(api_key)
        self.name = name
        self.model = model
        self.settings = settings
        self._client = openai.OpenAI(
            api_key=api_key or "no-key:replay-only",
            base_url=settings["base_url"],
            max_retries=settings["max_retries"],
            timeout=float(settings["timeout_s"]),
            http_client=http_client,
        )

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

    def fingerprint(self) -> dict[str, Any]:
        s = self.settings
        return {
            "provider": "openai",
            "model": self.model,
            "base_url": s["base_url"],
            "temperature": s["temperature"],
            "max_tokens": s["max_tokens"],
            "detail": s["detail"],
            "seed": s["seed"],
        }

    def request_body(self, request: Request, *, image_ref: bool = False) -> dict[str, Any]:
        """The chat-completions JSON; ``image_ref`` puts the image's sha256 in
        place of its data URL (the canonical form cassettes match on)."""
        content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
        if request.image is not None:
            image_url: dict[str, Any] = (
                {"sha256": request.image_sha256} if image_ref else {"url": png_data_url(request.image)}
            )
            if self.settings["detail"] is not None:
                image_url["detail"] = self.settings["detail"]
            content.append({"type": "image_url", "image_url": image_url})
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": self.settings["temperature"],
        }
        if self.settings["max_tokens"] is not None:
            body["max_tokens"] = self.settings["max_tokens"]
        if self.settings["seed"] is not None:
            body["seed"] = self.settings["seed"]
        return body

    def canonical_request(self, request: Request) -> str:
        """What a cassette stores and matches for ``request`` (see benchmark.cassettes)."""
        import json

        return json.dumps(self.request_body(request, image_ref=True), sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False)

    def _one(self, request: Request) -> Answer:
        import openai

        start = time.perf_counter()
        try:
            resp = self._client.chat.completions.create(**self.request_body(request))
        except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
            # Retries are exhausted: keep going, report it, do not cache it.
            return Answer(request.sample_id, raw="", error=f"{type(exc).__name__}: {exc}",
                          latency_s=time.perf_counter() - start)
        except openai.APIStatusError as exc:  # 4xx other than 429: a setup problem
            raise BenchError(f"model {self.name!r}: the server refused the request "
                             f"({exc.status_code}): {exc.message}") from None
        latency = time.perf_counter() - start
        text = ""
        if resp.choices:
            text = resp.choices[0].message.content or ""
        usage = {}
        if resp.usage is not None:
            usage = {"prompt_tokens": resp.usage.prompt_tokens or 0,
                     "completion_tokens": resp.usage.completion_tokens or 0}
        return Answer(request.sample_id, raw=text, usage=usage, latency_s=latency)

    def classify(self, requests: Sequence[Request], *, on_answer: OnAnswer | None = None) -> list[Answer]:
        answers: list[Answer] = []
        with ThreadPoolExecutor(max_workers=self.settings["concurrency"],
                                thread_name_prefix=f"astrobench-{self.name}") as pool:
            pending = {pool.submit(self._one, r) for r in requests}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for fut in done:
                        answer = fut.result()  # re-raises a setup error at once
                        answers.append(answer)
                        if on_answer is not None:
                            on_answer(answer)
            except BaseException:
                for fut in pending:
                    fut.cancel()
                # Answers still in flight are persisted before we give up.
                for fut in pending:
                    if not fut.cancelled() and fut.exception() is None and on_answer is not None:
                        on_answer(fut.result())
                raise
        return answers

    def close(self) -> None:
        self._client.close()
