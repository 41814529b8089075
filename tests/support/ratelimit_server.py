"""A loopback chat-completions server with a requests budget, as OpenAI enforces one.

:class:`RateLimitedStub` is the :class:`OpenAIStub` (same answers, same
request log) that admits at most ``budget`` requests in any rolling window of
``window_s`` seconds (OpenAI's "requests per minute", scaled down so tests
take seconds). A request beyond the budget gets a 429 with ``Retry-After`` /
``retry-after-ms`` (the time until the oldest request in the window leaves
it); every response carries OpenAI's ``x-ratelimit-limit-requests``,
``-remaining-requests`` and ``-reset-requests`` (until the window is empty
again, in OpenAI's "1s" / "20ms" format). Refused requests never reach the model;
with ``refused_count=True`` they use up the budget too, as OpenAI documents
("unsuccessful requests contribute to your per-minute limit").
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any

from tests.support.openai_stub import OpenAIStub


def go_duration(seconds: float) -> str:
    """OpenAI's reset format: "20ms" under a second, else "1s", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{rest_text}s" if minutes else f"{rest_text}s"


class RateLimitedStub(OpenAIStub):
    """``with RateLimitedStub(budget=20, window_s=1.0) as stub:``; ``retry_after=False``
    refuses without saying when to come back, ``headers=False`` sends no x-ratelimit headers."""

    def __init__(self, *, budget: int, window_s: float = 1.0, delay_s: float = 0.0,
                 retry_after: bool = True, headers: bool = True, refused_count: bool = False) -> None:
        super().__init__(delay_s=delay_s)
        self.budget, self.window_s = budget, window_s
        self.retry_after, self.headers, self.refused_count = retry_after, headers, refused_count
        self.admitted: list[float] = []  # monotonic times of the requests let through
        self.refused = 0
        self._window: deque[float] = deque()
        self._budget_lock = threading.Lock()

    def gate(self, body: dict[str, Any]) -> tuple[int | None, dict[str, str]]:
        with self._budget_lock:
            now = time.monotonic()
            while self._window and self._window[0] <= now - self.window_s:
                self._window.popleft()
            refuse = len(self._window) >= self.budget
            if refuse:
                self.refused += 1
                if self.refused_count:  # the refused request uses up budget: the window stays full longer
                    self._window.append(now)
            else:
                self._window.append(now)
                self.admitted.append(now)
            out: dict[str, str] = {}
            if self.headers:
                out = {"x-ratelimit-limit-requests": str(self.budget),
                       "x-ratelimit-remaining-requests": str(self.budget - len(self._window)),
                       "x-ratelimit-reset-requests": go_duration(self._window[-1] + self.window_s - now)}
            if refuse and self.retry_after:
                wait = self._window[0] + self.window_s - now
                out.update({"retry-after-ms": str(max(1, math.ceil(wait * 1000))),
                            "retry-after": str(max(1, math.ceil(wait)))})
            return (429 if refuse else None), out

    def max_in_any_window(self) -> int:
        """The most requests admitted in any rolling window (<= budget: the stand-in keeps its word)."""
        times, best, lo = self.admitted, 0, 0
        for hi, t in enumerate(times):
            while times[lo] <= t - self.window_s:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def steady_rate(self) -> float | None:
        """Requests admitted per second after the first window (whose burst any client gets
        for free), up to the last admitted one; None when the run was shorter."""
        if not self.admitted:
            return None
        start = self.admitted[0] + self.window_s
        later = [t for t in self.admitted if t >= start]
        span = (later[-1] - start) if later else 0.0
        return len(later) / span if span > 0 else None
