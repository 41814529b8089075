"""The typed schema of the bench config: every table, key, type, default and choice.

``benchmark.config`` validates the merged TOML with :func:`validate` before
anything runs; the providers take their settings' defaults and choices from
here (:data:`OPENAI_SETTINGS`, :data:`HF_SETTINGS`, :func:`model_settings`).
``python -m benchmark.schema > cases/bench.schema.json`` writes the published
JSON Schema (draft 7) that editors use (taplo: ``#:schema ./bench.schema.json``).
"""

from __future__ import annotations

import difflib
import json
import re
import string
from collections.abc import Iterable
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import PydanticCustomError

from benchmark.core import BenchError

# Names build file paths; benchmark.config.check_name enforces the rule, the schema only shows its shape.
Name = Annotated[str, Field(json_schema_extra={"pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*$", "maxLength": 100})]
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_CHECKSUM = r"^(git-sha1:[0-9a-fA-F]{40}|md5:[0-9a-fA-F]{32}|sha256:[0-9a-fA-F]{64})$"
_UNSHOWN = {"api_key_env", "base_url"}  # a wrong value here may hold a key: never echo it


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# -------------------------------------------------------------------- models


class Prices(_Table):
    """USD per million tokens, for cost estimates."""

    input_per_mtok: float | None = Field(None, ge=0, description="USD per million input tokens")
    output_per_mtok: float | None = Field(None, ge=0, description="USD per million output tokens")
    batch: float | None = Field(None, ge=0, description="price factor of answers that came through the Batch "
                                                        "API (OpenAI: 0.5); default 1")


class _Model(_Table):
    model: str = Field(min_length=1, description="the model id (a Hugging Face id or local folder for transformers)")
    enabled: bool = Field(True, description="run by default; false: only when named with --bench-model")
    prompts: list[Name] | None = Field(None, description="prompt variants that replace the task's, first = default")
    prices: Prices | None = Field(None, description="for cost estimates in the reports")
    repeats: int = Field(1, ge=1, description="ask every request this many times (with temperature > 0): "
                                              "mean +- sd of accuracy and the majority-vote accuracy")


_Url = Annotated[str, Field(pattern=r"^[hH][tT][tT][pP][sS]?://", description="an http:// or https:// URL")]


class OpenAIModel(_Model):
    """An OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, ...)."""

    provider: Literal["openai"] = "openai"
    base_url: _Url | Annotated[list[_Url], Field(min_length=1)] | None = Field(
        None, description="an http:// or https:// URL, or a list of them: data-parallel replicas of one "
                          "model (e.g. vLLM servers), requests balanced, a failing one left out for a while; "
                          "default: the openai client's")
    api_key_env: str = Field("OPENAI_API_KEY", pattern=_ENV_NAME,
                             description="the NAME of the environment variable that holds the key")
    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature")
    max_tokens: int | None = Field(None, ge=1, description="answer length limit; default: the server's")
    concurrency: int = Field(8, ge=1, description="requests in flight at once, at most (the adaptive limit "
                                                  "starts here, is halved on each 429 and grows back by one "
                                                  "after each window of successes)")
    min_concurrency: int = Field(1, ge=1, description="the adaptive limit's floor (min_concurrency = concurrency: "
                                                      "a fixed limit)")
    max_retries: int = Field(6, ge=0, description="retries on 5xx, connection errors, timeouts and malformed "
                                                  "answers")
    rate_limit_retries: int = Field(20, ge=0, description="retries on 429 (rate limited), each after the wait "
                                                          "the server's Retry-After names")
    timeout_s: float = Field(60.0, gt=0, description="seconds per request")
    detail: Literal["low", "high", "auto"] | None = Field(None, description="image detail; default: the server's")
    seed: int | None = Field(None, description="sampling seed, where the server supports one")
    n: int | None = Field(None, ge=1, description="choices per request, sent when set (the paper's "
                                                  "extraction call sent n = 1); the first is used")
    mode: Literal["generate", "score"] = Field(
        "generate", description="generate: the answer's text, read by the parser; score: the probability of each "
                                "class label as the first answer token (logprobs + top_logprobs), one token asked")
    constrain: Literal["json-schema", "guided-choice"] | None = Field(
        None, description="force a valid class: OpenAI structured outputs (a JSON schema enum of the labels) "
                          "or vLLM guided_choice; default: free text, read by the parser")
    batch: bool = Field(False, description="ask what is not recorded through the OpenAI Batch API (files + "
                                           "batches, answers within 24 h, at the batch price)")
    batch_poll_s: float = Field(30.0, gt=0, description="seconds between two looks at a running batch")
    batch_retry: Literal["live", "batch"] = Field(
        "live", description="lines a batch did not answer (5xx, expired, missing): asked again live, or in a "
                            "new batch (at most max_retries more batches)")

    @model_validator(mode="after")
    def _consistent(self) -> OpenAIModel:
        if self.min_concurrency > self.concurrency:
            raise ValueError(f"expected 'min_concurrency' <= concurrency ({self.concurrency}), "
                             f"found {self.min_concurrency}")
        if isinstance(self.base_url, list) and len(set(self.base_url)) != len(self.base_url):
            raise ValueError("expected distinct URLs in 'base_url', found one listed twice")
        return self


