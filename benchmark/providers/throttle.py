"""Rate-limit-aware concurrency and data-parallel replicas for HTTP providers.

:class:`Throttle` bounds the requests in flight by a limit that adapts
(AIMD, as TCP and inspect_ai do): +1 after each window of successes, halved
on a 429 (once per window: the 429s of requests sent before the last cut do
not cut again), between a floor and the configured maximum. It also honours
what the server says: ``Retry-After`` / ``retry-after-ms`` pause every new
request, and ``x-ratelimit-remaining-requests`` / ``-tokens`` with their
``x-ratelimit-reset-*`` (OpenAI's "1s", "6m0s", "20ms") hold requests back
before the budget runs out. It counts what a case met (:meth:`Throttle.take_stats`).

:class:`ReplicaPool` spreads requests over several servers of one model (the
least busy first); a server that fails (connection error, 5xx) rests for a
cooldown, then gets one request at a time until one succeeds.

Both are thread-safe and know nothing of the openai client.
"""

from __future__ import annotations

import email.utils
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_RETRY_AFTER_S = 120.0  # a longer Retry-After is not waited for (as the openai client)
RETRIED_4XX = (408, 409, 429)  # client errors worth asking again (a 429 goes through the throttle)
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|h|m|s)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

OK, LIMITED, FAILED = "ok", "limited", "failed"  # how a request ended (Throttle.release)


