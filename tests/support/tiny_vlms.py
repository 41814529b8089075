"""Tiny, randomly initialised chat-template VLMs (+ processors), built locally and offline.

One builder per architecture the transformers provider supports beside LLaVA-NeXT
(``tests.support.tiny_llava``): Qwen2-VL, Qwen2.5-VL, Idefics3 (SmolVLM-256M/500M
are Idefics3 checkpoints), SmolVLM (SmolVLM2's own classes) and LLaVA-OneVision.
Each is the real model and processor class at toy sizes, saved to a folder and
loaded back with ``from_pretrained`` by the provider, exactly as a hub checkpoint is.

Tokenizers are trained in code on the repo's prompt files and follow each family:

- Qwen2 (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision's Qwen2 LM): the real
  ``Qwen2Tokenizer`` class (its pre-tokenizer regex splits every digit off, NFC,
  byte-level BPE) with a small trained vocabulary and merges;
- SmolLM2 (Idefics3 / SmolVLM): byte-level BPE with digits split individually
  first, as SmolLM2's ``tokenizer.json`` does (the same rule as tiny_llava's).

Chat templates are shaped like those the real checkpoints ship (see ``TEMPLATES``).
``EXPECTED_IMAGE_TOKENS`` gives, per architecture, how many image tokens a 64x64
image becomes with the processor settings used here (worked out in the comments).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.tiny_llava import _train_bpe

KINDS = ("qwen2-vl", "qwen2.5-vl", "idefics3", "llava-onevision")
# transformers 5 builds these processors with a video processor, which needs torchvision
# (see processors_without_video). SmolVLM2's own classes (model_type "smolvlm") also need
# num2words; SmolVLM-256M/500M-Instruct are Idefics3 checkpoints, built here as "idefics3".
VIDEO_CAPABLE = ("qwen2-vl", "qwen2.5-vl", "llava-onevision")

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]
ONEVISION_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
SMOL_SPECIALS = (["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>",
                  "<global-img>", "<image>", "<video>"]
                 + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)])

# Shaped like Qwen/Qwen2-VL-2B-Instruct's (Qwen2.5-VL's is the same): a default system turn.
QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Shaped like HuggingFaceTB/SmolVLM-256M-Instruct's: "<|im_start|>User:<image>text<end_of_utterance>\nAssistant:".
SMOL_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# Shaped like llava-hf/llava-onevision-qwen2-0.5b-ov-hf's: images first, then "\n" + each text.
ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\n' + content['text'] }}{% endfor %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TEMPLATES = {"qwen2-vl": QWEN_TEMPLATE, "qwen2.5-vl": QWEN_TEMPLATE, "idefics3": SMOL_TEMPLATE,
             "llava-onevision": ONEVISION_TEMPLATE}

# Image tokens of one 64x64 image with the processors built below:
# - Qwen2(.5)-VL: patch 14, merge 2 -> smart_resize to multiples of 28: 56x56 (min_pixels 56*56) ->
#   4x4 patches -> 16 / 2**2 = 4 tokens.
# - Idefics3: longest edge 64, tiles of 32 -> 2x2 tiles + the global image = 5 images,
#   each (32/8)**2 / 2**2 = 4 tokens -> 20.
# - LLaVA-OneVision: base 32x32 at patch 8 -> 16 tokens; anyres best fit for 64x64 is [64, 64] ->
#   2x2 tiles -> 8x8 features (+ 8 row ends) -> 16 + 64 + 8 = 88.
EXPECTED_IMAGE_TOKENS = {"qwen2-vl": 4, "qwen2.5-vl": 4, "idefics3": 20, "llava-onevision": 88}
IMAGE_TOKENS = {"qwen2-vl": "<|image_pad|>", "qwen2.5-vl": "<|image_pad|>", "idefics3": "<image>",
                "llava-onevision": "<image>"}
# How each family's chat template ends the user turn and opens the assistant's.
_CHATML_OPENING = "<|im_end|>\n<|im_start|>assistant\n"
ASSISTANT_OPENING = {"qwen2-vl": _CHATML_OPENING, "qwen2.5-vl": _CHATML_OPENING,
                     "idefics3": "<end_of_utterance>\nAssistant:", "llava-onevision": _CHATML_OPENING}

_QWEN_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
               r"""\s*[\r\n]+|\s+(?!\S)|\s+""")


def qwen2_tokenizer(specials: list[str], chat_template: str) -> Any:
    """The real ``Qwen2Tokenizer`` class with a small trained vocabulary."""
    from tokenizers import Regex, normalizers, pre_tokenizers
    from transformers import Qwen2Tokenizer

    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_QWEN_REGEX), behavior="isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    vocab, merges = _train_bpe(pre, specials, normalizer=normalizers.NFC())
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", unk_token=None, chat_template=chat_template,
                         extra_special_tokens={}, model_max_length=32768)
    tok.add_special_tokens({"additional_special_tokens": specials[1:]})
    return tok


def smollm2_tokenizer(specials: list[str], chat_template: str) -> Any:
    """Byte-level BPE, digits split off first (SmolLM2's pre-tokenizer), as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    vocab, merges = _train_bpe(pre, specials)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>",
                                   chat_template=chat_template, model_max_length=32768)