def _str_or_table(value: Any) -> Any:
    if value is not None and not isinstance(value, (str, dict)):
        raise PydanticCustomError("str_or_table", "expected a string or a table")
    return value


_StrOrTable = Annotated[Any, AfterValidator(_str_or_table),
                        WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "object"}]})]


class TransformersModel(_Model):
    """An in-process Hugging Face transformers model (LLaVA-NeXT, Qwen2-VL, SmolVLM, ...); see
    benchmark.providers.hf."""

    provider: Literal["transformers"]
    quantization: Literal["none", "8bit", "4bit"] = Field("none", description="bitsandbytes quantization")
    compute_dtype: Literal["float16", "bfloat16", "float32"] = Field("float16",
                                                                    description="bitsandbytes compute dtype")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field("auto", description="dtype of the other weights")
    device_map: _StrOrTable = Field(None, description='from_pretrained device_map; default "auto" with CUDA, '
                                                      'else "cpu"')
    batch_size: int = Field(1, ge=1, description="requests per forward pass (left padding)")
    prompt_format: Literal["chat-template", "paper"] = Field("chat-template", description="how the prompt is wrapped")
    mode: Literal["generate", "score", "both"] = Field("generate",
                                                       description="free text, label probabilities, or both")
    max_new_tokens: int = Field(200, ge=1, description="generation length limit")
    min_new_tokens: int | None = Field(None, ge=0, description="generation length floor")
    answer_prefix: str = Field(" ", description="appended to the prompt in score mode")
    extract_with: str | None = Field(None, description="another (openai) model that reads the generated text "
                                                       "and answers the class number")
    extract_prompt: str = Field("extract-paper", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                                description="the extractor's instruction: prompts/<task>/<this>.txt, sent as the "
                                            "first text part before the generated text")
    revision: str | None = Field(None, min_length=1, description="the weights' revision (branch, tag or commit) "
                                                                 "on the Hugging Face hub; default: the main branch")
    # Image size, per processor family (default: the checkpoint's processor settings).
    min_pixels: int | None = Field(None, ge=1, description="Qwen2-VL / Qwen2.5-VL: smallest image area in pixels "
                                                           "after resizing (one image token per 28x28 pixels); "
                                                           "smaller images are scaled up")
    max_pixels: int | None = Field(None, ge=1, description="Qwen2-VL / Qwen2.5-VL: largest image area in pixels "
                                                           "after resizing; larger images are scaled down")
    image_splitting: bool | None = Field(None, description="Idefics3 / SmolVLM: split the image into tiles of the "
                                                           "vision encoder's size plus a global view (true), or "
                                                           "one view only (false)")
    image_longest_edge: int | None = Field(None, ge=1, description="Idefics3 / SmolVLM: the image is resized so its "
                                                                   "longest edge is this many pixels (then tiled)")

    @model_validator(mode="after")
    def _consistent(self) -> TransformersModel:
        if self.min_new_tokens is not None and self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"expected 'min_new_tokens' <= max_new_tokens ({self.max_new_tokens}), "
                             f"found {self.min_new_tokens}")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"expected 'min_pixels' <= max_pixels ({self.max_pixels}), found {self.min_pixels}")
        if self.extract_with is not None and self.mode == "score":
            raise ValueError("'extract_with' reads generated text; expected mode 'generate' or 'both', found 'score'")
        return self


