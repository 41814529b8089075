"""In-process vision-language models through Hugging Face transformers.

Any checkpoint that ``AutoModelForImageTextToText`` and ``AutoProcessor`` load: LLaVA-NeXT
(the paper's), and chat-template VLMs such as Qwen2-VL / Qwen2.5-VL, Idefics3 (SmolVLM-256M
and -500M are Idefics3 checkpoints) and LLaVA-OneVision. The processor places the image
(its own image tokens: a count that depends on the image size for Qwen2-VL, tiles for
Idefics3, anyres for LLaVA-(Next/OneVision)); models whose language model computes its own
multimodal positions (Qwen2-VL's M-RoPE) get no ``position_ids`` from here.

Settings (keys of the ``[models.NAME]`` table, defaults in :data:`SETTINGS`):

- ``quantization``: "none" | "8bit" | "4bit" (bitsandbytes; 4bit is
  ``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute_dtype)``,
  as the paper ran it).
- ``compute_dtype``: bitsandbytes compute dtype, "float16" (paper) | "bfloat16" | "float32".
- ``dtype``: dtype of the model's other weights. "auto": the checkpoint's dtype on
  a GPU, the compute dtype when quantized, float32 on a CPU.
- ``device_map``: passed to ``from_pretrained``; default "auto" with CUDA, else "cpu".
- ``batch_size``: requests per forward pass / generate call (left padding).
- ``prompt_format``: "chat-template" (the processor's template, user turn with
  the image then the prompt, generation prompt added; a few-shot prompt's turn is
  the prompt, each example's text and image, the query text and the image) or "paper"
  (``USER: <image>\\n{prompt}\\nASSISTANT:``, the authors' notebook; one image, so
  no few-shot). The request's prompt is used with surrounding whitespace stripped.
- ``mode``: "generate" (greedy ``generate``, free text, label left to the
  parser or to ``extract_with``), "score" (one forward pass; softmax of the
  next-token logits over the class label tokens) or "both" (label from score,
  text from generate; the session adds the text's label, so both labels end
  up in ``Answer.meta``).
- ``max_new_tokens`` (200), ``min_new_tokens`` (None): generation length.
- ``answer_prefix`` (" "): appended to the prompt in score mode only, so that
  the next token is the class number (see *Label tokens*).
- Image size, given to the processor (default: the checkpoint's settings):
  ``min_pixels`` / ``max_pixels`` for Qwen2-VL-style processors (the image area after
  resizing; one image token per 28x28 pixels), ``image_splitting`` /
  ``image_longest_edge`` for Idefics3 / SmolVLM (tiles plus a global view, or one view;
  the longest edge after resizing). A setting the processor has no use for is an error.
- ``extract_with``: name of another model in the bench config (an
  OpenAI-compatible one) that reads the generated text, without the image, and
  answers the class number: the paper's second step. The session runs it
  (``benchmark.extraction``), recorded like every other answer.

Label tokens (score mode). The label of class ``k`` is the string ``str(k)``.
With ``P`` = the score prompt's text (formatted prompt + ``answer_prefix``),
the label token of class ``k`` is the one token that
``tokenize(P + str(k))`` has beyond ``tokenize(P)``; tokenization must
otherwise be unchanged (``tokenize(P)`` a prefix), and the ``n_classes``
tokens must be distinct. So the score is exactly the probability the model
gives to writing ``k`` right after the prompt, as the tokenizer would encode
it. With the default prefix " " a Mistral/Llama tokenizer gives "▁" then the
digit token; "10" is never a single token for them, so at most 10 classes. Qwen2's
tokenizer (Qwen2-VL, LLaVA-OneVision) and SmolLM2's (SmolVLM) also split every digit
off, so the rule holds for them too, with prefix "" (right after "assistant\\n") or " "
(after SmolVLM's "Assistant:").

Availability. A hub id whose weights are neither cached nor downloadable right now
(offline, ``HF_HUB_OFFLINE``) cannot be asked live (``why_not_live`` says so): with
record mode ``once`` its case is skipped with that line; replay never needs the weights.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.providers import OnAnswer
from benchmark.core import Answer, BenchError, Request
from benchmark.schema import HF_SETTINGS, model_settings

INSTALL_HINT = 'pip install "astro-vlm-bench[hf]"'
PAPER_PREFIX, PAPER_SUFFIX = "USER: <image>\n", "\nASSISTANT:"  # around the prompt, as in the notebook

SETTINGS: dict[str, Any] = HF_SETTINGS  # keys, defaults and choices: benchmark.schema.TransformersModel
# The image-size settings, per processor family, and the image-processor attribute that marks it.
IMAGE_SETTINGS = {"min_pixels": "merge_size", "max_pixels": "merge_size",
                  "image_splitting": "do_image_splitting", "image_longest_edge": "do_image_splitting"}
FAMILIES = {"merge_size": "Qwen2-VL-style processors (Qwen2-VL, Qwen2.5-VL)",
            "do_image_splitting": "Idefics3 / SmolVLM processors"}


def _import_hf() -> tuple[Any, Any]:
    """torch and transformers, or a BenchError telling how to install them."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise BenchError(
            f"the 'transformers' provider needs torch and transformers, which are not "
            f"installed ({exc}); install them with:\n{INSTALL_HINT}"
        ) from None
    return torch, transformers


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def settings_from(model: Any, bench: Any = None) -> dict[str, Any]:
    """Validated settings of a ``ModelConfig``, defaults filled in (rules: benchmark.schema);
    ``extract_with`` must name another model of ``bench``."""
    where = f"models.{model.name}"
    s = model_settings("transformers", model.name, model.settings)
    ext = s["extract_with"]
    if ext is not None:
        models = getattr(bench, "models", None) or {}
        if ext not in models:
            raise BenchError(f"{where}: extract_with {ext!r} is not a model of the bench config; "
                             f"known models: {sorted(models)}")
        if ext == model.name:
            raise BenchError(f"{where}: extract_with must name another model, found itself")
    return s


