"""The one content key: sha256 of a request's canonical JSON.

A provider's ``canonical_request`` says what determines an answer (model,
prompt, image digest, parameters, examples); serialised with sorted keys
it is the same bytes wherever it is computed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(request: dict[str, Any]) -> str:
    return json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_key(canonical: str | dict[str, Any]) -> str:
    text = canonical if isinstance(canonical, str) else canonical_json(canonical)
    return hashlib.sha256(text.encode()).hexdigest()