class PluginModel(_Model):
    """A provider registered in ``benchmark.providers.PROVIDERS`` beyond the built-in ones: its
    common keys are checked here, the rest by the provider when it is built."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    provider: str


def _default_provider(value: Any) -> Any:
    return {"provider": "openai", **value} if isinstance(value, dict) and "provider" not in value else value


Model = Annotated[OpenAIModel | TransformersModel, Field(discriminator="provider"),
                  BeforeValidator(_default_provider)]
PROVIDERS = ("openai", "transformers")


def _settings(cls: type[_Model]) -> dict[str, Any]:
    return {k: f.default for k, f in cls.model_fields.items() if k not in _Model.model_fields and k != "provider"}


OPENAI_SETTINGS: dict[str, Any] = _settings(OpenAIModel)      # provider keys -> defaults
HF_SETTINGS: dict[str, Any] = _settings(TransformersModel)
_MODEL_CLASSES: dict[str, type[_Model]] = {"openai": OpenAIModel, "transformers": TransformersModel}


def model_settings(provider: str, name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` (the provider keys of ``[models.NAME]`` as written) validated, defaults filled in.

    Values are returned as written (``0`` stays ``0``): they reach requests and recording keys.
    """
    cls = _MODEL_CLASSES[provider]
    try:
        cls.model_validate({"model": "-", **settings, "provider": provider})
    except ValidationError as exc:
        where = f"models.{name}"
        raise _error(_report(exc, prefix=("models", name, provider), where=where), where) from None
    defaults = _settings(cls)
    return {**defaults, **{k: v for k, v in settings.items() if k in defaults}}


# ------------------------------------------------------------------ datasets


class FileEntry(_Table):
    url: str = Field(pattern=r"^(https?|file)://", description="an http(s):// or file:// URL")
    checksum: str = Field(pattern=_CHECKSUM, description='"algo:hex" with algo git-sha1, md5 or sha256')


class _Dataset(_Table):
    description: str = ""
    license: str | None = None
    citation: str | None = None
    n_classes: int | None = Field(None, ge=2, description="number of classes (labels 0..n-1)")


class _Remote(_Dataset):
    files: dict[str, FileEntry] = Field(min_length=1, description="FILE = { url, checksum }, downloaded once "
                                                                  "into the cache and verified")

    def _listed(self, key: str, fname: str) -> None:
        if fname not in self.files:
            raise ValueError(f"expected '{key}' to name an entry of 'files' ({sorted(self.files)}), "
                             f"found {fname!r}{did_you_mean(fname, self.files)}")

    @model_validator(mode="after")
    def _plain_names(self) -> _Remote:
        bad = [f for f in self.files if f in ("", ".", "..") or "/" in f or "\\" in f]
        if bad:
            raise ValueError(f"expected plain file names (no folders) in 'files', found {bad}")
        return self