def _noisy(model: Any, seed: int) -> Any:
    """Seeded, larger-than-default weights so the random model's outputs are not near-uniform."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    return model.eval()


# -- per architecture -----------------------------------------------------------------
def _qwen_vl(kind: str) -> tuple[Any, Any, Any]:
    import transformers as t

    tok = qwen2_tokenizer(QWEN_SPECIALS, QWEN_TEMPLATE)
    ids = {s: tok.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    if kind == "qwen2-vl":
        vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
        config_cls, model_cls, proc_cls = t.Qwen2VLConfig, t.Qwen2VLForConditionalGeneration, t.Qwen2VLProcessor
    else:
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[1])
        config_cls, model_cls = t.Qwen2_5_VLConfig, t.Qwen2_5_VLForConditionalGeneration
        proc_cls = t.Qwen2_5_VLProcessor
    config = config_cls(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                        vision_end_token_id=ids["<|vision_end|>"])
    image_processor = t.Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=28 * 28 * 64)
    processor = proc_cls(image_processor=image_processor, tokenizer=tok, chat_template=QWEN_TEMPLATE)
    return model_cls(config), processor, tok


def _idefics3() -> tuple[Any, Any, Any]:
    import transformers as t

    tok = smollm2_tokenizer(SMOL_SPECIALS, SMOL_TEMPLATE)
    text = dict(model_type="llama", vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    image_id = tok.convert_tokens_to_ids("<image>")
    sizes = dict(size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
    config = t.Idefics3Config(text_config=text, vision_config=vision, scale_factor=2, image_token_id=image_id)
    processor = t.Idefics3Processor(image_processor=t.Idefics3ImageProcessorPil(**sizes), tokenizer=tok,
                                    image_seq_len=4, chat_template=SMOL_TEMPLATE)
    return t.Idefics3ForConditionalGeneration(config), processor, tok


def _onevision() -> tuple[Any, Any, Any]:
    import transformers as t

    tok = qwen2_tokenizer(ONEVISION_SPECIALS, ONEVISION_TEMPLATE)
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    text = dict(model_type="qwen2", vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                bos_token_id=None, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                pad_token_id=tok.pad_token_id)
    vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=32, patch_size=8)
    config = t.LlavaOnevisionConfig(text_config=text, vision_config=vision, image_grid_pinpoints=pinpoints,
                                    image_token_index=tok.convert_tokens_to_ids("<image>"),
                                    video_token_index=tok.convert_tokens_to_ids("<video>"),
                                    vision_feature_select_strategy="full", vision_feature_layer=-1)
    image_processor = t.LlavaOnevisionImageProcessorPil(size={"height": 32, "width": 32},
                                                        image_grid_pinpoints=pinpoints)
    processor = t.LlavaOnevisionProcessor(image_processor=image_processor, tokenizer=tok, video_processor=None,
                                          num_image_tokens=16, vision_feature_select_strategy="full",
                                          chat_template=ONEVISION_TEMPLATE)
    return t.LlavaOnevisionForConditionalGeneration(config), processor, tok


def build_tiny_vlm(kind: str, path: Path | str, *, seed: int = 0) -> Path:
    """Save a seeded tiny model of ``kind`` (one of :data:`KINDS`) and its processor to ``path``."""
    if kind in ("qwen2-vl", "qwen2.5-vl"):
        model, processor, tok = _qwen_vl(kind)
    elif kind == "idefics3":
        model, processor, tok = _idefics3()
    elif kind == "llava-onevision":
        model, processor, tok = _onevision()
    else:
        raise ValueError(f"expected a kind in {KINDS}, found {kind!r}")
    model = _noisy(model, seed)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


if __name__ == "__main__":  # pragma: no cover - manual check
    import sys
    import time

    for kind in sys.argv[1:] or KINDS:
        t0 = time.perf_counter()
        out = build_tiny_vlm(kind, f"/tmp/tiny-{kind}")
        print(f"built {kind} at {out} in {time.perf_counter() - t0:.2f}s")


def install_in_hub_cache(folder: Path | str, cache_dir: Path | str, repo_id: str) -> str:
    """Lay ``folder`` out as the Hugging Face cache holds a downloaded ``repo_id`` (refs/main ->
    snapshots/<commit>/...), so it loads by its hub id offline; return the (made-up) commit.
    Use an id that names a test model: a cache entry is what the id's weights are taken to be."""
    import hashlib
    import shutil

    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    root = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    return commit


@contextmanager
def processors_without_video() -> Iterator[bool]:
    """Let transformers build and load the video-capable processors without torchvision.

    transformers 5 builds Qwen2-VL's, Qwen2.5-VL's and LLaVA-OneVision's processors only
    with their video processor, which needs torchvision (not installed here: there is no
    CPU build of it on PyPI). Image requests never use it, so where torchvision is missing
    the processors are built and loaded without that one part (their image processor,
    tokenizer, chat template and image-token expansion are the real ones); with torchvision
    nothing is changed. Yields whether the stand-in is in effect.
    """
    from transformers.processing_utils import ProcessorMixin

    try:
        import torchvision  # noqa: F401

        yield False
        return
    except ImportError:
        pass
    original = ProcessorMixin.__dict__["get_attributes"]

    def get_attributes(cls: type) -> list[str]:
        return [a for a in original.__func__(cls) if a != "video_processor"]

    get_attributes.original = original  # type: ignore[attr-defined]  # for tests of the unpatched load
    ProcessorMixin.get_attributes = classmethod(get_attributes)
    try:
        yield True
    finally:
        ProcessorMixin.get_attributes = original


def unpatched_get_attributes() -> Any:
    """``ProcessorMixin.get_attributes`` as transformers defines it, under any stand-ins."""
    from transformers.processing_utils import ProcessorMixin

    current = ProcessorMixin.__dict__["get_attributes"]
    while hasattr(current.__func__, "original"):
        current = current.__func__.original
    return current
