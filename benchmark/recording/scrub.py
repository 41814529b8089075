"""Keep secrets out of every file and message: configured key values and
any ``Bearer ...`` token become ``***``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{4,}")
MASK = "***"


class Scrubber:
    """Callable on text or JSON-like data; secrets shorter than 8 characters are ignored
    (they would mask ordinary words)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def text(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, MASK)
        return _BEARER.sub(lambda m: m.group(1) + MASK, text) if "earer" in text or "EARER" in text else text

    def __call__(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {k: self(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self(v) for v in obj]
        return obj
