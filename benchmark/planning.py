"""Planning: which cases a run has (task x model x prompt variant) and how they are named."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmark.config import BenchConfig, ModelConfig, TaskConfig, check_prompt
from benchmark.core import BenchError
from benchmark.extraction import EXTRACT_PROMPT
from benchmark.permute import check_model


def prompt_variants(task: TaskConfig, model: ModelConfig) -> list[str]:
    """The prompt variants a model runs on a (base) task: the model's own list
    (e.g. the LLaVA wording of the paper's prompts) or the task's. The first is the default."""
    return list(model.prompts or task.prompts)


def is_default_prompt(task: TaskConfig, model: ModelConfig, prompt: str) -> bool:
    """The one rule for which variant is the default (it is left out of case ids and commands)."""
    return prompt == prompt_variants(task, model)[0]


@dataclass(frozen=True)
class Case:
    task: TaskConfig
    model: ModelConfig
    prompt: str
    default_prompt: bool = True

    @property
    def id(self) -> str:
        base = f"{self.task.name}-{self.model.name}"
        return base if self.default_prompt else f"{base}-{self.prompt}"


def _named_variants(task: TaskConfig, model: ModelConfig, prompts: list[str] | None) -> list[str]:
    """Variants with a ``[tasks.NAME.variants.X]`` table that ``--bench-prompt`` names but the
    task does not list (e.g. the built-in ``paper-permuted``): run like a disabled model that is
    named. A model with its own ``prompts`` list runs only those."""
    listed = prompt_variants(task, model)
    return [p for p in prompts or [] if p not in listed and model.prompts is None
            and any(v.name == p for v in task.variants)]


def _select(kind: str, wanted: list[str] | None, known: dict[str, Any]) -> list[str]:
    unknown = [w for w in wanted or [] if w not in known]
    if unknown:
        raise BenchError(f"unknown {kind} {', '.join(map(repr, unknown))}; known {kind}s: "
                         f"{', '.join(sorted(known))}")
    return list(wanted) if wanted else list(known)


def plan_cases(
    config: BenchConfig,
    *,
    tasks: list[str] | None = None,
    models: list[str] | None = None,
    prompts: list[str] | None = None,
) -> list[Case]:
    """Every selected task x model x prompt variant.

    Without ``models``, only models with ``enabled = true`` run; naming a
    model runs it even if disabled. A model's ``prompts`` list replaces the
    task's variants (e.g. the LLaVA wording of the paper's prompts). Naming a
    variant that has a settings table runs it even if the task does not list it.
    """
    task_names = _select("task", tasks, config.tasks)
    model_names = _select("model", models, config.models)
    if not models:
        model_names = [m for m in model_names if config.models[m].enabled]
    cases: list[Case] = []
    for m in model_names:
        model = config.models[m]
        for t in task_names:
            task = config.tasks[t]
            base = config.base_task(task)
            variants = prompt_variants(base, model)
            for variant in variants:
                check_prompt(base, variant)
            if model.settings.get("extract_with"):  # the extractor's instruction is a prompt file too
                check_prompt(base, model.settings.get("extract_prompt", EXTRACT_PROMPT))
            chosen = [v for v in variants if not prompts or v in prompts] + _named_variants(base, model, prompts)
            for variant in chosen:
                check_model(base, variant, model)
                cases.append(Case(task, model, variant, default_prompt=is_default_prompt(base, model, variant)))
    if prompts:
        seen = {c.prompt for c in cases}
        missing = [p for p in prompts if p not in seen]
        if missing:
            raise BenchError(f"unknown prompt variant(s) {missing} for the selected tasks and "
                             f"models; variants in use: {sorted(seen) or 'none'}")
    return cases
