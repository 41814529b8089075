"""CPU check: the default open model (smolvlm) at full size, random weights, score mode.

Builds a randomly initialised Idefics3 with the shapes of
``HuggingFaceTB/SmolVLM-256M-Instruct`` (SigLIP-B/16 at 512 px: hidden 768,
12 layers; SmolLM2-135M: hidden 576, 30 layers, 9 heads, 3 KV heads,
intermediate 1536, vocabulary 49,280; pixel shuffle with scale factor 4, so 64
tokens per 512 px view) from a config written here, with a locally built
tokenizer (no download), saves it to a temporary folder and loads it through the
benchmark's ``TransformersProvider`` with the settings of ``[models.smolvlm]`` in
cases/bench.toml (float32, one 512 px view, batch 8). Then it prints seconds per
image in score mode on the tasks' 64x64 images with the tasks' own prompts, and the
expected total for the default run (LSBG 500 + morphology 500 images; the merged
task reuses morphology's answers). Also the checkpoint's own image settings (a
2048 px upscale cut into 4x4 tiles of 512 px + a global view), for comparison.

Weights are random, so only speed means anything. torch uses every core it is
given (``--threads``). About 2-4 minutes on a 2-core CPU.

    python tests/perf/cpu_default_model.py [--images 16] [--threads N]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

T0 = time.perf_counter()
TASK_IMAGES = {"lsbg": 500, "morphology": 500}  # the default run; morphology-merged makes no calls


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def build(path: Path) -> Path:
    """SmolVLM-256M-Instruct's architecture, random weights, its processor's default image settings."""
    import torch
    import transformers as t

    from tests.support.tiny_vlms import SMOL_SPECIALS, SMOL_TEMPLATE, smollm2_tokenizer

    tok = smollm2_tokenizer(SMOL_SPECIALS, SMOL_TEMPLATE)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=512, patch_size=16)
    text = dict(model_type="llama", vocab_size=49280, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, tie_word_embeddings=True,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = t.Idefics3Config(text_config=text, vision_config=vision, scale_factor=4,
                              image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=True)
    torch.manual_seed(0)
    model = t.Idefics3ForConditionalGeneration(config).eval()
    n = sum(p.numel() for p in model.parameters())
    log(f"built Idefics3 (SmolVLM-256M shapes): {n / 1e6:.0f} M parameters")
    images = t.Idefics3ImageProcessorPil(size={"longest_edge": 2048}, max_image_size={"longest_edge": 512},
                                         do_image_splitting=True)
    processor = t.Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=64,
                                    chat_template=SMOL_TEMPLATE)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def requests(task: str, n: int) -> list[Any]:
    import numpy as np

    from benchmark.config import load_config
    from benchmark.core import Request

    cfg = load_config()
    prompt = cfg.tasks[task].prompt_text("paper")
    rng = np.random.default_rng(0)
    n_classes = len(cfg.tasks[task].classes)
    return [Request(f"{task}-{i}", prompt, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), n_classes)
            for i in range(n)]


def provider(path: Path, **overrides: Any) -> Any:
    from benchmark.config import ModelConfig, load_config
    from benchmark.providers.hf import TransformersProvider

    settings = {**load_config().models["smolvlm"].settings, **overrides}
    return TransformersProvider.from_config(ModelConfig("smolvlm", "transformers", str(path), settings=settings))


def per_image(p: Any, reqs: list[Any]) -> float:
    p.classify(reqs[:1])  # warm-up (and the model load)
    t0 = time.perf_counter()
    answers = p.classify(reqs)
    assert all(abs(sum(a.probs) - 1) < 1e-4 for a in answers)
    return (time.perf_counter() - t0) / len(reqs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=16, help="images timed per task and setting (default 16)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, i.e. the cores)")
    ap.add_argument("--skip-tiled", action="store_true", help="skip the checkpoint's own (tiled) image settings")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU only: {not torch.cuda.is_available()}")
    folder = Path(tempfile.mkdtemp(prefix="smolvlm-shapes-"))
    try:
        build(folder)
        rows = []
        for task, total in TASK_IMAGES.items():
            reqs = requests(task, args.images)
            p = provider(folder)
            text = p.prompt_text(reqs[0]) + p.settings["answer_prefix"]
            s8 = per_image(p, reqs)
            enc = p._inputs([text], reqs[:1])
            n_tokens = enc["input_ids"].shape[1]
            s1 = per_image(provider(folder, batch_size=1), reqs[: max(4, args.images // 4)])
            rows.append((task, total, n_tokens, s8, s1))
            log(f"{task}: {n_tokens} input tokens; score batch 8: {s8:.3f} s/image, batch 1: {s1:.3f} s/image")
        total_s = sum(total * s8 for _, total, _, s8, _ in rows)
        print("\nscore mode, bench.toml settings (float32, one 512 px view, batch 8):")
        for task, total, n_tokens, s8, s1 in rows:
            print(f"  {task:<11} {n_tokens:>4} tokens  {s8:.3f} s/image (batch 1: {s1:.3f})  "
                  f"x {total} = {total * s8 / 60:.1f} min")
        print(f"  default run (lsbg 500 + morphology 500): {total_s / 60:.1f} min")
        if not args.skip_tiled:
            reqs = requests("lsbg", 2)
            tiled = provider(folder, image_splitting=None, image_longest_edge=None, batch_size=1)
            s = per_image(tiled, reqs)
            n_tokens = tiled._inputs([tiled.prompt_text(reqs[0]) + " "], reqs[:1])["input_ids"].shape[1]
            print(f"\nthe checkpoint's image settings (2048 px, 4x4 tiles + global view), lsbg, batch 1: "
                  f"{n_tokens} tokens, {s:.2f} s/image, x 1000 = {1000 * s / 3600:.1f} h")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
