"""Chat-completion bodies: the one parser for live and recorded answers.

A 200 is an answer only if its body is a JSON chat completion whose first
choice has text content or a refusal. Anything else (HTML, empty
``choices``, ``content: null`` without a refusal) raises
:class:`MalformedResponse`: the request failed, is retried, and is never
recorded.
"""

from __future__ import annotations

import json
from typing import Any

from benchmark.core import Answer


class MalformedResponse(ValueError):
    """A 2xx body that is not a usable chat completion."""


def parse_completion(body: bytes | str | dict[str, Any], *, content_type: str | None = None) -> dict[str, Any]:
    """The compact completion kept for a well-formed body (see module docstring)."""
    if content_type is not None and "json" not in content_type.lower():
        raise MalformedResponse(f"expected a JSON chat completion, found content-type {content_type!r}")
    if isinstance(body, dict):
        data: Any = body
    else:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError, TypeError) as exc:
            text = body[:60] if isinstance(body, (str, bytes)) else body
            raise MalformedResponse(f"expected a JSON chat completion, found {text!r}... ({exc})") from None
    if not isinstance(data, dict):
        raise MalformedResponse(f"expected a JSON object, found {type(data).__name__}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedResponse(f"expected a non-empty 'choices' list, found {choices!r}")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise MalformedResponse(f"expected choices[0].message to be an object, found {message!r}")
    content, refusal = message.get("content"), message.get("refusal")
    if not isinstance(content, (str, type(None))) or not isinstance(refusal, (str, type(None))):
        raise MalformedResponse("expected message content and refusal to be strings or null, found "
                                f"{type(content).__name__} and {type(refusal).__name__}")
    if content is None and not refusal:
        raise MalformedResponse("expected message content or a refusal, found content null and no refusal")
    kept_message = {"role": "assistant", "content": content}
    if refusal:
        kept_message["refusal"] = refusal
    out: dict[str, Any] = {
        "id": data.get("id"),
        "model": data.get("model"),
        "system_fingerprint": data.get("system_fingerprint"),
        "choices": [{"index": 0, "finish_reason": choice.get("finish_reason"), "message": kept_message}],
    }
    usage = data.get("usage")
    if isinstance(usage, dict):
        out["usage"] = {k: int(usage[k]) for k in ("prompt_tokens", "completion_tokens")
                        if isinstance(usage.get(k), int)}
    first = _first_token_alternatives(choice.get("logprobs"))
    if first:
        out["choices"][0]["logprobs"] = {"content": [{"top_logprobs": first}]}
    return out


def _first_token_alternatives(logprobs: Any) -> list[dict[str, Any]]:
    """The first answer token's ``top_logprobs`` ({token, logprob}), kept for score mode."""
    try:
        top = logprobs["content"][0]["top_logprobs"]
        return [{"token": str(t["token"]), "logprob": float(t["logprob"])} for t in top]
    except (KeyError, IndexError, TypeError, ValueError):
        return []


def class_probabilities(completion: dict[str, Any], n_classes: int) -> list[float] | None:
    """P(class k) from the first token's alternatives: softmax over the label tokens "0".."n-1"
    found among them (a label absent from the top alternatives gets probability 0); None when
    no label token is among them."""
    import math

    top = completion["choices"][0].get("logprobs", {}).get("content", [{}])[0].get("top_logprobs", [])
    best: dict[int, float] = {}
    for alt in top:
        token = alt["token"].strip()
        if token.isdigit() and int(token) < n_classes:
            k = int(token)
            best[k] = max(best.get(k, -math.inf), alt["logprob"])
    if not best:
        return None
    top_lp = max(best.values())
    weights = [math.exp(best[k] - top_lp) if k in best else 0.0 for k in range(n_classes)]
    total = sum(weights)
    return [w / total for w in weights]


def answer_from_completion(sample_id: str, completion: dict[str, Any], *, latency_s: float = 0.0) -> Answer:
    """An ``Answer`` from a compact completion (live or recorded alike)."""
    message = completion["choices"][0]["message"]
    refusal = message.get("refusal") if message.get("content") is None else None
    meta = {k: completion[k] for k in ("model", "system_fingerprint") if completion.get(k)}
    if "model" in meta:
        meta["served_model"] = meta.pop("model")
    return Answer(sample_id, raw=message.get("content") or "", refusal=refusal,
                  usage=dict(completion.get("usage") or {}), latency_s=latency_s, meta=meta)
