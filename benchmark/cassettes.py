"""vcrpy cassettes for API models: compact, content-matched, secret-free and
crash-safe.

* **Content matching.** Before anything is matched or stored, a chat request
  is reduced to a canonical body: the JSON the client sent, with each base64
  image replaced by the sha256 of its pixels (``image_digest``), serialised
  with sorted keys. Requests match on method + canonical body, i.e. model,
  prompt text, image and generation parameters; order, ``--limit`` and
  concurrency do not matter, and a changed prompt is a miss.
* **Compact.** No request headers are stored (so no ``Authorization``,
  ``api-key``, ``OpenAI-Organization``/``-Project``, cookies); the URI is
  stored without query string or user info; response headers are reduced to
  ``content-type``; prompts are stored once per cassette; one interaction
  per line, sorted, so diffs stay readable.
* **Crash-safe.** While recording, each new interaction is appended and
  fsync'd to ``<cassette>.journal`` the moment it completes. Loading reads
  the cassette plus the journal, so a run killed with SIGKILL keeps every
  paid answer; a clean exit writes the cassette atomically and removes the
  journal. ``once`` with no finished cassette therefore records only what
  is missing.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from benchmark.core import BenchError, image_digest, write_atomic
from benchmark.store import append_record, read_records

FORMAT = "astrobench-cassette/1"
CHAT_PATH = "/chat/completions"
RECORD_MODES = ("none", "once", "new_episodes", "all", "rewrite")
_KEPT_RESPONSE_HEADERS = {"content-type"}


# -- canonical requests -------------------------------------------------------
def _data_url_digest(url: str) -> str:
    from PIL import Image

    header, _, payload = url.partition(",")
    if not header.startswith("data:image/") or ";base64" not in header:
        raise BenchError(f"expected a base64 image data URL, found {url[:40]!r}...")
    image = Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB")
    return image_digest(np.asarray(image))


def canonical_body(body: dict[str, Any]) -> str:
    """The chat request as matched and stored: images -> pixel sha256."""
    body = copy.deepcopy(body)
    for message in body.get("messages") or []:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            ref = part.get("image_url") if isinstance(part, dict) else None
            if isinstance(ref, dict) and "url" in ref:
                url = ref.pop("url")
                ref["sha256"] = _data_url_digest(url) if url.startswith("data:") else f"url:{url}"
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def image_digests_of(canonical: str) -> list[str]:
    body = json.loads(canonical)
    return [
        part["image_url"]["sha256"]
        for message in body.get("messages") or []
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and isinstance(part.get("image_url"), dict)
    ]


def _clean_uri(uri: str) -> str:
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class _Canonicalizer:
    """vcrpy ``before_record_request``: chat requests -> canonical; others pass
    through unrecorded (e.g. dataset downloads). Memoised per body object,
    because vcrpy calls it several times per request."""

    def __init__(self) -> None:
        self._memo: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def __call__(self, request: Any) -> Any:
        if not urlsplit(request.uri).path.endswith(CHAT_PATH):
            return None
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        # Already canonical (a stored request): no image URL left to replace. A
        # literal '"url":' cannot occur inside a JSON string, where quotes are escaped.
        canonical = body if b'"url":' not in body else self._memo.get(body)
        if canonical is None:
            try:
                canonical = canonical_body(json.loads(body)).encode()
            except ValueError as exc:
                raise BenchError(f"chat request body is not JSON ({exc})") from None
            with self._lock:
                if len(self._memo) > 4096:
                    self._memo.clear()
                self._memo[body] = canonical
        request.body = canonical
        request.uri = _clean_uri(request.uri)
        request.headers = {}
        return request


def _strip_response(response: dict[str, Any]) -> dict[str, Any] | None:
    """vcrpy ``before_record_response``: keep only answers (2xx), with
    ``content-type`` as the one header. A 429/5xx is never recorded, or its
    replay would fail the same request forever."""
    if not 200 <= int(response.get("status", {}).get("code", 0)) < 300:
        return None
    headers = {k: v for k, v in (response.get("headers") or {}).items()
               if k.lower() in _KEPT_RESPONSE_HEADERS}
    return {**response, "headers": headers}


def _content_matcher(r1: Any, r2: Any) -> bool:
    return r1.body == r2.body


# -- compact serializer ------------------------------------------------------
def _encode_interaction(inter: dict[str, Any], prompts: dict[str, str]) -> dict[str, Any]:
    req, res = inter["request"], inter["response"]
    body = json.loads(req["body"])
    for message in body.get("messages") or []:
        content = message.get("content")
        parts = content if isinstance(content, list) else []
        for part in parts:
            if isinstance(part, dict) and part.get("type") == "text" and len(part.get("text", "")) > 64:
                digest = hashlib.sha256(part["text"].encode()).hexdigest()[:16]
                prompts[digest] = part["text"]
                part["text"] = {"prompt": digest}
    res_body = res.get("body", {}).get("string", "")
    try:
        res_body_out: Any = {"json": json.loads(res_body)}
    except (ValueError, TypeError):
        res_body_out = {"string": res_body}
    return {"request": {"method": req["method"], "uri": req["uri"], "body": body},
            "response": {"status": res["status"], "headers": res.get("headers", {}), "body": res_body_out}}


def _decode_interaction(line: dict[str, Any], prompts: dict[str, str]) -> dict[str, Any]:
    req, res = line["request"], line["response"]
    body = copy.deepcopy(req["body"])
    for message in body.get("messages") or []:
        for part in message.get("content") if isinstance(message.get("content"), list) else []:
            if isinstance(part, dict) and isinstance(part.get("text"), dict):
                part["text"] = prompts[part["text"]["prompt"]]
    res_body = res["body"]
    string = (json.dumps(res_body["json"], separators=(",", ":"), ensure_ascii=False)
              if "json" in res_body else res_body["string"])
    return {
        "request": {"method": req["method"], "uri": req["uri"], "headers": {},
                    "body": json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)},
        "response": {"status": res["status"], "headers": res.get("headers", {}), "body": {"string": string}},
    }


class CompactSerializer:
    """vcrpy serializer: a header line with the prompts, then one line per interaction."""

    @staticmethod
    def serialize(data: dict[str, Any]) -> str:
        prompts: dict[str, str] = {}
        lines = [_encode_interaction(i, prompts) for i in data["interactions"]]
        lines.sort(key=lambda x: json.dumps(x["request"], sort_keys=True))
        header = {"format": FORMAT, "prompts": dict(sorted(prompts.items()))}
        return "\n".join(json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                         for x in [header, *lines]) + "\n"

    @staticmethod
    def deserialize(text: str) -> dict[str, Any]:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        if not rows or rows[0].get("format") != FORMAT:
            found = rows[0].get("format") if rows and isinstance(rows[0], dict) else None
            raise ValueError(f"expected a first line with format {FORMAT!r}, found {found!r}")
        prompts = rows[0].get("prompts", {})
        return {"version": 1, "interactions": [_decode_interaction(r, prompts) for r in rows[1:]]}


# -- persister with journal ---------------------------------------------------
def journal_path(path: Path | str) -> Path:
    return Path(f"{path}.journal")


def _read_journal(path: Path) -> list[dict[str, Any]]:
    """Interactions from a journal (a torn last line is cut off, see benchmark.store)."""
    out = []
    for lineno, rec in read_records(path):
        try:
            out.append(_decode_interaction(rec, rec.get("prompts", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchError(f"{path}:{lineno}: not a journal record ({exc!r}); delete the line") from None
    return out


class CompactPersister:
    """vcrpy persister: cassette + journal on load, atomic write on save."""

    @classmethod
    def load_cassette(cls, cassette_path: str, serializer: Any) -> tuple[list, list]:
        from vcr.persisters.filesystem import CassetteNotFoundError
        from vcr.serialize import deserialize

        path = Path(cassette_path)
        requests: list = []
        responses: list = []
        if path.exists():
            try:
                requests, responses = deserialize(path.read_text(encoding="utf-8"), serializer)[:2]
            except (ValueError, KeyError, TypeError) as exc:
                raise BenchError(
                    f"cassette {path} does not parse as an astrobench cassette ({exc}); "
                    "re-record it with --record-mode rewrite, or restore it from version control"
                ) from None
        journal = _read_journal(journal_path(path))
        if journal:
            from vcr.request import Request
            from vcr.serializers.compat import convert_to_bytes

            # Journal answers are newer: they replace cassette entries with the same request.
            jreq = [Request._from_dict(i["request"]) for i in journal]
            jres = [convert_to_bytes(i["response"]) for i in journal]
            newer = {r.body for r in jreq}
            kept = [(q, s) for q, s in zip(requests, responses) if q.body not in newer]
            requests = [q for q, _ in kept] + jreq
            responses = [s for _, s in kept] + jres
        if not path.exists() and not journal:
            raise CassetteNotFoundError(str(path))
        return requests, responses

    @staticmethod
    def save_cassette(cassette_path: str, cassette_dict: dict[str, Any], serializer: Any) -> None:
        from vcr.serialize import serialize

        path = Path(cassette_path)
        write_atomic(path, serialize(cassette_dict, serializer))
        journal_path(path).unlink(missing_ok=True)


# -- one case's cassette --------------------------------------------------------
class CaseCassette:
    """``with CaseCassette(path, record_mode=...) as c:`` around a case's API calls."""

    def __init__(self, path: Path | str, *, record_mode: str = "none",
                 vcr_config: dict[str, Any] | None = None) -> None:
        if record_mode not in RECORD_MODES:
            raise BenchError(f"expected --record-mode in {RECORD_MODES}, found {record_mode!r}")
        self.path = Path(path)
        self.requested_mode = record_mode
        self.vcr_config = dict(vcr_config or {})
        self._lock = threading.Lock()

    @property
    def finished_exists(self) -> bool:
        return self.path.exists()

    @property
    def strict(self) -> bool:
        """True when a missing interaction must fail instead of being recorded."""
        return self.requested_mode == "none" or (self.requested_mode == "once" and self.finished_exists)

    def _effective_mode(self) -> str:
        if self.requested_mode == "rewrite":
            self.path.unlink(missing_ok=True)
            journal_path(self.path).unlink(missing_ok=True)
            return "new_episodes"
        if self.requested_mode == "once" and not self.finished_exists:
            return "new_episodes"  # resume a killed recording: keep the journal, add the rest
        return self.requested_mode

    def __enter__(self) -> CaseCassette:
        import vcr

        canonicalize = _Canonicalizer()
        user_before = self.vcr_config.pop("before_record_request", None)
        befores = ([user_before] if callable(user_before) else list(user_before or [])) + [canonicalize]
        my_vcr = vcr.VCR(**{k: v for k, v in self.vcr_config.items()
                            if k not in {"match_on", "serializer", "record_mode", "path"}})
        my_vcr.register_serializer("astrobench", CompactSerializer)
        my_vcr.register_persister(CompactPersister)
        my_vcr.register_matcher("astrobench_content", _content_matcher)
        mode = self._effective_mode()
        self._cm = my_vcr.use_cassette(
            str(self.path),
            serializer="astrobench",
            record_mode=mode,
            # The canonical body holds model, prompt, image digest and parameters;
            # only chat-completions POSTs are recorded, so one matcher suffices.
            match_on=["astrobench_content"],
            before_record_request=befores,
            before_record_response=[_strip_response],
            decode_compressed_response=True,
            allow_playback_repeats=True,
        )
        self.cassette = self._cm.__enter__()
        self._index: dict[bytes, list[int]] = {}
        for i, (req, _) in enumerate(self.cassette.data):
            self._index.setdefault(bytes(req.body), []).append(i)
        self._wrap_append()
        self._index_lookups()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)

    def _wrap_append(self) -> None:
        """Journal each newly recorded interaction before the call returns."""
        cassette = self.cassette
        original = cassette.append

        def append(request: Any, response: Any) -> None:
            with self._lock:
                before = len(cassette.data)
                original(request, response)
                if len(cassette.data) > before:
                    self._index.setdefault(bytes(cassette.data[-1][0].body), []).append(before)
                    self._journal(*cassette.data[-1])

        cassette.append = append  # instance attribute: this cassette only

    def _index_lookups(self) -> None:
        """O(1) matching. vcrpy scans every interaction with every matcher for
        each request (O(N^2) per cassette); our one matcher is equality of the
        canonical body, so a dict lookup gives the same answer."""
        cassette = self.cassette
        if not hasattr(cassette, "_responses"):  # another vcrpy: keep its own scan
            return

        def responses(request: Any) -> Any:
            request = cassette._before_record_request(request)
            if request is None:
                return
            for i in self._index.get(bytes(request.body), ()):
                yield i, cassette.data[i][1]

        cassette._responses = responses

    def _journal(self, request: Any, response: Any) -> None:
        from vcr.serializers.compat import convert_to_unicode

        inter = {"request": convert_to_unicode(request._to_dict()), "response": convert_to_unicode(response)}
        prompts: dict[str, str] = {}
        line = _encode_interaction(inter, prompts)
        line["prompts"] = prompts
        append_record(journal_path(self.path), line)

    # -- what is recorded ----------------------------------------------------------
    def recorded_bodies(self) -> set[bytes]:
        return {bytes(req.body) for req, _ in self.cassette.data}

    def recorded_image_digests(self) -> set[str]:
        out: set[str] = set()
        for body in self.recorded_bodies():
            out.update(image_digests_of(body.decode()))
        return out
