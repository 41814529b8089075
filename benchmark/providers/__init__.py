"""Model providers: one narrow interface, imported lazily.

A provider turns requests into answers. Heavy dependencies (torch,
transformers) are imported only when a provider that needs them is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from benchmark.core import Answer, BenchError, Request

OnAnswer = Callable[[Answer], None]


class Provider(Protocol):
    """``classify`` answers every request (in any order) and calls ``on_answer``
    as each answer arrives, so the caller can persist it at once."""

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the answer (model id, generation params...).

        Goes into the response-cache / cassette key with the prompt and image digest.
        """
        ...

    def classify(
        self, requests: Sequence[Request], *, on_answer: OnAnswer | None = None
    ) -> list[Answer]: ...

    def close(self) -> None: ...


PROVIDERS = {
    "openai": "benchmark.providers.openai_chat:OpenAIChatProvider",
    "transformers": "benchmark.providers.hf:TransformersProvider",
}


def make_provider(model: Any, **kwargs: Any) -> Provider:
    """Build the provider for a ``ModelConfig`` (see ``benchmark.config``)."""
    import importlib

    target = PROVIDERS.get(model.provider)
    if target is None:
        raise BenchError(
            f"model {model.name!r}: unknown provider {model.provider!r}; "
            f"expected one of {sorted(PROVIDERS)}"
        )
    module_name, cls_name = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name).from_config(model, **kwargs)