class LsbgNpy(_Remote):
    """The LSBG set: image arrays in .npy files plus a labels .npy."""

    format: Literal["lsbg-npy"]
    images: list[str] = Field(min_length=1, description="the .npy image files, in order")
    labels: str = Field(description="the .npy labels file")
    n_classes: int = Field(2, ge=2, description="number of classes (labels 0..n-1)")

    @model_validator(mode="after")
    def _files_listed(self) -> LsbgNpy:
        if len(set(self.images)) != len(self.images):
            raise ValueError(f"expected unique file names in 'images', found {self.images}")
        for fname in self.images:
            self._listed("images", fname)
        self._listed("labels", self.labels)
        return self


class GalaxyMnist(_Remote):
    """GalaxyMNIST: one gzip'd HDF5 file with 'images' and 'labels'."""

    format: Literal["galaxy-mnist-hdf5-gz"]
    file: str = Field(description="the .hdf5.gz file")
    n_classes: int = Field(4, ge=2, description="number of classes (labels 0..n-1)")

    @model_validator(mode="after")
    def _file_listed(self) -> GalaxyMnist:
        self._listed("file", self.file)
        return self


class FitsDisplay(_Table):
    """How FITS cutouts become the 8-bit RGB the model sees (astropy.visualization)."""

    stretch: Literal["linear", "sqrt", "log", "asinh"] = Field("asinh", description="one band: the stretch")
    interval: Literal["minmax", "percentile", "zscale"] = Field("percentile", description="one band: the limits")
    percentile: float = Field(99.5, gt=0, le=100, description="with interval = percentile: the share kept")
    rgb: Literal["lupton", "bands"] = Field("lupton", description="three bands (r, g, b planes): Lupton et al. "
                                                                 "(2004) asinh colour, or each band as one band")
    lupton_q: float = Field(8.0, gt=0, description="make_lupton_rgb's Q (softening)")
    lupton_stretch: float = Field(0.5, gt=0, description="make_lupton_rgb's stretch (linear range)")


class Folder(_Dataset):
    """A local folder of images (PNG, JPEG, or FITS cutouts), one sub-folder per class."""

    format: Literal["folder"]
    path: str = Field(min_length=1, description="the folder (relative: to this file's folder)")
    classes: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1, description="class sub-folders, index = label; default: sorted folder names")
    display: FitsDisplay | None = Field(None, description="how FITS images are displayed; default: asinh stretch, "
                                                          "99.5% percentile interval, Lupton colour for 3 bands")

    @model_validator(mode="after")
    def _classes(self) -> Folder:
        if self.classes is not None:
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"expected unique folder names in 'classes', found {self.classes}")
            if self.n_classes is not None and self.n_classes != len(self.classes):
                raise ValueError(f"expected 'n_classes' = {len(self.classes)} (the folders in 'classes'), "
                                 f"found {self.n_classes}")
        return self


Dataset = Annotated[LsbgNpy | GalaxyMnist | Folder, Field(discriminator="format")]
FORMATS = ("lsbg-npy", "galaxy-mnist-hdf5-gz", "folder")


# --------------------------------------------------------------------- tasks


def _sample_size(value: Any) -> Any:
    if value is None or value == "all" or (type(value) is int and value >= 1):
        return value
    raise PydanticCustomError("sample_size", 'expected a whole number >= 1 or "all"')


SampleSize = Annotated[int | Literal["all"] | None, BeforeValidator(_sample_size), WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 1},
               {"type": "string", "const": "all", "pattern": "^all$", "description": '"all"'}]})]


EXAMPLE_TEXT = "Example of category {label}:"  # few-shot defaults (PromptVariant)
QUERY_TEXT = "Now classify this image. Respond with a number only."
FEWSHOT_KEYS = frozenset({"shot_seed", "example_text", "query_text"})  # the settings that need shots >= 1


