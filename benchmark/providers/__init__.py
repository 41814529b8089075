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
    as each answer arrives, so the caller can record it at once. The other
    methods serve the recording layer (``benchmark.recording``)."""

    name: str
    http: bool  # True: answers are HTTP chat completions, recorded through vcrpy

    def canonical_request(self, request: Request) -> dict[str, Any]:
        """Everything that determines the answer (model, prompt, image digest,
        parameters), as JSON; its sha256 is the recording key. No secrets."""
        ...

    def from_record(self, sample_id: str, record: dict[str, Any]) -> Answer:
        """A recorded answer, parsed by the same code as a live one."""
        ...

    def can_call_live(self) -> bool:
        """False when live calls are impossible (e.g. no API key); replay still works.
        A provider may say why in ``why_not_live() -> str``."""
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
