"""Build a tiny, randomly initialised LLaVA-NeXT (+ processor) locally, offline.

The architecture is the real one (``LlavaNextForConditionalGeneration``: CLIP
vision tower, projector, Mistral decoder, anyres image splitting) at toy
sizes, so the transformers provider runs its real code path in about a
second on a CPU. Nothing is downloaded: the tokenizer is a byte-level BPE
trained in code on the repo's prompt files (~4 characters per token, like
Mistral's on English). Digits are split off before BPE, so each digit is one
token and "10" is two, as with the Llama/Mistral tokenizers; a space before a
digit is its own token ("Ġ"), as "▁" is in Mistral's.

Also used by ``tests/perf/gpu_llava.py`` to build the tokenizer of the
full-size model (:func:`build_tokenizer` with ``vocab_size``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

IMAGE_TOKEN = "<image>"
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN, "[INST]", "[/INST]"]

# Shaped like llava-hf/llava-v1.6-mistral-7b-hf's template: "[INST] <image>\n{text} [/INST]".
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST] "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %} [/INST]"
    "{% else %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
)

TINY_IMAGE = 32
TINY_PATCH = 8
TINY_PINPOINTS = [[32, 64], [64, 32], [64, 64]]


def _corpus() -> list[str]:
    """Training text: the prompt files of this repo, or a built-in paragraph."""
    folder = Path(__file__).resolve().parents[2] / "cases" / "prompts"
    texts = sorted(p.read_text(encoding="utf-8") for p in folder.glob("*/*.txt")) if folder.is_dir() else []
    return texts or [
        "You are tasked to classify astronomical images. Each image belongs to one of the "
        "categories. To which category does the image belong? The image shows a smooth round "
        "galaxy, a spiral galaxy with a disk, diffuse light, bright stars or reflections."
    ]


def _train_bpe(pre_tokenizer: Any, specials: list[str], *, normalizer: Any = None,
               merges: int = 400) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary (specials first) and merges, trained on the repo's prompts."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    if normalizer is not None:
        tok.normalizer = normalizer
    trainer = trainers.BpeTrainer(vocab_size=len(specials) + 256 + merges, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    trained = json.loads(tok.to_str())["model"]
    vocab = {t: i for i, t in enumerate(specials)}
    for t in sorted(trained["vocab"], key=trained["vocab"].get):
        vocab.setdefault(t, len(vocab))
    pairs = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    return vocab, pairs


def build_tokenizer(vocab_size: int | None = None, *, merges: int = 400) -> Any:
    """A byte-level ``PreTrainedTokenizerFast`` with the specials and a chat template.

    ``vocab_size`` pads the vocabulary with unused ``<extra_i>`` tokens (the
    full-size model uses 32064).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    # Byte-level BPE trained on the repo's prompts (~4 characters per token, like
    # Mistral's tokenizer on English); digits are split off first, so never merged.
    pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    vocab, merge_pairs = _train_bpe(pre, SPECIAL, merges=merges)
    if vocab_size is not None:
        if vocab_size < len(vocab):
            raise ValueError(f"vocab_size must be >= {len(vocab)}, got {vocab_size}")
        for i in range(vocab_size - len(vocab)):
            vocab[f"<extra_{i}>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merge_pairs, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL)
    # Like Llama/Mistral: encoding with special tokens prepends BOS.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
    )
    return fast


def build_processor(
    tokenizer: Any, *, image_size: int = TINY_IMAGE, patch_size: int = TINY_PATCH,
    pinpoints: list[list[int]] | None = None,
) -> Any:
    import transformers
    from transformers import LlavaNextProcessor

    # Without torchvision, transformers 5 uses the PIL image processor; name it to skip a warning.
    image_cls = getattr(transformers, "LlavaNextImageProcessorPil", None)
    try:
        import torchvision  # noqa: F401

        image_cls = None
    except ImportError:
        pass
    image_cls = image_cls or transformers.LlavaNextImageProcessor

    pinpoints = pinpoints or TINY_PINPOINTS
    image_processor = image_cls(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=pinpoints,
    )
    return LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )


def tiny_config(tokenizer: Any) -> Any:
    """Toy sizes; every Linear has in_features >= 64, the bitsandbytes CPU 4-bit block size."""
    from transformers import CLIPVisionConfig, LlavaNextConfig, MistralConfig

    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        image_size=TINY_IMAGE, patch_size=TINY_PATCH, projection_dim=64,
    )
    text = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, sliding_window=None,
    )
    return LlavaNextConfig(
        vision_config=vision.to_dict() | {"model_type": "clip_vision_model"},
        text_config=text.to_dict() | {"model_type": "mistral"},
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_grid_pinpoints=TINY_PINPOINTS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )


def build_tiny_llava(path: Path | str, *, seed: int = 0) -> Path:
    """Save a seeded tiny LLaVA-NeXT model and its processor to ``path``; return it."""
    import torch
    from transformers import LlavaNextForConditionalGeneration

    path = Path(path)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(tiny_config(tokenizer)).eval()
    # Larger-than-default init so the random model's outputs are not near-uniform.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


if __name__ == "__main__":  # pragma: no cover - manual check
    import sys
    import time

    t = time.perf_counter()
    out = build_tiny_llava(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-llava")
    print(f"built {out} in {time.perf_counter() - t:.2f}s")


class StubExtractor:
    """A stand-in for the OpenAI-compatible extractor (registered in ``PROVIDERS`` by tests).

    Answers every text-only request with ``"Category {answer}"`` and records the requests.
    """

    answer = 2
    calls: list[list[Any]] = []

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def from_config(cls, model: Any, **kwargs: Any) -> StubExtractor:
        return cls(model.name)

    http = False

    def fingerprint(self) -> dict[str, Any]:
        return {"provider": "stub", "name": self.name}

    def can_call_live(self) -> bool:
        return True

    def canonical_request(self, request: Any) -> dict[str, Any]:
        return {**self.fingerprint(), "prompt": request.prompt, "text": request.text}

    def to_record(self, answer: Any) -> dict[str, Any]:
        return {"answer": {"raw": answer.raw}}

    def from_record(self, sample_id: str, record: dict[str, Any]) -> Any:
        from benchmark.core import Answer

        return Answer(sample_id, raw=record["answer"]["raw"])

    def classify(self, requests: Any, *, on_answer: Any = None) -> list[Any]:
        from benchmark.core import Answer

        StubExtractor.calls.append(list(requests))
        out = []
        for r in requests:
            if r.image is not None:
                raise AssertionError(f"expected a text-only request, found an image for {r.sample_id}")
            a = Answer(r.sample_id, raw=f"Category {self.answer}")
            out.append(a)
            if on_answer is not None:
                on_answer(a)
        return out

    def close(self) -> None:
        pass
