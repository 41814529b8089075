"""Benchmark configuration: tasks, datasets, models, prompts, thresholds.

Plain TOML under ``cases/`` (``cases/bench.toml``); a user's own file given by
``--bench-config`` or ``$ASTROBENCH_CONFIG`` is merged over it, table by
table, so private endpoints and tasks stay out of the repo. Relative paths
(prompt folders, image folders) resolve against the file that names them.
Everything is validated here (types, keys and choices by :mod:`benchmark.schema`),
before any download or model call.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmark import schema
from benchmark.core import BenchError
from benchmark.providers import PROVIDERS
from benchmark.resources import builtin_path
from benchmark.schema import did_you_mean
from benchmark.sampling import Selection

BUILTIN_CONFIG = builtin_path("bench.toml")  # package data: cases/ in a checkout (benchmark/resources.py)
CONFIG_ENV = "ASTROBENCH_CONFIG"

_NAME_START = re.compile(r"[A-Za-z0-9]")
MAX_NAME_LEN = 100
_NAME_RULE = ("letters, digits, '.', '_' or '-' (starting with a letter or digit, no '..', "
              f"at most {MAX_NAME_LEN} characters)")
_OPENAI_KEY_ENV = "OPENAI_API_KEY"  # the openai provider's default api_key_env


def check_name(kind: str, name: str) -> str:
    """``name`` if it is safe inside a file name, else a BenchError.

    Task, model, dataset and prompt-variant names build file paths (prompt
    files, recordings, caches): letters, digits, ``.``, ``_``, ``-``; a letter
    or digit first; no ``..``; at most 100 characters. ``+`` is never allowed
    (it separates names in recording file names). ``kind`` starts the message,
    e.g. ``"model"`` or ``"tasks.lsbg.prompts: prompt variant"``.
    """
    if not isinstance(name, str):
        raise BenchError(f"{kind} {name!r}: expected a string name, found {type(name).__name__}")
    bad = next((c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))), None)
    if len(name) > MAX_NAME_LEN:
        why = f"{len(name)} characters"
    elif not name:
        why = "an empty name"
    elif bad is not None:
        why = repr(bad)
    elif not _NAME_START.match(name):
        why = f"{name[0]!r} at the start"
    elif ".." in name:
        why = "'..'"
    else:
        return name
    raise BenchError(f"{kind} {name!r}: expected {_NAME_RULE}, found {why}")


def safe_join(root: Path, *parts: str) -> Path:
    """``root / parts...`` (as joined, not resolved) if it resolves strictly
    inside ``root`` (symlinks followed), else a BenchError."""
    path = Path(root).joinpath(*parts)
    base, real = Path(root).resolve(), path.resolve()
    if real == base or not real.is_relative_to(base):
        raise BenchError(f"expected a path inside {base}, found {'/'.join(parts)!r} (resolves to {real})")
    return path


def redact_url(url: str) -> str:
    """``url`` with any credentials, query string and fragment shown as ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest, hash_, _ = rest.partition("#")
    rest, qmark, _ = rest.partition("?")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}" + ("?***" if qmark else "") + ("#***" if hash_ else "")


@dataclass(frozen=True)
class ModelConfig:
    """One model entry (``[models.NAME]``).

    ``settings`` holds the provider-specific keys of the table as written
    (e.g. ``base_url``, ``api_key_env``, ``concurrency`` for ``openai``;
    ``quantization``, ``batch_size``, ``mode`` for ``transformers``).
    """

    name: str
    provider: str
    model: str
    enabled: bool = True
    prompts: tuple[str, ...] | None = None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptVariant:
    """A prompt variant (``[tasks.NAME.variants.VARIANT]``): its name and which prompt file it sends.
    Variants without a table send ``<name>.txt`` as written."""

    name: str
    file: str
    shots: int = 0  # few-shot: labelled examples per class before the query image (benchmark.fewshot)
    shot_seed: int = 0
    example_text: str = schema.EXAMPLE_TEXT
    query_text: str = schema.QUERY_TEXT
    permute_labels: bool = False  # ask under every cyclic renumbering of the classes (benchmark.permute)

    def settings(self) -> dict[str, Any]:
        """What the variant sets beyond its name (for provenance and results); settings left at
        their default are left out, so adding a setting does not change older runs' provenance,
        except that a few-shot variant names all its few-shot settings (the texts are sent)."""
        shown = schema.FEWSHOT_KEYS if self.shots else set()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "name" and (getattr(self, f.name) != f.default or f.name in shown)}


