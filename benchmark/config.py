"""Benchmark configuration: tasks, datasets, models, prompts, thresholds.

Plain TOML under ``cases/`` (``cases/bench.toml``); a user's own file given by
``--bench-config`` or ``$ASTROBENCH_CONFIG`` is merged over it, table by
table, so private endpoints and tasks stay out of the repo. Relative paths
(prompt folders, image folders) resolve against the file that names them.
Everything is validated here, before any model call.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmark.core import BenchError

BUILTIN_CONFIG = Path(__file__).resolve().parent.parent / "cases" / "bench.toml"
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


_TASK_KEYS = {"description", "classes", "dataset", "sample_size", "prompts", "prompt_dir",
              "derived_from", "merge", "merged_classes"}


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

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def prompt_path(self, variant: str) -> Path:
        """First ``<variant>.txt`` found in the prompt folders (user's first);
        it must resolve inside its folder."""
        check_name(f"task {self.name!r}: prompt variant", variant)
        for folder in self.prompt_dirs:
            path = folder / f"{variant}.txt"
            if path.is_file():
                real, base = path.resolve(), folder.resolve()
                if not real.is_relative_to(base):
                    raise BenchError(f"task {self.name!r}: prompt variant {variant!r}: expected its file "
                                     f"inside {base}, found {path} -> {real}")
                return path
        raise BenchError(
            f"task {self.name!r}: prompt variant {variant!r} expects a file {variant}.txt in "
            f"{' or '.join(str(d) for d in self.prompt_dirs) or '(no prompt folder)'}; none exists"
        )

    def prompt_text(self, variant: str) -> str:
        return self.prompt_path(variant).read_text(encoding="utf-8").strip() + "\n"

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
    where = " + ".join(str(s) for s in sources) or "<config>"
    unknown = set(raw) - {"tasks", "datasets", "models", "thresholds"}
    _expect(not unknown, f"{where}: unknown top-level tables {sorted(unknown)}; expected "
                         "tasks, datasets, models, thresholds")

    datasets: dict[str, dict[str, Any]] = {}
    dataset_dirs: dict[str, Path] = {}
    for name, spec in (raw.get("datasets") or {}).items():
        check_name("datasets: dataset", name)
        _expect(isinstance(spec, dict), f"datasets.{name}: expected a table, found {spec!r}")
        spec = dict(spec)
        dataset_dirs[name] = Path(spec.pop("_base_dir", "."))
        datasets[name] = spec

    prompt_dirs = prompt_dirs or {}
    tasks = {
        name: _parse_task(name, spec, datasets, tuple(prompt_dirs.get(name, ())))
        for name, spec in (raw.get("tasks") or {}).items()
    }
    for task in tasks.values():
        if task.derived_from:
            base = tasks.get(task.derived_from)
            _expect(base is not None, f"tasks.{task.name}: derived_from {task.derived_from!r} "
                                      f"is not a task; known tasks: {sorted(tasks)}")
            assert base is not None
            _expect(base.derived_from is None, f"tasks.{task.name}: cannot derive from another "
                                               f"derived task ({base.name})")
            if task.merge is not None:
                flat = sorted(i for g in task.merge for i in g)
                _expect(flat == list(range(base.n_classes)),
                        f"tasks.{task.name}: merge must use each class of {base.name} "
                        f"(0..{base.n_classes - 1}) exactly once, found {list(task.merge)}")
                _expect(len(task.classes) == len(task.merge),
                        f"tasks.{task.name}: expected {len(task.merge)} merged class names, "
                        f"found {len(task.classes)}")

    models = {name: _parse_model(name, spec) for name, spec in (raw.get("models") or {}).items()}

    thresholds: dict[tuple[str, str, str | None], float] = {}
    notes: dict[tuple[str, str, str | None], str] = {}
    for key, value in (raw.get("thresholds") or {}).items():
        parts = key.split("/")
        _expect(len(parts) in (2, 3), f"thresholds: key {key!r} should be 'task/model' or "
                                      "'task/model/prompt'")
        task, model = parts[0], parts[1]
        prompt = check_name(f"thresholds.{key!r}: prompt variant", parts[2]) if len(parts) == 3 else None
        _expect(task in tasks, f"thresholds.{key!r}: unknown task {task!r}; known tasks: {', '.join(sorted(tasks))}")
        _expect(model in models, f"thresholds.{key!r}: unknown model {model!r}; known models: "
                                 f"{', '.join(sorted(models))}")
        note = ""
        if isinstance(value, dict):
            note = str(value.get("note", ""))
            value = value.get("min_accuracy")
        _expect(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1,
                f"thresholds.{key!r}: expected an accuracy in [0, 1], found {value!r}")
        thresholds[(task, model, prompt)] = float(value)
        notes[(task, model, prompt)] = note

    return BenchConfig(tasks=tasks, datasets=datasets, models=models, thresholds=thresholds,
                       threshold_notes=notes, sources=sources, dataset_dirs=dataset_dirs)


def _parse_task(
    name: str, spec: Any, datasets: dict[str, dict[str, Any]], prompt_dirs: tuple[Path, ...]
) -> TaskConfig:
    check_name("tasks: task", name)
    _expect(isinstance(spec, dict), f"tasks.{name}: expected a table, found {spec!r}")
    unknown = set(spec) - _TASK_KEYS
    _expect(not unknown, f"tasks.{name}: unknown keys {sorted(unknown)}; expected some of "
                         f"{sorted(_TASK_KEYS)}")
    classes = spec.get("merged_classes") if "merge" in spec else spec.get("classes")
    _expect(isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes),
            f"tasks.{name}: expected 'classes' as a list of at least 2 names, found {classes!r}")
    derived = spec.get("derived_from")
    merge = spec.get("merge")
    if merge is not None:
        _expect(isinstance(merge, list) and all(isinstance(g, list) and g for g in merge),
                f"tasks.{name}: expected 'merge' as a list of class-index lists, found {merge!r}")
        _expect(derived is not None, f"tasks.{name}: 'merge' needs 'derived_from'")
    dataset = spec.get("dataset")
    if derived is None:
        _expect(dataset in datasets, f"tasks.{name}: dataset {dataset!r} is not defined; "
                                     f"known datasets: {sorted(datasets)}")
    size = spec.get("sample_size")
    _expect(size is None or (isinstance(size, int) and size > 0),
            f"tasks.{name}: expected 'sample_size' as a positive integer, found {size!r}")
    prompts = spec.get("prompts", ["paper"] if derived is None else [])
    _expect(isinstance(prompts, list) and all(isinstance(p, str) for p in prompts),
            f"tasks.{name}: expected 'prompts' as a list of variant names, found {prompts!r}")
    for variant in prompts:
        check_name(f"tasks.{name}.prompts: prompt variant", variant)
    task = TaskConfig(
        name=name,
        classes=tuple(classes),
        dataset=dataset,
        sample_size=size,
        prompts=tuple(prompts),
        prompt_dirs=prompt_dirs,
        derived_from=derived,
        merge=tuple(tuple(int(i) for i in g) for g in merge) if merge else None,
        description=str(spec.get("description", "")),
    )
    if derived is None:
        _expect(bool(task.prompts), f"tasks.{name}: expected at least one prompt variant")
        for variant in task.prompts:
            check_prompt(task, variant)
    return task


def check_prompt(task: TaskConfig, variant: str) -> None:
    path = task.prompt_path(variant)
    _expect(bool(path.read_text(encoding="utf-8").strip()), f"task {task.name!r}: prompt file {path} is empty")


def _parse_model(name: str, spec: Any) -> ModelConfig:
    check_name("models: model", name)
    _expect(isinstance(spec, dict), f"models.{name}: expected a table, found {spec!r}")
    provider = spec.get("provider", "openai")
    model_id = spec.get("model")
    _expect(isinstance(model_id, str) and bool(model_id),
            f"models.{name}: expected 'model' (the model id or path), found {model_id!r}")
    prompts = spec.get("prompts")
    _expect(prompts is None or (isinstance(prompts, list) and all(isinstance(p, str) for p in prompts)),
            f"models.{name}: expected 'prompts' as a list of variant names, found {prompts!r}")
    for variant in prompts or ():
        check_name(f"models.{name}.prompts: prompt variant", variant)
    if provider == "openai" and "base_url" in spec:
        _check_base_url(name, spec["base_url"], spec.get("api_key_env", _OPENAI_KEY_ENV))
    enabled = spec.get("enabled", True)
    _expect(isinstance(enabled, bool), f"models.{name}: expected 'enabled' true/false, found {enabled!r}")
    settings = {k: v for k, v in spec.items() if k not in {"provider", "model", "enabled", "prompts"}}
    return ModelConfig(name=name, provider=provider, model=model_id, enabled=enabled,
                       prompts=tuple(prompts) if prompts else None, settings=settings)


def _check_base_url(name: str, url: Any, key_env: Any) -> None:
    """http(s) only, and nothing a recording cannot match or a log would leak."""
    where = f"models.{name}: expected 'base_url'"
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
