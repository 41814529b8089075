"""Replay speed and size of cassettes, side by side in one run.

    python tests/perf/bench_cassette_replay.py [N]    (default N = 500)

Through the real ``openai`` client (the project's provider, concurrency 8):
  floor   the N calls answered in-process by an httpx MockTransport from a dict
  ours    replay of an astrobench cassette (benchmark.cassettes)
  vcrpy   replay of a vcrpy cassette with its defaults (YAML, match_on method/uri/body)
Recording runs against the loopback stand-in server. Targets: ours <= 2x floor,
vcrpy / ours >= 30, and <= 2 KB per interaction.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmark.cassettes import CaseCassette  # noqa: E402
from benchmark.config import ModelConfig  # noqa: E402
from benchmark.providers.openai_chat import OpenAIChatProvider  # noqa: E402
from benchmark.core import Request  # noqa: E402
from tests.openai_stub import OpenAIStub, answer_for, mark_image  # noqa: E402

try:
    import httpx2 as httpx  # the transport library of openai>=3
except ImportError:  # pragma: no cover
    import httpx


def make_requests(n: int) -> list[Request]:
    rng = np.random.default_rng(0)
    prompt = (ROOT / "cases" / "prompts" / "morphology" / "paper.txt").read_text()
    return [Request(str(i), prompt, mark_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                                               label=i % 4, style=i % 5, n_classes=4), 4) for i in range(n)]


def provider(base_url: str, http_client=None) -> OpenAIChatProvider:
    model = ModelConfig("bench", "openai", "gpt-4o",
                        settings={"base_url": base_url, "concurrency": 8, "max_tokens": 20})
    settings = {**{k: v for k, v in OpenAIChatProvider.from_config(model, api_key="sk-x").settings.items()}}
    return OpenAIChatProvider(name="bench", model="gpt-4o", settings=settings, api_key="sk-bench",
                              http_client=http_client)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def check(answers, reqs) -> None:
    want = {r.sample_id: answer_for(r.image) for r in reqs}
    got = {a.sample_id: a.raw for a in answers}
    assert got == want, "replayed answers differ from the recorded ones"


def main(n: int) -> None:
    import vcr

    reqs = make_requests(n)
    tmp = Path(tempfile.mkdtemp(prefix="astrobench-perf-from-test-server-"))
    ours_path = tmp / "ours.json"
    vcr_path = tmp / "vcrpy-defaults.yaml"
    print(f"{n} requests, 64x64 PNG each, morphology prompt; temp dir {tmp}", flush=True)

    with OpenAIStub() as stub:
        t_rec_ours, _ = timed(lambda: _record_ours(stub.base_url, ours_path, reqs))
        print(f"recorded astrobench cassette in {t_rec_ours:.1f} s", flush=True)
        default_vcr = vcr.VCR(serializer="yaml", match_on=("method", "uri", "body"), record_mode="once")
        t_rec_vcr, _ = timed(lambda: _record_vcr(default_vcr, stub.base_url, vcr_path, reqs))
        print(f"recorded vcrpy-default cassette in {t_rec_vcr:.1f} s", flush=True)
        base_url = stub.base_url

    # The floor: the same calls answered in-process from a dict.
    replies = {}
    for req in reqs:
        body = provider(base_url).request_body(req)
        key = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        replies[key] = {"id": "x", "object": "chat.completion", "created": 0, "model": "gpt-4o",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": answer_for(req.image)}}],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105}}

    def handler(request):
        body = json.loads(request.content)
        key = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return httpx.Response(200, json=replies[key])

    floor_provider = provider(base_url, http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    t_floor, answers = timed(lambda: floor_provider.classify(reqs))
    check(answers, reqs)
    print(f"floor (MockTransport + dict): {t_floor:.2f} s", flush=True)

    def replay_ours():
        with CaseCassette(ours_path, record_mode="none"):
            return provider(base_url).classify(reqs)

    t_ours, answers = timed(replay_ours)
    check(answers, reqs)
    print(f"astrobench cassette replay:   {t_ours:.2f} s", flush=True)

    def replay_vcr():
        with default_vcr.use_cassette(str(vcr_path), record_mode="none"):
            return provider(base_url).classify(reqs)

    t_vcr, answers = timed(replay_vcr)
    check(answers, reqs)
    print(f"vcrpy defaults replay:        {t_vcr:.2f} s", flush=True)

    size_ours, size_vcr = ours_path.stat().st_size, vcr_path.stat().st_size
    rows = [
        ("floor: MockTransport from a dict", t_floor, "-", "-"),
        ("astrobench cassette", t_ours, f"{t_rec_ours:.1f}", f"{size_ours / n / 1024:.2f}"),
        ("vcrpy defaults (YAML, method/uri/body)", t_vcr, f"{t_rec_vcr:.1f}", f"{size_vcr / n / 1024:.2f}"),
    ]
    print()
    print(f"{'':40} {'replay s':>9} {'record s':>9} {'KB/inter.':>10}")
    for name, t, rec, size in rows:
        print(f"{name:40} {t:9.2f} {rec:>9} {size:>10}")
    print()
    print(f"ours / floor  = {t_ours / t_floor:.2f}  (target <= 2)   {'OK' if t_ours <= 2 * t_floor else 'MISSED'}")
    print(f"vcrpy / ours  = {t_vcr / t_ours:.1f}  (target >= 30)  {'OK' if t_vcr >= 30 * t_ours else 'MISSED'}")
    print(f"size per interaction: ours {size_ours / n:.0f} B (target <= 2048), vcrpy {size_vcr / n:.0f} B; "
          f"files: ours {size_ours / 1e6:.2f} MB, vcrpy {size_vcr / 1e6:.2f} MB")


def _record_ours(base_url: str, path: Path, reqs) -> None:
    with CaseCassette(path, record_mode="once"):
        provider(base_url).classify(reqs)


def _record_vcr(default_vcr, base_url: str, path: Path, reqs) -> None:
    with default_vcr.use_cassette(str(path)):
        provider(base_url).classify(reqs)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