@dataclass(frozen=True)
class TaskConfig:
    """One task (``[tasks.NAME]``): a dataset, class names and prompt variants.

    A derived task (``derived_from``) re-scores another task's predictions,
    e.g. with classes merged; it makes no model calls of its own.
    """

    name: str
    classes: tuple[str, ...]
    dataset: str | None
    sample_size: int | None
    prompts: tuple[str, ...]
    prompt_dirs: tuple[Path, ...]
    derived_from: str | None = None
    merge: tuple[tuple[int, ...], ...] | None = None
    description: str = ""
    variants: tuple[PromptVariant, ...] = ()  # those with a [tasks.NAME.variants.X] table
    sample: str = "first"  # benchmark.sampling.RULES
    seed: int | None = None  # of a stratified sample

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def variant(self, name: str) -> PromptVariant:
        """The variant's settings (a variant without a table sends ``<name>.txt``)."""
        check_name(f"task {self.name!r}: prompt variant", name)
        return next((v for v in self.variants if v.name == name), PromptVariant(name=name, file=name))
    @property
    def selection(self) -> Selection:
        """Which images the task classifies (``sample_size`` None = the whole dataset)."""
        return Selection(self.sample, self.sample_size, self.seed)

    def prompt_path(self, variant: str) -> Path:
        """First ``<file>.txt`` of the variant found in the prompt folders (user's first);
        it must resolve inside its folder."""
        file = self.variant(variant).file
        for folder in self.prompt_dirs:
            path = folder / f"{file}.txt"
            if path.is_file():
                real, base = path.resolve(), folder.resolve()
                if not real.is_relative_to(base):
                    raise BenchError(f"task {self.name!r}: prompt variant {variant!r}: expected its file "
                                     f"inside {base}, found {path} -> {real}")
                return path
        raise BenchError(
            f"task {self.name!r}: prompt variant {variant!r} expects a file {file}.txt in "
            f"{' or '.join(str(d) for d in self.prompt_dirs) or '(no prompt folder)'}; none exists"
        )

    def prompt_text(self, variant: str) -> str:
        """The prompt file's text exactly as written (what is sent, byte for byte)."""
        return self.prompt_path(variant).read_text(encoding="utf-8")

    def merge_map(self) -> list[int]:
        """old class index -> merged class index."""
        assert self.merge is not None
        mapping: dict[int, int] = {}
        for new, group in enumerate(self.merge):
            for old in group:
                mapping[old] = new
        return [mapping[i] for i in range(len(mapping))]


@dataclass(frozen=True)
class BenchConfig:
    tasks: dict[str, TaskConfig]
    datasets: dict[str, dict[str, Any]]
    models: dict[str, ModelConfig]
    thresholds: dict[tuple[str, str, str | None], float]
    threshold_notes: dict[tuple[str, str, str | None], str]
    sources: tuple[Path, ...]
    dataset_dirs: dict[str, Path]

    def threshold(self, task: str, model: str, prompt: str | None) -> float | None:
        """Most specific first: task/model/prompt, then task/model."""
        for key in ((task, model, prompt), (task, model, None)):
            if key in self.thresholds:
                return self.thresholds[key]
        return None

    def base_task(self, task: TaskConfig) -> TaskConfig:
        return self.tasks[task.derived_from] if task.derived_from else task


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; anything else in ``override`` replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_toml(path: Path, prompt_dirs: dict[str, list[Path]]) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise BenchError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"{path}: not valid TOML ({exc})") from None
    # Resolve relative paths against this file's folder before merging;
    # prompt folders stack up, the later (user's) file first.
    here = path.resolve().parent
    for name, task in (data.get("tasks") or {}).items():
        if isinstance(task, dict):
            folder = here / task.pop("prompt_dir", Path("prompts") / name)
            prompt_dirs.setdefault(name, []).insert(0, folder)
    for spec in (data.get("datasets") or {}).values():
        if isinstance(spec, dict):
            spec["_base_dir"] = str(here)
    return data


