"""GPU check: the paper's LLaVA-NeXT setup at full size, random weights, 4-bit.

Builds a randomly initialised model with the shapes of
``llava-hf/llava-v1.6-mistral-7b-hf`` (CLIP ViT-L/14-336 + Mistral-7B, anyres
pinpoints of llava-v1.6) from a config written here, with a locally built
tokenizer (no download), saves it in fp16 to a temporary folder, loads it
through the benchmark's ``TransformersProvider`` in 4-bit (bitsandbytes,
fp16 compute, as the paper), then prints images/second of

- the paper's method: generate, 200 new tokens (forced), batch 1;
- score mode at batch 1, 8 and 32;

and the peak GPU memory of each. Weights are random, so only speed and
memory mean anything. About 3-5 minutes on an H100 (disk: ~15 GB).

``--toy``: the same code path with the tiny test model (CPU is fine).
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

PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def full_config(tokenizer: Any) -> Any:
    """llava-v1.6-mistral-7b shapes: CLIP ViT-L/14 at 336 px + Mistral-7B."""
    from transformers import CLIPVisionConfig, LlavaNextConfig, MistralConfig

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14,
                              projection_dim=768, hidden_act="quick_gelu")
    text = MistralConfig(vocab_size=len(tokenizer), hidden_size=4096, intermediate_size=14336,
                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         head_dim=128, max_position_embeddings=32768, rms_norm_eps=1e-5,
                         rope_theta=1_000_000.0, sliding_window=None,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return LlavaNextConfig(
        vision_config=vision.to_dict() | {"model_type": "clip_vision_model"},
        text_config=text.to_dict() | {"model_type": "mistral"},
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=PINPOINTS, vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )


def build_full(path: Path, device: str) -> Path:
    import torch
    from transformers import LlavaNextForConditionalGeneration

    from tests.support.tiny_llava import build_processor, build_tokenizer

    tokenizer = build_tokenizer(vocab_size=32064)
    processor = build_processor(tokenizer, image_size=336, patch_size=14, pinpoints=PINPOINTS)
    config = full_config(tokenizer)
    torch.manual_seed(0)
    log(f"instantiating the fp16 model on {device} ...")
    with torch.device(device):
        model = LlavaNextForConditionalGeneration._from_config(config, dtype=torch.float16)
    n = sum(p.numel() for p in model.parameters())
    log(f"{n / 1e9:.2f} B parameters; saving to {path} ...")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path, max_shard_size="4GB")
    processor.save_pretrained(path)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    log("saved")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toy", action="store_true", help="tiny model (CPU ok): exercise the code path")
    ap.add_argument("--images", type=int, default=64, help="images per score run (default 64)")
    ap.add_argument("--gen-images", type=int, default=4, help="images for the generate run (default 4)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to save the model (default: a temp dir)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from benchmark.config import ModelConfig
    from benchmark.parsing import parse_answer
    from benchmark.providers.hf import TransformersProvider
    from benchmark.core import Request
    from tests.support.tiny_llava import build_tiny_llava

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    log(f"torch {torch.__version__}, device {torch.cuda.get_device_name() if cuda else 'cpu'}, "
        f"mode {'toy' if args.toy else 'full size'}")
    if not args.toy and not cuda:
        print("full size needs a GPU; use --toy on a CPU", flush=True)
        return 2
    work = Path(tempfile.mkdtemp(prefix="llava-gpu-", dir=args.workdir))
    try:
        path = build_tiny_llava(work / "model") if args.toy else build_full(work / "model", device)
        settings: dict[str, Any] = {"quantization": "4bit", "prompt_format": "paper",
                                    "compute_dtype": "float16" if cuda else "float32"}
        prompt_file = ROOT / "cases" / "prompts" / "morphology" / "paper-llava.txt"
        prompt = prompt_file.read_text(encoding="utf-8") if prompt_file.is_file() else "Which category?"
        rng = np.random.default_rng(0)
        n = max(args.images, 32 if not args.toy else 8, args.gen_images)
        requests = [Request(f"s{i}", prompt, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), 4)
                    for i in range(n)]

        def provider(**extra: Any) -> TransformersProvider:
            return TransformersProvider.from_config(
                ModelConfig("llava", "transformers", str(path), settings={**settings, **extra}))

        log("loading in 4-bit through TransformersProvider ...")
        base = provider(mode="score", batch_size=1)
        model = base._load_model()
        if cuda:
            torch.cuda.synchronize()
            log(f"loaded; GPU memory allocated {torch.cuda.memory_allocated() / 2**30:.2f} GiB")
        import bitsandbytes as bnb

        log(f"{sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())} Linear4bit layers")
        enc = base._inputs([base.prompt_text(requests[0]) + " "], requests[:1])
        log(f"sequence length {enc['input_ids'].shape[1]} tokens "
            f"({int((enc['input_ids'] == model.config.image_token_index).sum())} image tokens)")

        def share(mode: str, batch_size: int, **extra: Any) -> TransformersProvider:
            p = provider(mode=mode, batch_size=batch_size, **extra)
            p._model = model  # one set of weights for every mode
            return p

        runs = [
            ("generate 200 tok + parse, batch 1 (paper)",
             share("generate", 1, max_new_tokens=200, min_new_tokens=200), requests[:args.gen_images]),
            ("score, batch 1", share("score", 1), requests[:args.images]),
            ("score, batch 8", share("score", 8), requests[:args.images]),
            ("score, batch 32", share("score", 32), requests[:max(args.images, 32)]),
        ]
        rows = []
        for name, p, reqs in runs:
            p.classify(reqs[:min(len(reqs), p.settings["batch_size"])])  # warm-up
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            answers = p.classify(reqs)
            for a in answers:
                if a.label is None:
                    a.label = parse_answer(a.raw, 4)
            if cuda:
                torch.cuda.synchronize()
            ips = len(reqs) / (time.perf_counter() - start)
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
            tokens = answers[0].usage.get("completion_tokens", "-")
            rows.append((name, ips, peak))
            log(f"{name}: {ips:.3f} images/s, peak {peak:.2f} GiB, new tokens {tokens}")
        print(f"\n{'mode':<44} {'images/s':>10} {'peak GiB':>9}", flush=True)
        for name, ips, peak in rows:
            print(f"{name:<44} {ips:>10.3f} {peak:>9.2f}")
        gen = rows[0][1]
        for name, ips, _ in rows[1:]:
            print(f"{name} / generate = {ips / gen:.1f}x")
        print(f"score b8 / b1 = {rows[2][1] / rows[1][1]:.2f}x, b32 / b1 = {rows[3][1] / rows[1][1]:.2f}x",
              flush=True)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