class PromptVariant(_Table):
    """Settings of one prompt variant: ``[tasks.NAME.variants.VARIANT]``. A variant without a
    table is its file ``prompts/<task>/<variant>.txt`` sent as written."""

    file: Name | None = Field(None, description="the prompt file prompts/<task>/<file>.txt; default: the "
                                                "variant's own name (so several variants can share one file)")
    # few-shot (benchmark.fewshot): the prompt, then per example its text and image, then query_text and the image
    shots: int = Field(0, ge=0, description="labelled example images per class sent before the query image, drawn "
                                            "from the dataset beyond the task's sample; 0: zero-shot")
    shot_seed: int = Field(0, ge=0, description="which examples are drawn (deterministic on every machine)")
    example_text: str = Field(EXAMPLE_TEXT, min_length=1, description=(
        "the text part before each example image; {label}: its class index, {name}: its class name"))
    query_text: str = Field(QUERY_TEXT, min_length=1, description="the text part before the query image")

    permute_labels: bool = Field(False, description="ask every image under each cyclic renumbering of the classes "
                                                    "(the file is a template with marked class blocks, see "
                                                    "cases/prompts/README.md): accuracy per shift, consistent "
                                                    "accuracy and the digit preference")

    @model_validator(mode="after")
    def _fewshot(self) -> PromptVariant:
        given = sorted(FEWSHOT_KEYS & self.model_fields_set)
        if self.shots == 0 and given:
            raise ValueError(f"{given} apply to few-shot prompts; expected 'shots' >= 1 with them, found 'shots' = 0")
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(self.example_text) if f is not None}
        except ValueError as exc:
            raise ValueError(f"'example_text': expected a text with {{label}} or {{name}}, found {self.example_text!r}"
                             f" ({exc})") from None
        if fields - {"label", "name"}:
            raise ValueError(f"'example_text': expected only the placeholders {{label}} and {{name}}, found "
                             f"{sorted(fields - {'label', 'name'})} in {self.example_text!r}")
        return self


class Task(_Table):
    """A dataset, its class names (index = label) and prompt variants; or a re-scoring of another task."""

    description: str = ""
    dataset: str | None = Field(None, description="a [datasets] name")
    classes: list[str] | None = Field(None, min_length=2, description="class names, index = label")
    sample_size: SampleSize = Field(
        None, description='how many images: N, or "all" (the whole dataset, also when left out)')
    sample: Literal["first", "stratified"] = Field(
        "first", description='which images: "first" N in the dataset\'s order (as in the paper), or '
                             '"stratified": each class keeps its share, drawn with seed')
    seed: int | None = Field(None, ge=0, description='the seed of sample = "stratified" (default 0)')
    prompts: list[Name] | None = Field(None, min_length=1, description='prompt variants (prompts/<task>/<variant>'
                                                                       '.txt), first = default; default ["paper"]')
    prompt_dir: str | None = Field(None, description="folder of the prompt files; default prompts/<task>")
    variants: dict[Name, PromptVariant] | None = Field(
        None, description="settings of prompt variants by name (the variant runs when listed in 'prompts' or "
                          "in a model's 'prompts', or when named with --bench-prompt)")
    derived_from: str | None = Field(None, description="re-score this task's predictions (no model calls)")
    merge: list[Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]] | None = Field(
        None, min_length=1, description="groups of the base task's class indices, e.g. [[0], [1, 2], [3]]")
    merged_classes: list[str] | None = Field(None, min_length=2, description="names of the merged classes")

    @model_validator(mode="after")
    def _shape(self) -> Task:
        if self.derived_from is None:
            for key in ("merge", "merged_classes"):
                if getattr(self, key) is not None:
                    raise ValueError(f"'{key}' needs 'derived_from'")
            if self.dataset is None:
                raise ValueError("expected 'dataset' (a [datasets] name) or 'derived_from', found neither")
        else:
            given = [k for k in ("dataset", "sample_size", "seed", "prompts", "variants") if getattr(self, k) is not None]
            given += ["sample"] if "sample" in self.model_fields_set else []
            if given:
                raise ValueError(f"a derived task takes its data and prompts from {self.derived_from!r}; "
                                 f"expected no {given}")
            if (self.merge is None) != (self.merged_classes is None):
                raise ValueError("expected 'merge' and 'merged_classes' together")
        fewshot = sorted(n for n, v in (self.variants or {}).items() if v.shots)
        if fewshot and self.sample_size in (None, "all"):
            raise ValueError(f"few-shot variants {fewshot} draw their examples from the images beyond the sample; "
                             "expected 'sample_size', found none (the sample would be the whole dataset)")
        if self.seed is not None and self.sample != "stratified":
            raise ValueError(f"'seed' draws a stratified sample; expected sample = \"stratified\" with it, "
                             f"found sample = {self.sample!r}")
        need = "merged_classes" if self.merge is not None else "classes"
        if getattr(self, need) is None:
            raise ValueError(f"expected '{need}' as a list of at least 2 names, found none")
        if self.merge is not None and self.classes is not None:
            raise ValueError("a merged task names its classes in 'merged_classes'; expected no 'classes'")
        return self