def load_config(user_config: Path | str | None = None) -> BenchConfig:
    """Built-in config, then ``user_config`` (or ``$ASTROBENCH_CONFIG``) over it."""
    sources = [BUILTIN_CONFIG]
    user = user_config or os.environ.get(CONFIG_ENV)
    if user:
        sources.append(Path(user).expanduser())
    raw: dict[str, Any] = {}
    prompt_dirs: dict[str, list[Path]] = {}
    for src in sources:
        raw = deep_merge(raw, _read_toml(src, prompt_dirs))
    return parse_config(raw, sources=tuple(sources), prompt_dirs=prompt_dirs)


def _expect(cond: bool, msg: str) -> None:
    if not cond:
        raise BenchError(msg)


def parse_config(
    raw: dict[str, Any],
    *,
    sources: tuple[Path, ...] = (),
    prompt_dirs: dict[str, list[Path]] | None = None,
) -> BenchConfig:
    """Validate the merged TOML (:mod:`benchmark.schema`, then names, references, prompt
    files and local image folders) into a :class:`BenchConfig`; any mistake is a BenchError."""
    where = " + ".join(str(s) for s in sources) or "<config>"
    _check_names_and_urls(raw)
    clean = dict(raw)
    if isinstance(raw.get("datasets"), dict):
        clean["datasets"] = {n: {k: v for k, v in s.items() if k != "_base_dir"} if isinstance(s, dict) else s
                             for n, s in raw["datasets"].items()}
    bench = schema.validate(clean, where=where, plugins=PROVIDERS)

    datasets = {name: dict(clean["datasets"][name]) for name in bench.datasets}
    dataset_dirs = {name: Path(raw["datasets"][name].get("_base_dir", ".")) for name in bench.datasets}
    prompt_dirs = prompt_dirs or {}
    tasks = {name: _task(name, spec, bench, tuple(prompt_dirs.get(name, ()))) for name, spec in bench.tasks.items()}
    for task in tasks.values():
        if task.derived_from:
            _check_derived(task, tasks)

    models = {name: ModelConfig(name=name, provider=spec.provider, model=spec.model, enabled=spec.enabled,
                                prompts=tuple(spec.prompts) if spec.prompts else None,
                                settings={k: v for k, v in raw["models"][name].items()
                                          if k not in {"provider", "model", "enabled", "prompts"}})
              for name, spec in bench.models.items()}
    for name, spec in bench.models.items():
        ext = spec.extract_with if isinstance(spec, schema.TransformersModel) else None
        if ext is not None:
            _expect(ext in models, f"models.{name}: extract_with {ext!r} is not a model of the bench config; "
                                   f"known models: {sorted(models)}{did_you_mean(ext, models)}")
            _expect(ext != name, f"models.{name}: extract_with must name another model, found itself")

    thresholds: dict[tuple[str, str, str | None], float] = {}
    notes: dict[tuple[str, str, str | None], str] = {}
    for key, value in bench.thresholds.items():
        task, model, prompt = _threshold_key(key, tasks, models)
        thresholds[(task, model, prompt)] = value.min_accuracy
        notes[(task, model, prompt)] = value.note

    config = BenchConfig(tasks=tasks, datasets=datasets, models=models, thresholds=thresholds,
                         threshold_notes=notes, sources=sources, dataset_dirs=dataset_dirs)
    _check_folders(config, bench)
    return config


def _check_names_and_urls(raw: dict[str, Any]) -> None:
    """Names that build paths (check_name) and openai base URLs (never echoed), before the schema."""
    for table, kind in (("tasks", "task"), ("datasets", "dataset"), ("models", "model")):
        entries = raw.get(table)
        for name, spec in (entries.items() if isinstance(entries, dict) else ()):
            check_name(f"{table}: {kind}", name)
            if not isinstance(spec, dict):
                continue
            if isinstance(spec.get("prompts"), list):
                for variant in spec["prompts"]:
                    if isinstance(variant, str):
                        check_name(f"{table}.{name}.prompts: prompt variant", variant)
            if table == "models" and spec.get("provider", "openai") == "openai" and "base_url" in spec:
                urls = spec["base_url"]  # one URL, or a list of replicas
                _expect(urls != [], f"models.{name}: expected 'base_url' as an http:// or https:// URL or a "
                                    "non-empty list of them, found []")
                for i, url in enumerate(urls if isinstance(urls, list) else [urls]):
                    _check_base_url(name, url, spec.get("api_key_env", _OPENAI_KEY_ENV),
                                    key=f"base_url[{i}]" if isinstance(urls, list) else "base_url")