def parse_duration(text: Any) -> float | None:
    """Seconds in an OpenAI rate-limit reset ("1s", "6m0s", "20ms", "1h2m3.5s") or a bare
    number of seconds; None when ``text`` is neither."""
    if not isinstance(text, str) or not text.strip():
        return None
    text = text.strip()
    try:
        value = float(text)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    total, pos = 0.0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    return total if pos == len(text) else None


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """The wait a 429/503 asks for: ``retry-after-ms``, else ``retry-after`` (seconds or an
    HTTP date); None when absent or unreadable. Negative waits are 0."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        return max(0.0, seconds) if math.isfinite(seconds) else None
    value = headers.get("retry-after")
    try:
        stamp = email.utils.parsedate_tz(value) if value else None
        return max(0.0, email.utils.mktime_tz(stamp) - time.time()) if stamp else None
    except (TypeError, ValueError, OverflowError):
        return None


def _int(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(float(headers.get(name, "")))
    except ValueError:
        return None


@dataclass(frozen=True)
class Budget:
    """What a response's ``x-ratelimit-*`` headers say, in requests: how many more fit the
    budget (when the server counted that request), one request's refill time, and the most
    that ever fit."""

    fits: int
    refill_s: float
    most: float


def header_budget(headers: Mapping[str, str] | None, tokens_per_request: float | None) -> Budget | None:
    """The budget in a response's ``x-ratelimit-*`` headers, or None without them.

    Reset times are until the budget is whole again (OpenAI), so one request's refill is
    ``reset / (limit - remaining)`` when the limit is given (else the whole reset, to be
    safe). Tokens count once a request's token use is known (``tokens_per_request``); the
    scarcer of requests and tokens binds."""
    if not headers:
        return None
    found: list[Budget] = []
    for unit, need in (("requests", 1.0), ("tokens", tokens_per_request)):
        remaining = _int(headers, f"x-ratelimit-remaining-{unit}")
        if remaining is None or not need:
            continue
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{unit}")) or 0.0
        limit = _int(headers, f"x-ratelimit-limit-{unit}")
        used = (limit - remaining) if limit is not None else 0
        refill = need * reset / used if used > 0 else reset
        most = limit / need if limit is not None else math.inf
        found.append(Budget(max(0, int(remaining // need)), min(refill, reset) if used > 0 else refill, most))
    if not found:
        return None
    return min(found, key=lambda b: (b.fits, -b.refill_s))


def backoff_s(attempt: int, *, base: float = 0.5, cap: float = 8.0) -> float:
    """Exponential backoff with jitter, as the openai client: base * 2^(attempt-1), capped, minus up to 25%."""
    return min(base * 2 ** max(0, attempt - 1), cap) * (1 - 0.25 * random.random())


@dataclass
class Ticket:
    """One request in flight: the window of the limit it was sent in, its place among all
    requests sent, and when it went."""

    epoch: int
    seq: int
    at: float


@dataclass
class _Window:
    """What one stretch of live requests met (reset by ``take_stats``)."""

    limit_start: int
    limit_min: int
    requests: int = 0
    rate_limited: int = 0
    failed_attempts: int = 0
    in_flight_s: float = 0.0  # integral of requests in flight over time
    first: float | None = None
    last: float | None = None


class Throttle:
    """At most ``limit`` requests in flight; ``limit`` adapts between ``floor`` and ``maximum``
    (AIMD), and new requests wait while the server's rate-limit headers say so."""

    def __init__(self, *, maximum: int, floor: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= floor <= maximum:
            raise ValueError(f"expected 1 <= floor <= maximum, found floor {floor}, maximum {maximum}")
        self.maximum, self.floor = maximum, floor
        self.limit = maximum
        self._clock = clock
        self._cond = threading.Condition()
        self._in_flight = 0
        self._epoch = 0
        self._successes = 0
        self._pause_until = 0.0      # Retry-After: nothing is sent before this
        self._sent = 0               # requests sent so far
        self._bucket: float | None = None  # requests the server's budget takes now (from its headers)
        self._refill_s = 0.0         # one request's refill time
        self._most = math.inf        # the bucket's size
        self._bucket_at = 0.0
        self._header_seq = -1        # the latest request whose headers set the bucket
        self._tokens: tuple[float, int] = (0.0, 0)  # total tokens of answers, answers counted
        self._at = clock()
        self._window = _Window(self.limit, self.limit)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _tick(self, now: float) -> None:
        self._window.in_flight_s += self._in_flight * (now - self._at)
        self._at = now

    def _refill(self, now: float) -> None:
        if self._bucket is not None and now > self._bucket_at:
            if self._refill_s > 0:
                self._bucket = min(self._most, self._bucket + (now - self._bucket_at) / self._refill_s)
            self._bucket_at = now

    def _wait_s(self, now: float) -> float:
        """0 when a request may go now, else how long to wait (inf: until a release)."""
        if now < self._pause_until:
            return self._pause_until - now
        self._refill(now)
        if self._bucket is not None and self._bucket < 1:
            if self._refill_s <= 0:
                self._bucket = None  # no refill rate given: the next answer tells
            else:
                return (1 - self._bucket) * self._refill_s
        return math.inf if self._in_flight >= self.limit else 0.0

    def wait_s(self) -> float:
        """How long a request would wait now for the server (Retry-After, header budget); 0: it may
        go as soon as the limit allows."""
        with self._cond:
            wait = self._wait_s(self._clock())
            return 0.0 if math.isinf(wait) else wait

    def acquire(self) -> Ticket:
        """Wait for a slot (the limit, Retry-After and the header budget allowing), then take it."""
        with self._cond:
            while (wait := self._wait_s(self._clock())) > 0:
                self._cond.wait(None if math.isinf(wait) else wait)
            now = self._clock()
            self._tick(now)
            w = self._window
            w.first = now if w.first is None else w.first
            w.requests += 1
            self._in_flight += 1
            self._sent += 1
            if self._bucket is not None:
                self._bucket -= 1
            return Ticket(self._epoch, self._sent, now)

    def release(self, ticket: Ticket, outcome: str, *, headers: Mapping[str, str] | None = None,
                tokens: int | None = None) -> float | None:
        """End a request: ``outcome`` is OK, LIMITED (a 429) or FAILED. Returns the wait a 429
        asked for (Retry-After), which then holds back every request; None if it named none."""
        with self._cond:
            now = self._clock()
            self._tick(now)
            self._in_flight -= 1
            self._window.last = now
            wait = None
            if outcome == OK:
                self._successes += 1
                if self._successes >= self.limit:  # a window of successes: one more in flight
                    self.limit, self._successes = min(self.maximum, self.limit + 1), 0
                if tokens:
                    total, n = self._tokens
                    self._tokens = (total + tokens, n + 1)
            elif outcome == LIMITED:
                self._window.rate_limited += 1
                if ticket.epoch == self._epoch:  # the first 429 of this window cuts the limit
                    self.limit, self._successes = max(self.floor, (self.limit + 1) // 2), 0
                    self._epoch += 1
                    self._window.limit_min = min(self._window.limit_min, self.limit)
                wait = retry_after_s(headers)
                if wait is not None and wait <= MAX_RETRY_AFTER_S:
                    self._pause_until = max(self._pause_until, now + wait)
            else:
                self._window.failed_attempts += 1
            total, n = self._tokens
            budget = header_budget(headers, total / n if n else None)
            if budget is not None and ticket.seq > self._header_seq:  # newer news than the bucket's
                # The server counted up to this request when it was sent; those sent since are not in it.
                self._header_seq, self._refill_s, self._most = ticket.seq, budget.refill_s, budget.most
                self._bucket, self._bucket_at = float(budget.fits - (self._sent - ticket.seq)), ticket.at
                self._refill(now)
            self._cond.notify_all()
            return wait

    def take_stats(self, **extra: Any) -> dict[str, Any] | None:
        """What the requests since the last call met (None if none was sent), and start anew:
        requests sent, 429s, other failed attempts (5xx, connection, malformed), the mean
        requests in flight from the first send to the last answer (the effective concurrency),
        and the limit at the start, its lowest and now."""
        with self._cond:
            w, self._window = self._window, _Window(self.limit, self.limit)
            if not w.requests:
                return None
            span = (w.last or w.first or 0.0) - (w.first or 0.0)
            return {"requests": w.requests, "rate_limited": w.rate_limited, "failed_attempts": w.failed_attempts,
                    "mean_in_flight": round(w.in_flight_s / span, 3) if span > 0 else None,
                    "live_s": round(span, 3), "limit_start": w.limit_start, "limit_min": w.limit_min,
                    "limit_end": self.limit, "concurrency": self.maximum, "min_concurrency": self.floor, **extra}


@dataclass
class Replica:
    """One server of the model (``url`` None: the client's default)."""

    url: str | None
    client: Any = None
    in_flight: int = 0
    answers: int = 0
    failures: int = 0
    down_until: float = 0.0
    strikes: int = 0          # failures in a row: each doubles the cooldown
    probing: bool = False     # back from a cooldown: one request at a time until one succeeds
    sent: int = field(default=0, repr=False)


class ReplicaPool:
    """Data-parallel servers of one model; :meth:`pick` chooses the least busy one that is up."""

    def __init__(self, urls: list[str | None], make_client: Callable[[str | None], Any], *,
                 cooldown_s: float = 5.0, max_cooldown_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.replicas = [Replica(u) for u in urls]
        self.cooldown_s, self.max_cooldown_s = cooldown_s, max_cooldown_s
        self._make_client = make_client
        self._clock = clock
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.replicas)

    def client(self, replica: Replica) -> Any:
        with self._lock:
            if replica.client is None:
                replica.client = self._make_client(replica.url)
            return replica.client

    def _usable(self, r: Replica, now: float) -> bool:
        return r.down_until <= now and not (r.probing and r.in_flight)

    def pick(self) -> Replica:
        """The up replica with the fewest requests in flight (then the fewest sent); when none
        is up, the one back soonest (the caller's retry budget then decides)."""
        with self._lock:
            now = self._clock()
            up = [r for r in self.replicas if self._usable(r, now)]
            chosen = (min(up, key=lambda r: (r.in_flight, r.sent)) if up
                      else min(self.replicas, key=lambda r: (r.down_until, r.in_flight)))
            chosen.in_flight += 1
            chosen.sent += 1
            return chosen

    def done(self, replica: Replica, ok: bool) -> None:
        """``ok``: it answered (any HTTP answer but a 5xx). Otherwise it rests for a cooldown
        that doubles with each failure in a row, and comes back probing."""
        with self._lock:
            replica.in_flight -= 1
            if ok:
                replica.strikes, replica.probing = 0, False
                return
            replica.failures += 1
            replica.strikes += 1
            rest = min(self.cooldown_s * 2 ** (replica.strikes - 1), self.max_cooldown_s)
            replica.down_until = max(replica.down_until, self._clock() + rest)
            replica.probing = True

    def any_up(self) -> bool:
        with self._lock:
            now = self._clock()
            return any(self._usable(r, now) for r in self.replicas)

    def answered(self, replica: Replica) -> None:
        with self._lock:
            replica.answers += 1

    def take_stats(self, redact: Callable[[str], str] = str) -> list[dict[str, Any]]:
        """Per replica since the last call: its URL (through ``redact``), answers, failures."""
        with self._lock:
            out = [{"url": redact(r.url) if r.url else "(default)", "answers": r.answers, "failures": r.failures}
                   for r in self.replicas]
            for r in self.replicas:
                r.answers = r.failures = 0
            return out

    def close(self) -> None:
        for r in self.replicas:
            if r.client is not None:
                r.client.close()
                r.client = None