# ---------------------------------------------------------------- thresholds


class Threshold(_Table):
    min_accuracy: float = Field(ge=0, le=1, description="the case fails below this accuracy")
    note: str = Field("", description="why this value")


Accuracy = Annotated[float, Field(ge=0, le=1)]
ThresholdValue = Annotated[Threshold, BeforeValidator(
    lambda v: {"min_accuracy": v} if isinstance(v, (int, float)) and not isinstance(v, bool) else v,
    json_schema_input_type=Accuracy | Threshold)]


class BenchFile(_Table):
    """The bench config: cases/bench.toml with a user's file (--bench-config) merged over it."""

    tasks: dict[str, Task] = Field(default_factory=dict)
    datasets: dict[str, Dataset] = Field(default_factory=dict)
    models: dict[str, Model] = Field(default_factory=dict)
    thresholds: dict[str, ThresholdValue] = Field(
        default_factory=dict, description='"task/model" or "task/model/prompt" = min accuracy or '
                                          '{ min_accuracy, note }')


def validate(raw: dict[str, Any], *, where: str = "<config>", plugins: Iterable[str] = ()) -> BenchFile:
    """``raw`` (the merged TOML) as a :class:`BenchFile`, or a BenchError listing every mistake.

    Models whose provider is one of ``plugins`` (registered, not built in) are :class:`PluginModel`.
    """
    plugins = set(plugins) - set(PROVIDERS)
    models = raw.get("models")
    others = {n: m for n, m in models.items() if isinstance(m, dict) and m.get("provider") in plugins
              } if isinstance(models, dict) else {}
    if others:
        raw = {**raw, "models": {n: m for n, m in models.items() if n not in others}}
    lines: list[str] = []
    checked: dict[str, PluginModel] = {}
    for name, spec in others.items():
        try:
            checked[name] = PluginModel.model_validate(spec)
        except ValidationError as exc:
            lines += _report(exc, where=where, prefix=("models", name))
    try:
        bench = BenchFile.model_validate(raw)
    except ValidationError as exc:
        lines = _report(exc, where=where, choices={"provider": (*PROVIDERS, *sorted(plugins))}) + lines
    if lines:
        raise _error(lines, where)
    return bench.model_copy(update={"models": {**bench.models, **checked}}) if checked else bench


# ----------------------------------------------------------------- messages