def _task(name: str, spec: schema.Task, bench: schema.BenchFile, prompt_dirs: tuple[Path, ...]) -> TaskConfig:
    derived = spec.derived_from
    classes = spec.merged_classes if spec.merge is not None else spec.classes
    assert classes is not None  # the schema requires them
    if derived is None:
        _expect(spec.dataset in bench.datasets, f"tasks.{name}: dataset {spec.dataset!r} is not defined; known "
                                                f"datasets: {sorted(bench.datasets)}"
                                                f"{did_you_mean(spec.dataset, bench.datasets)}")
        n = _dataset_classes(bench.datasets[spec.dataset])
        _expect(n is None or n == len(classes),
                f"tasks.{name}: expected {n} class names (dataset {spec.dataset!r} has {n} classes), "
                f"found {len(classes)}: {classes}")
    prompts = spec.prompts if spec.prompts is not None else ([] if derived else ["paper"])
    task = TaskConfig(
        name=name,
        classes=tuple(classes),
        dataset=spec.dataset,
        sample_size=None if spec.sample_size == "all" else spec.sample_size,
        sample=spec.sample,
        seed=(spec.seed or 0) if spec.sample == "stratified" else None,
        prompts=tuple(prompts),
        prompt_dirs=prompt_dirs,
        derived_from=derived,
        merge=tuple(tuple(g) for g in spec.merge) if spec.merge else None,
        description=spec.description,
        variants=tuple(_variant(name, v, spec) for v, spec in (spec.variants or {}).items()),
    )
    if derived is None:
        for variant in (*task.prompts, *(v.name for v in task.variants)):
            check_prompt(task, variant)
    return task


def _variant(task: str, name: str, spec: schema.PromptVariant) -> PromptVariant:
    where = f"tasks.{task}.variants.{name}"
    check_name(f"{where}: variant name", name)
    file = check_name(f"{where}.file", spec.file) if spec.file is not None else name
    _expect(not (spec.shots and spec.permute_labels),
            f"{where}: expected 'shots' or 'permute_labels', found both (the examples' texts name the "
            f"paper's class numbers, which a shift renumbers): use two variants")
    return PromptVariant(name=name, file=file, shots=spec.shots, shot_seed=spec.shot_seed,
                         example_text=spec.example_text, query_text=spec.query_text,
                         permute_labels=spec.permute_labels)


def _dataset_classes(spec: schema.Dataset) -> int | None:
    """The dataset's number of classes, when known without reading it."""
    if isinstance(spec, schema.Folder):
        return spec.n_classes or (len(spec.classes) if spec.classes else None)
    return spec.n_classes


def _check_derived(task: TaskConfig, tasks: dict[str, TaskConfig]) -> None:
    assert task.derived_from is not None
    base = tasks.get(task.derived_from)
    _expect(base is not None, f"tasks.{task.name}: derived_from {task.derived_from!r} is not a task; known "
                              f"tasks: {sorted(tasks)}{did_you_mean(task.derived_from, tasks)}")
    assert base is not None
    _expect(base.derived_from is None, f"tasks.{task.name}: cannot derive from another derived task ({base.name})")
    if task.merge is None:
        _expect(task.n_classes == base.n_classes, f"tasks.{task.name}: expected {base.n_classes} class names "
                                                  f"(as {base.name}), found {task.n_classes}")
        return
    flat = sorted(i for g in task.merge for i in g)
    _expect(flat == list(range(base.n_classes)), f"tasks.{task.name}: merge must use each class of {base.name} "
                                                 f"(0..{base.n_classes - 1}) exactly once, found {list(task.merge)}")
    _expect(task.n_classes == len(task.merge), f"tasks.{task.name}: expected {len(task.merge)} merged class "
                                               f"names, found {task.n_classes}")