class TransformersProvider:
    """A local image-text-to-text model (LLaVA-NeXT, Qwen2-VL, SmolVLM, ...) in generate and/or score mode.

    The processor is loaded at construction (the fingerprint needs the
    tokenizer); the model only on the first ``classify`` call, so a run
    answered entirely from the cache never loads the weights.
    """

    http = False  # answers are recorded by the session (to_record / from_record)

    def __init__(self, *, name: str, model: str, settings: dict[str, Any]) -> None:
        self.name = name
        self.model_id = model
        self.settings = settings
        self.model_calls = 0  # forward passes + generate calls (tests, perf)
        self.loaded_revision: str | None = None  # commit of the weights actually loaded
        self._torch: Any = None
        self._processor: Any = None
        self._model: Any = None
        self._label_cache: dict[tuple[str, int], list[int]] = {}
        self._own_positions = False  # the model computes its position ids itself (Qwen2-VL's M-RoPE)
        self._not_live: str | None = None  # why the weights cannot be had now ("" once checked: they can)

    @classmethod
    def from_config(cls, model: Any, *, bench: Any = None, **_: Any) -> TransformersProvider:
        """Build from a ``ModelConfig``; nothing is imported or loaded until a live call."""
        return cls(name=model.name, model=model.model, settings=settings_from(model, bench))

    @property
    def processor(self) -> Any:
        """The model's processor, loaded on first use (replay never needs it, nor torch).

        The image processor is the PIL ("slow") one, as the authors ran it, whether or
        not torchvision is installed, so the pixels the model sees do not depend on it.
        """
        if self._processor is None:
            self._torch, transformers = _import_hf()
            processor = self._load_processor(transformers)
            image_kwargs = self._image_kwargs(processor)
            if image_kwargs:
                processor = self._load_processor(transformers, **image_kwargs)
            tokenizer = processor.tokenizer
            tokenizer.padding_side = "left"
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._processor = processor
        return self._processor

    def _load_processor(self, transformers: Any, **kwargs: Any) -> Any:
        kwargs["use_fast"] = False
        if self.settings["revision"] is not None:
            kwargs["revision"] = self.settings["revision"]
        try:
            return transformers.AutoProcessor.from_pretrained(self.model_id, **kwargs)
        except (OSError, ImportError) as exc:
            why = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            # transformers 5 builds a video processor (torchvision only) beside the image one
            if isinstance(exc, ImportError) or ("video processor" in why and not _has_torchvision()):
                raise BenchError(
                    f"model {self.name!r}: the processor of {self.model_id!r} needs a package that is not "
                    f"installed ({why}); with transformers {transformers.__version__} processors that also "
                    "handle video (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision) need torchvision: install the build "
                    "that matches your torch") from None
            raise BenchError(f"model {self.name!r}: cannot load the processor of {self.model_id!r} "
                             f"(expected a Hugging Face id or a local folder): {exc}") from None

    def _image_kwargs(self, processor: Any) -> dict[str, Any]:
        """``from_pretrained`` keyword arguments for the image-size settings; an error when the
        processor has no use for one of them (e.g. ``min_pixels`` on an Idefics3 processor)."""
        s = self.settings
        given = [k for k in IMAGE_SETTINGS if s[k] is not None]
        if not given:
            return {}
        images = getattr(processor, "image_processor", None)
        for key in given:
            if not hasattr(images, IMAGE_SETTINGS[key]):
                raise BenchError(
                    f"model {self.name!r}: {key!r} sizes images of {FAMILIES[IMAGE_SETTINGS[key]]}; expected one "
                    f"of those, found {type(processor).__name__} ({type(images).__name__}) for {self.model_id!r}")

        def current(key: str) -> Any:
            size = getattr(images, "size", None) or {}
            return size.get(key) if isinstance(size, dict) else getattr(size, key, None)

        kwargs: dict[str, Any] = {}
        if s["min_pixels"] is not None or s["max_pixels"] is not None:
            kwargs["size"] = {"shortest_edge": s["min_pixels"] or current("shortest_edge"),
                              "longest_edge": s["max_pixels"] or current("longest_edge")}
        if s["image_splitting"] is not None:
            kwargs["do_image_splitting"] = s["image_splitting"]
        if s["image_longest_edge"] is not None:
            kwargs["size"] = {"longest_edge": s["image_longest_edge"]}
        return kwargs

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def image_token(self) -> str:
        return getattr(self.processor, "image_token", None) or "<image>"

    # -- identity -------------------------------------------------------------
    def label_token_ids(self, score_prompt: str, n_classes: int) -> list[int]:
        """Token ids of "0".."n_classes-1" right after ``score_prompt`` (module rule)."""
        key = (score_prompt, n_classes)
        if key in self._label_cache:
            return self._label_cache[key]
        tok = self.tokenizer
        base = tok.encode(score_prompt, add_special_tokens=False)
        ids: list[int] = []
        problems: list[str] = []
        for k in range(n_classes):
            full = tok.encode(score_prompt + str(k), add_special_tokens=False)
            extra = full[len(base):]
            if full[:len(base)] != base or len(extra) != 1:
                problems.append(f"{str(k)!r} -> {tok.convert_ids_to_tokens(extra)}")
            else:
                ids.append(extra[0])
        if problems:
            raise BenchError(
                f"model {self.name!r}: score mode expects each class label to be one token after "
                f"the prompt (answer_prefix {self.settings['answer_prefix']!r}); found "
                f"{', '.join(problems)}. Use mode = \"generate\", fewer classes or another answer_prefix"
            )
        if len(set(ids)) != len(ids):
            shown = {str(k): tok.convert_ids_to_tokens([i])[0] for k, i in enumerate(ids)}
            raise BenchError(f"model {self.name!r}: expected distinct label tokens, found {shown}")
        self._label_cache[key] = ids
        return ids

    def fingerprint(self) -> dict[str, Any]:
        s = self.settings
        fp: dict[str, Any] = {
            "provider": "transformers",
            "model": self.model_id,
            "quantization": s["quantization"],
            "compute_dtype": s["compute_dtype"] if s["quantization"] == "4bit" else None,
            "dtype": s["dtype"],
            "prompt_format": s["prompt_format"],
            "mode": s["mode"],
        }
        if s["mode"] in ("generate", "both"):
            fp["max_new_tokens"] = s["max_new_tokens"]
            fp["min_new_tokens"] = s["min_new_tokens"]
        if s["mode"] in ("score", "both"):
            fp["answer_prefix"] = s["answer_prefix"]  # the label tokens follow from it and the model
        if s["revision"] is not None:
            fp["revision"] = s["revision"]
        for key in IMAGE_SETTINGS:  # only when set: recordings made before these settings keep their keys
            if s[key] is not None:
                fp[key] = s[key]
        return fp

    # -- recording ------------------------------------------------------------
    def can_call_live(self) -> bool:
        """True when the weights can be loaded now: a local folder, a cached checkpoint or a reachable hub."""
        if self._not_live is None:
            self._not_live = self._weights_unavailable() or ""
        return not self._not_live

    def why_not_live(self) -> str:
        return self._not_live or ""

    def _weights_unavailable(self) -> str | None:
        """Why the weights cannot be had now (one line), or None. Only asks the hub (one request,
        no retries) when they are not cached; an answer from the hub, even an error, means online."""
        if self._model is not None or Path(self.model_id).is_dir():
            return None
        try:
            import huggingface_hub
            from huggingface_hub.errors import HfHubHTTPError
        except ImportError:
            return None  # the load says how to install the extra
        revision = self.settings["revision"]
        if isinstance(huggingface_hub.try_to_load_from_cache(self.model_id, "config.json", revision=revision), str):
            return None
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            why = "HF_HUB_OFFLINE is set"
        else:
            try:
                huggingface_hub.model_info(self.model_id, revision=revision, timeout=10)
                return None
            except HfHubHTTPError:
                return None  # the hub answered; loading reports what it said (a wrong id, a gated model)
            except Exception as exc:  # no answer: offline, DNS, refused, timed out
                why = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        return (f"model {self.name!r} needs the weights of {self.model_id!r}, which are not in the Hugging Face "
                f"cache ({huggingface_hub.constants.HF_HUB_CACHE}) and cannot be downloaded now ({why}); run once "
                f"with network to download them, or `hf download {self.model_id}`")

    def canonical_request(self, request: Request) -> dict[str, Any]:
        """What determines the answer: model settings, prompt and image digest (and a few-shot
        prompt's examples: id, label, text and image digest, and its query text)."""
        out = {**self.fingerprint(), "prompt": request.prompt, "image_sha256": request.image_sha256}
        if request.examples:
            self._check_fewshot()
            out["examples"] = [{"id": e.id, "label": e.label, "text": e.text, "image_sha256": e.image_sha256}
                               for e in request.examples]
            out["query_text"] = request.text
        return out

    def _check_fewshot(self) -> None:
        if self.settings["prompt_format"] != "chat-template":
            raise BenchError(f"model {self.name!r}: few-shot prompts (several images in one turn) need "
                             f"prompt_format = \"chat-template\", found {self.settings['prompt_format']!r} (the "
                             "paper's format has one image)")

    def to_record(self, answer: Answer) -> dict[str, Any]:
        return {"answer": {"raw": answer.raw, "label": answer.label, "probs": answer.probs,
                           "usage": answer.usage, "meta": answer.meta}}

    def from_record(self, sample_id: str, record: dict[str, Any]) -> Answer:
        a = record["answer"]
        if not isinstance(a, dict) or not isinstance(a.get("raw"), str):
            raise ValueError(f"expected an answer object with text 'raw', found {a!r}")
        return Answer(sample_id, raw=a["raw"], label=a.get("label"), probs=a.get("probs"),
                      usage=dict(a.get("usage") or {}), meta=dict(a.get("meta") or {}))

    # -- prompts --------------------------------------------------------------
    def prompt_text(self, request: Request) -> str:
        """The model input text of ``request`` (generation prompt included, no answer prefix).

        ``paper``: ``"USER: <image>\n" + prompt + "\nASSISTANT:"`` byte for byte as the
        authors' notebook built it, the prompt file being their ``prompt_template`` (which
        begins and ends with a newline); nothing is stripped.
        """
        prompt = request.prompt
        if request.examples:
            self._check_fewshot()
        if self.settings["prompt_format"] == "paper":
            return PAPER_PREFIX.replace("<image>", self.image_token) + prompt + PAPER_SUFFIX
        prompt = prompt.strip()
        content: list[dict[str, str]] = [{"type": "image"}, {"type": "text", "text": prompt}]
        if request.examples:
            content = self._fewshot_content(request)
        return self._chat(content)

    def _chat(self, content: list[dict[str, str]]) -> str:
        messages = [{"role": "user", "content": content}]
        try:
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # no template, or a template error
            raise BenchError(f"model {self.name!r}: prompt_format 'chat-template' needs the processor's "
                             f"chat template, which failed ({exc}); use prompt_format = \"paper\"") from None

    def _fewshot_content(self, request: Request) -> list[dict[str, str]]:
        """The user turn of a few-shot prompt: the prompt, each example's text and image, the query
        text and the image, each text ending in a newline. A template that writes every image
        before the texts (LLaVA-NeXT's) would part examples from their labels: then the turn is
        one text with the processor's image token in each image's place (the same text an
        order-keeping template of LLaVA's markup makes)."""
        parts = [{"type": "text", "text": request.prompt.strip() + "\n"}]
        for e in request.examples:
            parts += [{"type": "text", "text": e.text + "\n"}, {"type": "image"}]
        parts += [{"type": "text", "text": (request.text or "") + "\n"}, {"type": "image"}]
        if self._keeps_order:
            return parts
        inline = "".join(p["text"] if p["type"] == "text" else self.image_token + "\n" for p in parts)
        return [{"type": "text", "text": inline}]

    @cached_property
    def _keeps_order(self) -> bool:
        """Whether the chat template writes a turn's texts and images in their order."""
        out = self._chat([{"type": "text", "text": "\x01A"}, {"type": "image"}, {"type": "text", "text": "\x01B"},
                          {"type": "image"}])
        a, b, token = out.find("\x01A"), out.find("\x01B"), self.image_token
        return 0 <= a < out.find(token, a) < b < out.find(token, b)

    # -- model ----------------------------------------------------------------
    def _load_model(self) -> Any:
        if self._model is not None:
            return self._model
        self.processor  # noqa: B018 - imports torch and transformers, loads the processor
        torch = self._torch
        from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

        s = self.settings
        cuda = torch.cuda.is_available()
        kwargs: dict[str, Any] = {"device_map": s["device_map"] or ("auto" if cuda else "cpu")}
        compute = getattr(torch, s["compute_dtype"])
        if s["quantization"] != "none":
            try:
                import bitsandbytes  # noqa: F401
            except ImportError as exc:
                raise BenchError(f"quantization {s['quantization']!r} needs bitsandbytes ({exc}); "
                                 f"install it with:\n{INSTALL_HINT}") from None
            if s["quantization"] == "4bit":
                kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True,
                                                                   bnb_4bit_compute_dtype=compute)
            else:
                kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        if s["dtype"] != "auto":
            kwargs["dtype"] = getattr(torch, s["dtype"])
        elif s["quantization"] == "4bit":
            kwargs["dtype"] = compute
        elif s["quantization"] == "8bit":
            kwargs["dtype"] = torch.float16
        else:
            kwargs["dtype"] = "auto" if cuda else torch.float32
        if s["revision"] is not None:
            kwargs["revision"] = s["revision"]
        try:
            model = AutoModelForImageTextToText.from_pretrained(self.model_id, **kwargs)
        except (OSError, ValueError, ImportError) as exc:
            raise BenchError(f"model {self.name!r}: cannot load {self.model_id!r} with {kwargs}: {exc}") from None
        self.loaded_revision = self._loaded_commit(model)
        self._own_positions = hasattr(getattr(model, "model", model), "get_rope_index")
        model.eval()
        self._model = model
        return model

    def _loaded_commit(self, model: Any) -> str | None:
        """The hub commit of the loaded weights (transformers 4 kept it on the config; 5 does not:
        then the cached snapshot the config came from names it); None for a local folder."""
        commit = getattr(model.config, "_commit_hash", None)
        if commit or Path(self.model_id).is_dir():
            return commit
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(self.model_id, "config.json", revision=self.settings["revision"])
        except Exception:  # noqa: BLE001 - best effort, like transformers' own
            return None
        found = re.search(r"[/\\]snapshots[/\\]([0-9a-f]{40})[/\\]", cached) if isinstance(cached, str) else None
        return found.group(1) if found else None

    def _images(self, requests: Sequence[Request]) -> list[Any]:
        """The batch's PIL images, in the order of the texts' image tokens (read from disk now)."""
        from PIL import Image

        images = []
        for r in requests:
            if r.image is None:
                raise BenchError(f"model {self.name!r}: expected an image for sample {r.sample_id!r}, "
                                 "found none (text-only requests are not supported)")
            for image in (*(e.image for e in r.examples), r.load_image()):  # in the order of the text's images
                images.append(Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="RGB"))
        return images

    def _inputs(self, texts: list[str], requests: Sequence[Request], images: list[Any] | None = None) -> Any:
        if images is None:
            images = self._images(requests)
        # The chat template writes the BOS token itself; the paper's plain prompt relies
        # on the tokenizer adding it (as the notebook's processor call did).
        add_special = self.settings["prompt_format"] == "paper"
        enc = self.processor(images=images, text=texts, padding=True, return_tensors="pt",
                             add_special_tokens=add_special)
        enc = enc.to(self._model.device)
        if "pixel_values" in enc and enc["pixel_values"].is_floating_point():
            enc["pixel_values"] = enc["pixel_values"].to(self._model.dtype)
        return enc

    def _score(self, requests: Sequence[Request], texts: list[str], images: list[Any]) -> list[list[float]]:
        torch = self._torch
        prefix = self.settings["answer_prefix"]
        label_ids = [self.label_token_ids(t + prefix, r.n_classes) for t, r in zip(texts, requests)]
        enc = self._inputs([t + prefix for t in texts], requests, images)
        extra: dict[str, Any] = {}
        if not self._own_positions:  # left padding: positions count real tokens only, as generate() does
            extra["position_ids"] = (enc["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            self.model_calls += 1
            out = self._model(**enc, **extra, use_cache=False, logits_to_keep=1)
        logits = out.logits[:, -1, :].float()
        probs: list[list[float]] = []
        for row, ids in zip(logits, label_ids):
            p = torch.softmax(row[torch.tensor(ids, device=row.device)], dim=-1)
            probs.append([float(x) for x in p.cpu()])
        return probs

    def _generate(self, requests: Sequence[Request], texts: list[str], images: list[Any]) -> tuple[list[str], list[int]]:
        torch = self._torch
        s = self.settings
        enc = self._inputs(texts, requests, images)
        gen: dict[str, Any] = {"do_sample": False, "max_new_tokens": s["max_new_tokens"],
                               "pad_token_id": self.tokenizer.pad_token_id}
        if s["min_new_tokens"] is not None:
            gen["min_new_tokens"] = s["min_new_tokens"]
        with torch.inference_mode():
            self.model_calls += 1
            out = self._model.generate(**enc, **gen)
        new = out[:, enc["input_ids"].shape[1]:].cpu()
        eos = self._eos_ids()
        # A finished sequence ends at its EOS (padding follows); an unfinished one fills the row.
        counts = [next((i for i, t in enumerate(row.tolist()) if t in eos), len(row)) for row in new]
        if s["prompt_format"] == "paper":
            # As the notebook read it: the whole sequence decoded, then the text after the last
            # "ASSISTANT:" (its leading space included).
            full = self.tokenizer.batch_decode(out.cpu(), skip_special_tokens=True)
            return [text.rsplit(PAPER_SUFFIX.strip(), 1)[-1] for text in full], counts
        return self.tokenizer.batch_decode(new, skip_special_tokens=True), counts

    def _eos_ids(self) -> set[int]:
        """The tokens that end generation: the tokenizer's EOS and the generation config's (Qwen: two)."""
        ids = getattr(self._model.generation_config, "eos_token_id", None)
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        return {i for i in [self.tokenizer.eos_token_id, *ids] if i is not None}

    # -- protocol -------------------------------------------------------------
    def classify(self, requests: Sequence[Request], *, on_answer: OnAnswer | None = None) -> list[Answer]:
        if not requests:
            return []
        self._load_model()
        mode = self.settings["mode"]
        bs = self.settings["batch_size"]
        answers: list[Answer] = []
        for start in range(0, len(requests), bs):
            batch = list(requests[start:start + bs])
            texts = [self.prompt_text(r) for r in batch]
            t0 = time.perf_counter()
            images = self._images(batch)  # read and converted once, also when both modes run
            probs = self._score(batch, texts, images) if mode in ("score", "both") else None
            raws: list[str] | None = None
            counts: list[int] = []
            if mode in ("generate", "both"):
                raws, counts = self._generate(batch, texts, images)
            latency = (time.perf_counter() - t0) / len(batch)
            for i, r in enumerate(batch):
                ans = Answer(r.sample_id, raw="", latency_s=latency)
                if self.loaded_revision:  # which weights answered, recorded with the answer
                    ans.meta["served_model"] = f"{self.model_id}@{self.loaded_revision}"
                if probs is not None:
                    p = probs[i]
                    ans.probs = p
                    ans.label = max(range(len(p)), key=p.__getitem__)
                    ans.raw = str(ans.label)
                if raws is not None:
                    ans.raw = raws[i]
                    ans.usage = {"completion_tokens": counts[i]}
                    if mode == "both":  # the label is the score's; the session reads the text
                        ans.meta["score_label"] = ans.label
                answers.append(ans)
                if on_answer is not None:
                    on_answer(ans)
        return answers

    def close(self) -> None:
        self._model = None
        if self._torch is not None and self._torch.cuda.is_available():  # None: replay never imported torch
            self._torch.cuda.empty_cache()