def did_you_mean(word: Any, options: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``options``, else ``""``."""
    close = difflib.get_close_matches(word, list(options), n=1) if isinstance(word, str) else []
    return f"; did you mean {close[0]!r}?" if close else ""


def _path(parts: list[str]) -> str:
    """TOML dotted path; keys that are not bare TOML keys quoted."""
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+(\[\d+\])*", p) else repr(p) for p in parts)


def _locate(loc: Iterable[str | int]) -> tuple[list[str], dict[str, Any], str]:
    """Display path of ``loc`` (union tags left out), the JSON Schema there, and the tag it went through."""
    node, parts, tag = _resolve(_full_schema()), [], ""
    for seg in loc:
        disc = node.get("discriminator")
        if disc and seg in disc["mapping"]:
            node, tag = _resolve({"$ref": disc["mapping"][seg]}), f" for {disc['propertyName']} {seg!r}"
            continue
        node, tag = _branch(node, seg), ""
        if isinstance(seg, int):
            node = _resolve(node.get("items", {}))
            parts[-1] += f"[{seg}]"
            continue
        extra = node.get("additionalProperties")
        if not isinstance(extra, dict):  # a table keyed by names (e.g. variants) has patternProperties
            extra = next(iter(node.get("patternProperties", {}).values()), {})
        node = node.get("properties", {}).get(seg, extra)
        parts.append(seg)
        node = _resolve(node)
    return parts, node, tag


def _branch(node: dict[str, Any], seg: str | int) -> dict[str, Any]:
    """The member of an anyOf/oneOf that ``seg`` walks into."""
    members = [_resolve(m) for m in node.get("anyOf", node.get("oneOf", []))]
    for m in members:
        if (m.get("items") if isinstance(seg, int) else seg in m.get("properties", {})
                or isinstance(m.get("additionalProperties"), dict)):
            return m
    return members[0] if members else node


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = _full_schema()["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


_NOUNS = {"integer": ("an integer", "integers"), "number": ("a number", "numbers"),
          "string": ("a string", "strings"), "boolean": ("true or false", "booleans"),
          "object": ("a table", "tables"), "array": ("a list", "lists")}


def _words(node: dict[str, Any], *, plural: bool = False) -> str:
    """What the JSON Schema ``node`` accepts, in words."""
    node = _resolve(node)
    if "anyOf" in node or "oneOf" in node:
        return " or ".join(dict.fromkeys(_words(m, plural=plural) for m in node.get("anyOf", node.get("oneOf"))))
    if "enum" in node:
        return f"one of {node['enum']}"
    if node.get("pattern") and node.get("description"):
        return node["description"]
    kind = node.get("type", "")
    if kind not in _NOUNS:
        return ""
    words = _NOUNS[kind][plural]
    if kind == "string" and node.get("minLength"):
        words = "non-empty " + words if plural else "a non-empty string"
    lo, hi, gt = node.get("minimum"), node.get("maximum"), node.get("exclusiveMinimum")
    if lo is not None and hi is not None:
        words += f" in [{lo}, {hi}]"
    elif lo is not None or gt is not None:
        words += f" >= {lo}" if lo is not None else f" > {gt}"
    if kind == "array":
        words += f" of {_words(node.get('items', {}), plural=True)}"
        if node.get("minItems"):
            words += f" (at least {node['minItems']})"
    return words


def _error(lines: list[str], where: str) -> BenchError:
    if len(lines) == 1:
        return BenchError(lines[0])
    return BenchError(f"{len(lines)} mistakes in {where}:\n" + "\n".join(f"  {line}" for line in lines))


def _shown(key: str, value: Any) -> str:
    if key.split("[")[0] in _UNSHOWN:
        return "a value that is not shown (it may be a secret)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _report(exc: ValidationError, *, where: str, prefix: tuple[str, ...] = (),
            choices: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """Every error of ``exc`` as 'table: expected ..., found ...' lines (unknown keys grouped per table)."""
    lines: list[str] = []
    unknown: dict[tuple[Any, ...], list[str]] = {}
    for err in exc.errors():
        loc = (*prefix, *err["loc"])
        if err["type"] == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
            continue
        parts, node, tag = _locate(loc)
        table, key = _path(parts[:-1]) or where, parts[-1] if parts else ""
        kind, ctx, found = err["type"], err.get("ctx") or {}, err["input"]
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            disc = ctx["discriminator"].strip("'")
            tags = (choices or {}).get(disc) or (PROVIDERS if disc == "provider" else FORMATS)
            got = f"{ctx['tag']!r}{did_you_mean(ctx['tag'], tags)}" if "tag" in ctx else "none"
            lines.append(f"{_path(parts)}: expected '{disc}' one of {list(tags)}, found {got}")
        elif kind in ("value_error", "assertion_error"):
            lines.append(f"{_path(parts) or where}: {ctx.get('error', err['msg'])}")
        elif kind == "missing":
            lines.append(f"{table}: expected '{key}' {_words(node)}, found none")
        else:
            hint = did_you_mean(found, node.get("enum", [])) if isinstance(found, str) else ""
            lines.append(f"{table}: expected '{key}' {_words(node) or err['msg']}, found {_shown(key, found)}{hint}")
    for loc, keys in unknown.items():
        parts, node, tag = _locate(loc)
        node = next((m for m in map(_resolve, node.get("anyOf", [])) if "properties" in m), node)
        known = sorted(node.get("properties", {}))
        close = {k: m[0] for k in keys if (m := difflib.get_close_matches(k, known, n=1))}
        hint = ""
        if close:
            hint = (f" (did you mean {next(iter(close.values()))!r}?)" if len(keys) == 1 else
                    f" (did you mean {', '.join(f'{m!r} for {k!r}' for k, m in close.items())}?)")
        if not parts:
            lines.append(f"{where}: unknown top-level tables {sorted(keys)}{hint}; expected {', '.join(known)}")
        else:
            lines.append(f"{_path(parts)}: unknown keys {sorted(keys)}{tag}{hint}; expected some of {known}")
    return lines


# ------------------------------------------------------------- JSON Schema


class _Draft7(GenerateJsonSchema):
    """Draft 7 (what taplo reads): ``definitions``, ``enum`` for constants, no titles,
    no null branches (TOML has no null)."""

    def literal_schema(self, schema: Any) -> JsonSchemaValue:
        out = super().literal_schema(schema)
        if "const" in out:
            out["enum"] = [out.pop("const")]
        return out

    def nullable_schema(self, schema: Any) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def generate(self, schema: Any, mode: Any = "validation") -> JsonSchemaValue:
        out = super().generate(schema, mode=mode)
        defs = out.pop("$defs", {})
        for d in defs.values():
            d.pop("title", None)
        return {"$schema": "http://json-schema.org/draft-07/schema#", **out,
                "title": "astrobench config (cases/bench.toml)", "definitions": defs}


@cache
def _full_schema() -> dict[str, Any]:
    """The merged config's JSON Schema as pydantic sees it (messages are worded from it)."""
    return _no_null_defaults(BenchFile.model_json_schema(ref_template="#/definitions/{model}",
                                                         schema_generator=_Draft7))


def _no_null_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _no_null_defaults(v) for k, v in node.items() if not (k == "default" and v is None)}
    return [_no_null_defaults(v) for v in node] if isinstance(node, list) else node


def json_schema() -> dict[str, Any]:
    """The published JSON Schema (``cases/bench.schema.json``): one file's view for editors.

    A user's file is a partial layer over the built-in one, so nothing is ``required``
    (completeness is checked at load), and each tagged union is an if/then/else on
    ``provider`` / ``format`` (precise editor messages; an untagged table may be any variant).
    """
    return _for_editors(_full_schema())


def _for_editors(node: Any) -> Any:
    if isinstance(node, list):
        return [_for_editors(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _for_editors(v) for k, v in node.items() if k != "required"}
    disc = node.pop("discriminator", None)
    if disc:
        prop, out = disc["propertyName"], {"anyOf": node.pop("oneOf")}
        for tag, ref in reversed(disc["mapping"].items()):
            out = {"if": {"properties": {prop: {"enum": [tag]}}, "required": [prop]}, "then": {"$ref": ref},
                   "else": out}
        node.update(out)
    return node


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


if __name__ == "__main__":
    print(schema_text(), end="")
