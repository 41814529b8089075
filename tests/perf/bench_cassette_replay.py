"""Replay speed, scaling and size of recordings, side by side in one run.

    python tests/perf/bench_cassette_replay.py [N] [--scales 500,5000,50000] [--rerecord 2000,4000]

Replay of N recorded answers (default 500) through the project's OpenAI provider:
  floor   the N calls answered in-process by an httpx MockTransport from a dict
          (the openai client with no network: the cheapest a client-based replay can be)
  ours    the recording layer (benchmark.recording): answers from the log's index,
          parsed by the provider's own parser; no image encoding, no HTTP client
  vcrpy   a vcrpy cassette with its defaults (YAML, match_on method/uri/body)
Then ours alone at growing sizes (synthetic logs in the real format), and
``--record-mode all`` over an existing recording, live against the loopback
stand-in, at two sizes. Targets: floor/ours >= 10, vcrpy/ours >= 300, O(n)
replay up to 50,000 answers, O(n) re-recording, <= 1 KB per answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmark.config import ModelConfig  # noqa: E402
from benchmark.core import Request  # noqa: E402
from benchmark.providers.openai_chat import OpenAIChatProvider  # noqa: E402
from benchmark.recording import Recording, answer_requests, canonical_json, content_key  # noqa: E402
from benchmark.recording.log import FORMAT, compact_texts, iter_lines, record_line  # noqa: E402
from tests.openai_stub import OpenAIStub, answer_for, mark_image  # noqa: E402

try:
    import httpx2 as httpx  # the transport library of openai>=3
except ImportError:  # pragma: no cover
    import httpx


def make_requests(n: int, size: int = 64) -> list[Request]:
    rng = np.random.default_rng(0)
    prompt = (ROOT / "cases" / "prompts" / "morphology" / "paper.txt").read_text()
    return [Request(str(i), prompt, mark_image(rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                                               label=i % 4, style=i % 5, n_classes=4), 4) for i in range(n)]


def provider(base_url: str, http_client=None) -> OpenAIChatProvider:
    model = ModelConfig("bench", "openai", "gpt-4o",
                        settings={"base_url": base_url, "concurrency": 8, "max_tokens": 20})
    settings = OpenAIChatProvider.from_config(model, api_key="sk-x").settings
    return OpenAIChatProvider(name="bench", model="gpt-4o", settings=settings, api_key="sk-bench",
                              http_client=http_client)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def check(answers, reqs) -> None:
    got = answers if isinstance(answers, dict) else {a.sample_id: a for a in answers}
    assert {k: a.raw for k, a in got.items()} == {r.sample_id: answer_for(r.image) for r in reqs}, \
        "replayed answers differ from the recorded ones"


def completion(text: str) -> dict:
    return {"id": "chatcmpl-9xYzAbCdEfGhIjKlMnOpQrStUvWx", "object": "chat.completion", "created": 1718000000,
            "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_9f2bfdaa89",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 441, "completion_tokens": 3, "total_tokens": 444}}


def record_ours(base_url: str, path: Path, reqs, mode: str = "once") -> None:
    with Recording(path, mode=mode, announce=lambda _: None) as rec:
        answer_requests(provider(base_url), reqs, recording=rec)
        rec.finish(complete=True)


def replay_ours(path: Path, reqs) -> dict:
    with Recording(path, mode="none") as rec:
        return answer_requests(provider("http://127.0.0.1:9/v1"), reqs, recording=rec)


def synthetic_log(path: Path, reqs) -> None:
    """A recording in the real format, written directly (no HTTP): for the scaling rows."""
    p = provider("http://127.0.0.1:9/v1")
    prompts: dict[str, str] = {}
    lines = []
    for r in reqs:
        canon = p.canonical_request(r)
        rest = compact_texts({"request": canon, "response": completion(answer_for(r.image))}, prompts)
        lines.append(record_line(content_key(canonical_json(canon)), r.sample_id, r.image_sha256, rest))
    path.write_bytes(b"\n".join(iter_lines({"format": FORMAT, "complete": True}, prompts, lines)) + b"\n")


def main(n: int, scales: list[int], rerecord: list[int]) -> None:
    import vcr

    reqs = make_requests(n)
    tmp = Path(tempfile.mkdtemp(prefix="astrobench-perf-from-test-server-"))
    ours_path = tmp / "ours.jsonl"
    vcr_path = tmp / "vcrpy-defaults.yaml"
    print(f"{n} requests, 64x64 PNG each, morphology prompt; temp dir {tmp}", flush=True)

    with OpenAIStub() as stub:
        t_rec_ours, _ = timed(lambda: record_ours(stub.base_url, ours_path, reqs))
        print(f"recorded ours in {t_rec_ours:.1f} s", flush=True)
        default_vcr = vcr.VCR(serializer="yaml", match_on=("method", "uri", "body"), record_mode="once")

        def record_vcr():
            with default_vcr.use_cassette(str(vcr_path)):
                provider(stub.base_url).classify(reqs)

        t_rec_vcr, _ = timed(record_vcr)
        print(f"recorded vcrpy-default cassette in {t_rec_vcr:.1f} s", flush=True)
        base_url = stub.base_url

        rerecord_rows = []
        for m in rerecord:  # --record-mode all over an existing recording of m answers
            more = make_requests(m, size=16)
            path = tmp / f"all-{m}.jsonl"
            record_ours(base_url, path, more)
            t_all, _ = timed(lambda: record_ours(base_url, path, more, mode="all"))
            rerecord_rows.append((m, t_all))
            print(f"--record-mode all over {m} answers: {t_all:.2f} s", flush=True)

    replies = {}
    for req in reqs:
        body = provider(base_url).request_body(req)
        replies[json.dumps(body, sort_keys=True, separators=(",", ":"))] = completion(answer_for(req.image))

    def handler(request):
        key = json.dumps(json.loads(request.content), sort_keys=True, separators=(",", ":"))
        return httpx.Response(200, json=replies[key])

    floor_provider = provider(base_url, http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    t_floor, answers = timed(lambda: floor_provider.classify(reqs))
    check(answers, reqs)
    print(f"floor (MockTransport + dict): {t_floor:.3f} s", flush=True)

    runs = []
    for _ in range(3):  # best of three: the figure is small
        t, answers = timed(lambda: replay_ours(ours_path, reqs))
        check(answers, reqs)
        runs.append(t)
    t_ours = min(runs)
    print(f"ours (index replay):          {t_ours:.3f} s", flush=True)

    def replay_vcr():
        with default_vcr.use_cassette(str(vcr_path), record_mode="none"):
            return provider(base_url).classify(reqs)

    t_vcr, answers = timed(replay_vcr)
    check(answers, reqs)
    print(f"vcrpy defaults replay:        {t_vcr:.2f} s", flush=True)

    size_ours, size_vcr = ours_path.stat().st_size, vcr_path.stat().st_size
    print()
    print(f"{'replay of ' + str(n) + ' answers':40} {'replay s':>9} {'record s':>9} {'KB/answer':>10}")
    for name, t, rec, size in (
        ("floor: MockTransport from a dict", t_floor, "-", "-"),
        ("ours: recording index", t_ours, f"{t_rec_ours:.1f}", f"{size_ours / n / 1024:.2f}"),
        ("vcrpy defaults (YAML, method/uri/body)", t_vcr, f"{t_rec_vcr:.1f}", f"{size_vcr / n / 1024:.2f}"),
    ):
        print(f"{name:40} {t:9.3f} {rec:>9} {size:>10}")
    print()
    print(f"floor / ours  = {t_floor / t_ours:.1f}  (target >= 10)   {'OK' if t_floor >= 10 * t_ours else 'MISSED'}")
    print(f"vcrpy / ours  = {t_vcr / t_ours:.0f}  (target >= 300)  {'OK' if t_vcr >= 300 * t_ours else 'MISSED'}")
    print(f"size per answer: ours {size_ours / n:.0f} B (target <= 1024), vcrpy {size_vcr / n:.0f} B")

    if scales:
        print()
        print(f"{'ours at scale (synthetic logs)':32} {'answers':>8} {'replay s':>9} {'us/answer':>10} {'B/answer':>9}")
        for m in scales:
            more = make_requests(m, size=8)
            path = tmp / f"scale-{m}.jsonl"
            synthetic_log(path, more)
            t, answers = timed(lambda: replay_ours(path, more))
            check(answers, more)
            print(f"{'':32} {m:8d} {t:9.3f} {t / m * 1e6:10.1f} {path.stat().st_size / m:9.0f}", flush=True)
    if len(rerecord_rows) >= 2:
        (m1, t1), (m2, t2) = rerecord_rows[0], rerecord_rows[-1]
        print(f"\n--record-mode all: {m1} -> {m2} answers took {t1:.2f} -> {t2:.2f} s "
              f"(x{t2 / t1:.1f} for x{m2 / m1:.1f} answers; O(n^2) would be x{(m2 / m1) ** 2:.1f})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int, nargs="?", default=500)
    ap.add_argument("--scales", default="500,5000,50000")
    ap.add_argument("--rerecord", default="2000,4000")
    args = ap.parse_args()
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    main(args.n, ints(args.scales), ints(args.rerecord))
