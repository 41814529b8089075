"""Throughput under a requests budget: the adaptive client against the fixed one it replaced.

A loopback server (``tests.support.ratelimit_server``) admits ``--budget``
requests per rolling ``--window`` seconds (a requests-per-minute limit,
scaled down) and answers each after ``--latency`` seconds; beyond the
budget it answers 429. Both clients ask the same ``--requests`` images at
``--concurrency``:

- before: a fixed number in flight, the openai client's own retries
  (``max_retries`` 6, honouring Retry-After), as the provider did before;
- after: ``OpenAIChatProvider`` (adaptive limit, Retry-After and
  x-ratelimit headers, 429s retried apart from other failures).

Four servers: with Retry-After and x-ratelimit headers, with Retry-After
only, with neither, and with both where refused requests use up the budget
too (as OpenAI documents: "429s-count"). The table gives, per client and server,
the answers, failed samples, 429s, wall time, answers/s, the admitted rate
after the first window (whose burst every client gets) against the budget,
and the accuracy (the stub's designed answers: 0.75 when nothing fails).
Nothing is asserted; ``test_perf_ratelimit_script.py`` runs it at toy size.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SERVERS = {"headers": {"retry_after": True, "headers": True},
           "retry-after": {"retry_after": True, "headers": False},
           "none": {"retry_after": False, "headers": False},
           "429s-count": {"retry_after": True, "headers": True, "refused_count": True}}
HEADERS = ["client", "server", "answers", "failed", "429s", "wall s", "answers/s", "steady/s", "budget/s",
           "steady / budget", "accuracy"]


def requests(n: int) -> list[Any]:
    """``n`` marked images whose designed accuracy is 0.75 (every fourth answer wrong)."""
    import numpy as np

    from benchmark.core import Request
    from tests.support.openai_stub import CORRECT, WRONG, mark_image

    rng = np.random.default_rng(0)
    styles = (CORRECT, CORRECT, WRONG, CORRECT)
    return [Request(str(i), "Which category?", mark_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                                                          label=i % 4, style=styles[i % 4], n_classes=4), 4)
            for i in range(n)]


def provider(url: str, concurrency: int) -> Any:
    from benchmark.config import ModelConfig
    from benchmark.providers.openai_chat import OpenAIChatProvider

    model = ModelConfig("budget", "openai", "stub-vlm", settings={"base_url": url, "concurrency": concurrency})
    return OpenAIChatProvider.from_config(model, api_key="sk-budget-test")


def run_before(url: str, reqs: list[Any], concurrency: int) -> list[Any]:
    """The provider before this change: ``concurrency`` in flight, the openai client retrying (6 times)."""
    import openai

    from benchmark.core import Answer
    from benchmark.recording.completions import answer_from_completion, parse_completion

    p = provider(url, concurrency)
    client = openai.OpenAI(api_key="sk-budget-test", base_url=url, max_retries=6, timeout=60.0)

    def one(r: Any) -> Answer:
        try:
            raw = client.chat.completions.with_raw_response.create(**p.request_body(r))
        except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
            return Answer(r.sample_id, raw="", error=f"{type(exc).__name__}: {exc}")
        return answer_from_completion(r.sample_id, parse_completion(raw.http_response.content))

    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(one, reqs))
    client.close()
    return answers


def run_after(url: str, reqs: list[Any], concurrency: int) -> list[Any]:
    p = provider(url, concurrency)
    try:
        return p.classify(reqs)
    finally:
        p.close()


def measure(args: argparse.Namespace) -> list[list[str]]:
    from benchmark.parsing import parse_answer
    from tests.support.ratelimit_server import RateLimitedStub

    reqs = requests(args.requests)
    truth = {r.sample_id: int(r.sample_id) % 4 for r in reqs}
    with RateLimitedStub(budget=1000) as stub:  # warm-up: imports and first connections, untimed
        run_before(stub.base_url, reqs[:2], 2)
        run_after(stub.base_url, reqs[:2], 2)
    rows = []
    for server in args.servers:
        for name, run in (("before (fixed, client retries)", run_before), ("after (adaptive)", run_after)):
            with RateLimitedStub(budget=args.budget, window_s=args.window, delay_s=args.latency,
                                 **SERVERS[server]) as stub:
                start = time.perf_counter()
                answers = run(stub.base_url, reqs, args.concurrency)
                wall = time.perf_counter() - start
            assert stub.max_in_any_window() <= args.budget  # the server kept its budget
            ok = [a for a in answers if a.error is None]
            correct = sum(parse_answer(a.raw, 4) == truth[a.sample_id] for a in ok)
            steady = stub.steady_rate()
            budget = args.budget / args.window
            rows.append([name, server, str(len(ok)), str(len(answers) - len(ok)), str(stub.refused),
                         f"{wall:.2f}", f"{len(ok) / wall:.1f}", "-" if steady is None else f"{steady:.1f}",
                         f"{budget:.1f}", "-" if steady is None else f"{steady / budget:.0%}",
                         f"{correct / len(reqs):.3f}"])
            print("  ".join(rows[-1]), flush=True)
    return rows


def table(rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=40, help="requests admitted per window (default 40)")
    ap.add_argument("--window", type=float, default=1.0, help="the rolling window, seconds (default 1)")
    ap.add_argument("--requests", type=int, default=400, help="images asked per run (default 400)")
    ap.add_argument("--latency", type=float, default=0.2, help="seconds per answer (default 0.2)")
    ap.add_argument("--concurrency", type=int, default=16, help="requests in flight, at most (default 16)")
    ap.add_argument("--servers", default="headers,retry-after,none,429s-count",
                    help=f"comma-separated, of {list(SERVERS)} (default all)")
    args = ap.parse_args(argv)
    args.servers = [s for s in args.servers.split(",") if s]
    unknown = [s for s in args.servers if s not in SERVERS]
    if unknown:
        ap.error(f"expected --servers from {list(SERVERS)}, found {unknown}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"budget {args.budget} requests per {args.window:g} s rolling window, {args.requests} requests, "
          f"latency {args.latency:g} s, concurrency {args.concurrency}", flush=True)
    rows = measure(args)
    print("\n" + table(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
