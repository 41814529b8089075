"""vcrpy intercepts and records live chat-completions calls, through its
public extension points only.

While a case makes live calls, :class:`HttpTap` holds a vcrpy cassette:

* ``before_record_request`` reduces each chat request to its canonical
  form (every base64 image replaced by the sha256 of its pixels) and its
  content key; other requests (e.g. dataset downloads) pass unrecorded.
* ``before_record_response`` keeps a 2xx whose body parses as a chat
  completion (the same parser as live answers) and hands it to the
  recorder under the request's key; it returns ``None``, so vcrpy itself
  keeps nothing in memory and recording n answers stays O(n).
* a registered persister keeps vcrpy off the recording files (they are
  ours: ``benchmark.recording.log``), and a registered matcher compares
  canonical bodies.

vcrpy calls both hooks from ``Cassette.append`` on the thread that made
the request, request first, so a thread-local pairs a response with its
request's key. Users' ``vcr_config`` hooks run before ours, and
pytest-recording's ``pytest_recording_configure`` hook sees our VCR.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from benchmark.core import BenchError, image_digest
from benchmark.recording.completions import MalformedResponse, parse_completion
from benchmark.recording.keys import canonical_json, content_key

CHAT_PATH = "/chat/completions"
_OURS = {"match_on", "serializer", "record_mode", "path", "before_record_request",
         "before_record_response", "persister"}


def _data_url_digest(url: str) -> str:
    from PIL import Image

    header, _, payload = url.partition(",")
    if not header.startswith("data:image/") or ";base64" not in header:
        raise BenchError(f"expected a base64 image data URL, found {url[:40]!r}...")
    image = Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB")
    return image_digest(np.asarray(image))


def canonical_body(body: dict[str, Any]) -> dict[str, Any]:
    """A chat request as keyed and stored: image data URLs -> pixel sha256."""
    out = json.loads(json.dumps(body))
    for message in out.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            ref = part.get("image_url") if isinstance(part, dict) else None
            if isinstance(ref, dict) and "url" in ref:
                url = ref.pop("url")
                ref["sha256"] = _data_url_digest(url) if url.startswith("data:") else f"url:{url}"
    return out


class _NoFiles:
    """vcrpy persister: vcrpy neither reads nor writes files; recordings are ours."""

    @staticmethod
    def load_cassette(cassette_path: str, serializer: Any) -> tuple[list, list]:
        from vcr.persisters.filesystem import CassetteNotFoundError

        raise CassetteNotFoundError(cassette_path)

    @staticmethod
    def save_cassette(cassette_path: str, cassette_dict: dict[str, Any], serializer: Any) -> None:
        return None


def _same_body(r1: Any, r2: Any) -> bool:
    return r1.body == r2.body


class HttpTap:
    """``with HttpTap(...) as tap:`` around live calls; ``tap.take(key)`` gives the
    compact completion recorded for ``key`` (None if none was)."""

    def __init__(self, *, vcr_config: dict[str, Any] | None = None,
                 configure: Callable[[Any], None] | None = None, path: Path | str = "astrobench-live") -> None:
        self.vcr_config = dict(vcr_config or {})
        self.configure = configure
        self.path = str(path)
        self._taken: dict[str, dict[str, Any]] = {}
        self._memo: dict[str, tuple[str, bytes]] = {}  # sha256(body) -> (key, canonical)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._cm: Any = None

    def _key_of(self, body: bytes) -> tuple[str, bytes]:
        digest = hashlib.sha256(body).hexdigest()
        hit = self._memo.get(digest)
        if hit is None:
            try:
                canonical = canonical_json(canonical_body(json.loads(body)))
            except ValueError as exc:
                raise BenchError(f"chat request body is not JSON ({exc})") from None
            hit = (content_key(canonical), canonical.encode())
            with self._lock:
                if len(self._memo) > 4096:
                    self._memo.clear()
                self._memo[digest] = hit
        return hit

    def _on_request(self, request: Any) -> Any:
        if not urlsplit(request.uri).path.endswith(CHAT_PATH):
            return None  # not ours: passes through unrecorded
        body = request.body or b""
        key, canonical = self._key_of(body.encode() if isinstance(body, str) else bytes(body))
        self._local.key = key
        request.body = canonical
        request.headers = {}
        return request

    def _on_response(self, response: dict[str, Any]) -> None:
        key = getattr(self._local, "key", None)
        status = int((response.get("status") or {}).get("code", 0))
        if key is None or not 200 <= status < 300:
            return None  # 429/5xx/4xx: never recorded, a rerun asks again
        headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        ctype = headers.get("content-type")
        ctype = ctype[0] if isinstance(ctype, list) and ctype else ctype
        try:
            completion = parse_completion((response.get("body") or {}).get("string") or b"",
                                          content_type=ctype if isinstance(ctype, str) else None)
        except MalformedResponse:
            return None  # a failed request: the provider retries it
        with self._lock:
            self._taken[key] = completion
        return None

    def take(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._taken.pop(key, None)

    def __enter__(self) -> HttpTap:
        import vcr

        user_req = self.vcr_config.get("before_record_request")
        user_res = self.vcr_config.get("before_record_response")
        as_list = lambda h: [] if h is None else ([h] if callable(h) else list(h))  # noqa: E731
        my_vcr = vcr.VCR(**{k: v for k, v in self.vcr_config.items() if k not in _OURS})
        my_vcr.register_persister(_NoFiles)
        my_vcr.register_matcher("astrobench_content", _same_body)
        if self.configure is not None:
            self.configure(my_vcr)
        self._cm = my_vcr.use_cassette(
            self.path, record_mode="all", match_on=["astrobench_content"],
            before_record_request=as_list(user_req) + [self._on_request],
            before_record_response=as_list(user_res) + [self._on_response],
            decode_compressed_response=True)
        self._cm.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)
