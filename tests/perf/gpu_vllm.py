"""GPU check: LLaVA-NeXT served by vLLM, random weights: images/s of free text vs logprobs scoring.

Writes a model folder with the architecture of ``llava-hf/llava-v1.6-mistral-7b-hf``
(``config.json`` from ``gpu_llava.full_config``: CLIP ViT-L/14-336 + Mistral-7B,
anyres pinpoints; a tokenizer built here with the llava-1.6 chat template
"[INST] <image>\\n... [/INST]"; the image processor) and no weights, starts
``vllm serve <folder> --load-format dummy`` (random weights: no hub access
needed), waits for ``/health``, then asks the same images through the
benchmark's ``OpenAIChatProvider`` at each ``--concurrency``:

- generate: free text up to ``--max-tokens`` (200, the paper's budget), read by the parser;
- score: one token with ``logprobs`` / ``top_logprobs`` 20 (``mode = "score"``);

and prints images/s per mode and concurrency. Weights are random, so only
speed means anything (the answers are noise). Untested on a GPU so far.

``--server URL --model NAME`` measures a server that is already running
(``tests/perf/test_perf_gpu_vllm_script.py`` runs it against the loopback stub).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

ARCHITECTURE = "LlavaNextForConditionalGeneration"
HEADERS = ["mode", "concurrency", "images", "wall s", "images/s", "tokens out/answer", "with a class", "failed"]
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default=None, help="an OpenAI-compatible /v1 URL already serving --model "
                                                   "(default: start vLLM here)")
    ap.add_argument("--model", default="llava-next-dummy", help="the served model name (default llava-next-dummy)")
    ap.add_argument("--concurrency", default="1,8,32", help="comma-separated levels (default 1,8,32)")
    ap.add_argument("--images", type=int, default=128, help="images per score run (default 128)")
    ap.add_argument("--gen-images", type=int, default=32, help="images per generate run (default 32)")
    ap.add_argument("--max-tokens", type=int, default=200, help="generate: answer length limit (default 200)")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels (GalaxyMNIST: 64)")
    ap.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs per vLLM server (default 1)")
    ap.add_argument("--max-model-len", type=int, default=4096, help="vLLM context length (default 4096)")
    ap.add_argument("--port", type=int, default=0, help="vLLM port (default: a free one)")
    ap.add_argument("--vllm", default="vllm", help="the vllm executable (default: vllm on PATH)")
    ap.add_argument("--vllm-arg", action="append", default=[], metavar="ARG",
                    help="one more argument for vllm serve, repeatable, e.g. --vllm-arg=--enforce-eager")
    ap.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for /health")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write the model folder (default: temp)")
    args = ap.parse_args(argv)
    try:
        args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    except ValueError:
        ap.error(f"expected --concurrency as comma-separated integers, found {args.concurrency!r}")
    if not args.concurrency or min(args.concurrency) < 1:
        ap.error(f"expected --concurrency levels >= 1, found {args.concurrency}")
    return args


def write_model_folder(path: Path) -> Path:
    """config.json, tokenizer and image processor of llava-v1.6-mistral-7b's shapes; no weights
    (``--load-format dummy`` draws them). Written for old and new transformers alike."""
    from tests.perf.gpu_llava import PINPOINTS, full_config
    from tests.support.tiny_llava import CHAT_TEMPLATE, build_processor, build_tokenizer

    tokenizer = build_tokenizer(vocab_size=32064)
    processor = build_processor(tokenizer, image_size=336, patch_size=14, pinpoints=PINPOINTS)
    config = full_config(tokenizer)
    config.architectures = [ARCHITECTURE]
    config.torch_dtype = "float16"
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(path)
    processor.save_pretrained(path)
    processor.image_processor.save_pretrained(path)  # preprocessor_config.json, as older versions read it
    tokenizer_config = path / "tokenizer_config.json"
    data = json.loads(tokenizer_config.read_text())
    data.update(tokenizer_class="PreTrainedTokenizerFast", chat_template=CHAT_TEMPLATE)
    tokenizer_config.write_text(json.dumps(data, indent=2))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vllm_command(args: argparse.Namespace, model_dir: Path, port: int) -> list[str]:
    return [args.vllm, "serve", str(model_dir), "--load-format", "dummy", "--served-model-name", args.model,
            "--host", "127.0.0.1", "--port", str(port), "--tensor-parallel-size", str(args.tensor_parallel_size),
            "--max-model-len", str(args.max_model_len), "--dtype", "float16", "--seed", "0", *args.vllm_arg]


def wait_healthy(base_url: str, proc: subprocess.Popen[Any] | None, timeout_s: float, log_path: Path | None) -> None:
    """Until ``GET <root>/health`` answers 200; the server's exit or the timeout is an error."""
    health = base_url.rstrip("/").removesuffix("/v1") + "/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-4000:] if log_path and log_path.exists() else ""
            raise RuntimeError(f"vllm exited with code {proc.returncode} before it was healthy:\n{tail}")
        try:
            with urllib.request.urlopen(health, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(2)
    raise RuntimeError(f"{health} did not answer 200 within {timeout_s:.0f} s")


def requests(n: int, size: int) -> list[Any]:
    """``n`` random images (the stub's marking in one pixel: the loopback run answers them),
    with the morphology task's GPT-4o prompt."""
    import numpy as np

    from benchmark.core import Request
    from tests.support.openai_stub import CORRECT, mark_image

    prompt_file = ROOT / "cases" / "prompts" / "morphology" / "paper.txt"
    prompt = prompt_file.read_text(encoding="utf-8") if prompt_file.is_file() else "Which category?"
    rng = np.random.default_rng(0)
    return [Request(f"s{i}", prompt, mark_image(rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                                                label=i % 4, style=CORRECT, n_classes=4), 4) for i in range(n)]


def measure(base_url: str, model: str, mode: str, concurrency: int, reqs: list[Any], *,
            max_tokens: int) -> dict[str, Any]:
    """One run of ``reqs`` through ``OpenAIChatProvider`` (after an untimed warm-up)."""
    from benchmark.config import ModelConfig
    from benchmark.parsing import parse_answer
    from benchmark.providers.openai_chat import OpenAIChatProvider

    settings: dict[str, Any] = {"base_url": base_url, "api_key_env": "VLLM_API_KEY", "concurrency": concurrency,
                                "mode": mode, "temperature": 0.0}
    if mode == "generate":
        settings["max_tokens"] = max_tokens
    p = OpenAIChatProvider.from_config(ModelConfig("vllm", "openai", model, settings=settings),
                                       api_key=os.environ.get("VLLM_API_KEY") or "EMPTY")
    try:
        p.classify(reqs[:concurrency])  # warm-up: connections, CUDA graphs of this batch size
        start = time.perf_counter()
        answers = p.classify(reqs)
        wall = time.perf_counter() - start
    finally:
        p.close()
    ok = [a for a in answers if a.error is None]
    labelled = sum((a.label if a.label is not None else parse_answer(a.raw, 4)) is not None for a in ok)
    tokens = [a.usage.get("completion_tokens", 0) for a in ok]
    return {"mode": mode, "concurrency": concurrency, "images": len(reqs), "wall_s": wall,
            "images_per_s": len(reqs) / wall, "tokens_out": sum(tokens) / len(tokens) if tokens else 0.0,
            "with_class": labelled, "failed": len(answers) - len(ok)}


def table(rows: list[dict[str, Any]]) -> str:
    cells = [[r["mode"], str(r["concurrency"]), str(r["images"]), f"{r['wall_s']:.2f}", f"{r['images_per_s']:.2f}",
              f"{r['tokens_out']:.1f}", f"{r['with_class']}/{r['images']}", str(r["failed"])] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADERS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    by = {(r["mode"], r["concurrency"]): r["images_per_s"] for r in rows}
    for c in dict.fromkeys(r["concurrency"] for r in rows):
        if ("generate", c) in by and ("score", c) in by:
            lines.append(f"concurrency {c}: score / generate = {by['score', c] / by['generate', c]:.1f}x")
    return "\n".join(lines)


def run(args: argparse.Namespace, base_url: str) -> list[dict[str, Any]]:
    rows = []
    for mode, n in (("generate", args.gen_images), ("score", args.images)):
        reqs = requests(n, args.size)
        for c in args.concurrency:
            row = measure(base_url, args.model, mode, c, reqs, max_tokens=args.max_tokens)
            rows.append(row)
            log(f"{mode} at concurrency {c}: {row['images_per_s']:.2f} images/s, "
                f"{row['tokens_out']:.1f} tokens out per answer, {row['failed']} failed")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.server:
        rows = run(args, args.server)
        print("\n" + table(rows), flush=True)
        return 0
    if shutil.which(args.vllm) is None:
        print(f"{args.vllm!r} not found: install vLLM on a GPU machine (pip install vllm), "
              "or measure a running server with --server URL --model NAME", flush=True)
        return 2
    work = Path(tempfile.mkdtemp(prefix="vllm-gpu-", dir=args.workdir))
    proc = None
    try:
        log("writing the model folder (config, tokenizer, processor; no weights) ...")
        model_dir = write_model_folder(work / "model")
        port = args.port or free_port()
        command = vllm_command(args, model_dir, port)
        log_path = work / "vllm.log"
        log(" ".join(command))
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        base_url = f"http://127.0.0.1:{port}/v1"
        wait_healthy(base_url, proc, args.startup_timeout, log_path)
        log(f"vllm is healthy at {base_url}")
        rows = run(args, base_url)
        print("\n" + table(rows), flush=True)
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