def _threshold_key(key: str, tasks: dict[str, TaskConfig],
                   models: dict[str, ModelConfig]) -> tuple[str, str, str | None]:
    """``task/model[/prompt]``: known names, and a prompt variant that the case runs."""
    parts = key.split("/")
    _expect(len(parts) in (2, 3), f"thresholds: key {key!r} should be 'task/model' or 'task/model/prompt'")
    task, model = parts[0], parts[1]
    prompt = check_name(f"thresholds.{key!r}: prompt variant", parts[2]) if len(parts) == 3 else None
    _expect(task in tasks, f"thresholds.{key!r}: unknown task {task!r}; known tasks: {', '.join(sorted(tasks))}"
                           f"{did_you_mean(task, tasks)}")
    _expect(model in models, f"thresholds.{key!r}: unknown model {model!r}; known models: "
                             f"{', '.join(sorted(models))}{did_you_mean(model, models)}")
    if prompt is not None:
        base = tasks[task].derived_from or task
        own = models[model].prompts
        named = [] if own else [v.name for v in tasks[base].variants]  # a table variant runs when named
        variants = list(dict.fromkeys([*(own or tasks[base].prompts), *named]))
        _expect(prompt in variants, f"thresholds.{key!r}: expected a prompt variant that {task} x {model} runs "
                                    f"({', '.join(variants)}), found {prompt!r}{did_you_mean(prompt, variants)}")
    return task, model, prompt


def _check_folders(config: BenchConfig, bench: schema.BenchFile) -> None:
    """Each folder dataset a task uses: its class folders and image count (listed, not decoded)
    against the task's classes and sample size. A folder that is gone is an error unless a
    frozen sample of it exists (then that is the only copy; see benchmark.frozen)."""
    for name, spec in bench.datasets.items():
        users = [t for t in config.tasks.values() if t.dataset == name and t.derived_from is None]
        if not isinstance(spec, schema.Folder) or not users:
            continue
        from benchmark.datasets import folder_listing, folder_path
        from benchmark.frozen import frozen_dir

        raw, base = config.datasets[name], config.dataset_dirs[name]
        folder = folder_path(raw, base)
        if not folder.is_dir():
            frozen = frozen_dir() / f"{name}.npz"
            if frozen.is_file():
                continue
            raise BenchError(f"datasets.{name}: expected an image folder with one sub-folder per class at "
                             f"{folder}, found {'a file' if folder.exists() else 'nothing'} (and no frozen "
                             f"sample {frozen})")
        _, classes, per_class = folder_listing(name, raw, base)
        total = sum(len(images) for images in per_class)
        for task in users:
            _expect(task.n_classes == len(classes),
                    f"tasks.{task.name}: expected {len(classes)} class names, one per class folder of dataset "
                    f"{name!r} ({classes} in {folder}), found {task.n_classes}: {list(task.classes)}")
            _expect(task.sample_size is None or task.sample_size <= total,
                    f"tasks.{task.name}: expected 'sample_size' <= {total} (the images of dataset {name!r} in "
                    f"{folder}), found {task.sample_size}")


def check_prompt(task: TaskConfig, variant: str) -> None:
    from benchmark.permute import check_prompt_file

    path = task.prompt_path(variant)
    text = path.read_text(encoding="utf-8")
    _expect(bool(text.strip()), f"task {task.name!r}: prompt file {path} is empty")
    check_prompt_file(task, variant, text, path)


def _check_base_url(name: str, url: Any, key_env: Any, *, key: str = "base_url") -> None:
    """http(s) only, and nothing a recording cannot match or a log would leak."""
    where = f"models.{name}: expected '{key}'"
    _expect(isinstance(url, str), f"{where} as an http:// or https:// URL, found {url!r}")
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a malformed host or port
        raise BenchError(f"{where} as an http:// or https:// URL, found {shown!r}") from None
    _expect(parts.scheme in ("http", "https") and bool(parts.hostname) and port != 0,
            f"{where} as an http:// or https:// URL, found {shown!r}")
    _expect(not ("@" in parts.netloc or parts.query or parts.fragment),
            f"{where} without credentials, query string or fragment (recordings never match them "
            f"and logs would print them), found {shown!r}; set the key via the environment variable "
            f"named by api_key_env ({key_env!r}) instead; the openai provider has no setting for "
            "other query parameters or headers")
