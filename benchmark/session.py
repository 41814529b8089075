"""Cases and the benchmark session: plan task x model x prompt cases, run
them (sharing datasets, providers and predictions), collect results."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.config import BenchConfig, ModelConfig, TaskConfig, check_prompt
from benchmark.metrics import Scores, merge_predictions, score
from benchmark.parsing import parse_answer
from benchmark.types import Answer, BenchError, Request, Sample

RESPONSES_ENV = "ASTROBENCH_RESPONSES_DIR"


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
    task's variants (e.g. the LLaVA wording of the paper's prompts).
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
            variants = list(model.prompts or base.prompts)
            for variant in variants:
                check_prompt(base, variant)
            chosen = [v for v in variants if not prompts or v in prompts]
            for variant in chosen:
                cases.append(Case(task, model, variant, default_prompt=variant == variants[0]))
    if prompts:
        seen = {c.prompt for c in cases}
        missing = [p for p in prompts if p not in seen]
        if missing:
            raise BenchError(f"unknown prompt variant(s) {missing} for the selected tasks and "
                             f"models; variants in use: {sorted(seen) or 'none'}")
    return cases


@dataclass
class CaseResult:
    case_id: str
    task: str
    model: str
    model_id: str
    prompt: str
    classes: list[str]
    scores: Scores
    threshold: float | None
    threshold_note: str
    predictions: list[dict[str, Any]]
    wall_s: float
    usage: dict[str, int] = field(default_factory=dict)
    derived_from: str | None = None

    @property
    def passed(self) -> bool | None:
        """None when the case has no threshold (a measurement only)."""
        if self.threshold is None:
            return None
        return self.scores.accuracy >= self.threshold

    def describe(self) -> str:
        s = self.scores
        thr = "none" if self.threshold is None else f"{self.threshold:.3f}"
        return (f"{self.case_id}: task {self.task}, model {self.model}, prompt {self.prompt}: "
                f"accuracy {s.accuracy:.4f} (95% CI {s.ci_low:.4f}-{s.ci_high:.4f}), "
                f"threshold {thr}, n={s.n}, unparseable {s.unparseable}")

    def to_json(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "task": self.task,
            "model": self.model,
            "model_id": self.model_id,
            "prompt": self.prompt,
            "derived_from": self.derived_from,
            "classes": self.classes,
            "threshold": self.threshold,
            "threshold_note": self.threshold_note,
            "passed": self.passed,
            "wall_s": self.wall_s,
            "usage": self.usage,
            "metrics": self.scores.to_json(),
            "predictions": self.predictions,
        }


@dataclass
class _Predictions:
    samples: list[Sample]
    answers: dict[str, Answer]
    wall_s: float


class BenchSession:
    """Holds what cases share in one pytest session, and their results."""

    def __init__(
        self,
        config: BenchConfig,
        *,
        limit: int | None = None,
        data_cache_dir: Path | None = None,
        responses_dir: Path | None = None,
        progress: bool = True,
    ) -> None:
        if limit is not None and limit < 1:
            raise BenchError(f"expected --limit >= 1, found {limit}")
        self.config = config
        self.limit = limit
        self.data_cache_dir = data_cache_dir
        env_dir = os.environ.get(RESPONSES_ENV)
        self.responses_dir = responses_dir or (Path(env_dir) if env_dir else Path(".astrobench/responses"))
        self.progress = progress
        self.results: list[CaseResult] = []
        self._samples: dict[tuple[str, int | None], list[Sample]] = {}
        self._providers: dict[str, Any] = {}
        self._predictions: dict[tuple[str, str, str], _Predictions] = {}

    # -- data ---------------------------------------------------------------
    def samples(self, task: TaskConfig) -> list[Sample]:
        from benchmark.datasets import load_dataset

        assert task.dataset is not None
        sizes = [s for s in (task.sample_size, self.limit) if s is not None]
        count = min(sizes) if sizes else None
        key = (task.dataset, count)
        if key not in self._samples:
            spec = self.config.datasets[task.dataset]
            samples = load_dataset(task.dataset, spec, limit=count, cache_dir=self.data_cache_dir,
                                   base_dir=self.config.dataset_dirs.get(task.dataset))
            bad = [s.label for s in samples if not 0 <= s.label < task.n_classes]
            if bad:
                raise BenchError(f"task {task.name}: dataset {task.dataset} has labels {sorted(set(bad))}"
                                 f" outside 0..{task.n_classes - 1}")
            self._samples[key] = samples
        return self._samples[key]

    # -- models -------------------------------------------------------------
    def provider(self, model: ModelConfig) -> Any:
        from benchmark.providers import make_provider

        if model.name not in self._providers:
            self._providers[model.name] = make_provider(model, bench=self.config)
        return self._providers[model.name]

    def close(self) -> None:
        for p in self._providers.values():
            p.close()
        self._providers.clear()

    def predictions(self, task: TaskConfig, model: ModelConfig, prompt: str) -> _Predictions:
        """Answers of ``model`` on ``task``'s sample, computed once per session."""
        from benchmark.runner import answer_requests
        from benchmark.store import ResponseCache

        key = (task.name, model.name, prompt)
        if key in self._predictions:
            return self._predictions[key]
        samples = self.samples(task)
        text = task.prompt_text(prompt)
        requests = [Request(s.id, text, s.image, task.n_classes) for s in samples]
        cache = ResponseCache(self.responses_dir / f"{task.name}-{model.name}-{prompt}.jsonl")
        start = time.perf_counter()
        answers = answer_requests(self.provider(model), requests, cache=cache,
                                  progress=f"{task.name}/{model.name}" if self.progress else None)
        wall = time.perf_counter() - start
        failed = [a for a in answers.values() if a.error]
        if failed:
            raise BenchError(
                f"{len(failed)} of {len(requests)} requests to {model.name} failed after retries "
                f"(e.g. sample {failed[0].sample_id}: {failed[0].error}); the {len(requests) - len(failed)} "
                f"answers received are saved in {cache.path}; rerun to retry only the failed ones"
            )
        for a in answers.values():
            if a.label is None:
                a.label = parse_answer(a.raw, task.n_classes)
        self._predictions[key] = _Predictions(samples, answers, wall)
        return self._predictions[key]

    # -- cases --------------------------------------------------------------
    def run(self, case: Case) -> CaseResult:
        task = case.task
        base = self.config.base_task(task)
        preds = self.predictions(base, case.model, case.prompt)
        y_true = [s.label for s in preds.samples]
        y_pred = [preds.answers[s.id].label for s in preds.samples]
        if task.merge is not None:
            y_true, y_pred = merge_predictions(y_true, y_pred, task.merge_map())
        scores = score(y_true, y_pred, task.n_classes)
        usage: dict[str, int] = {}
        for a in preds.answers.values():
            for k, v in a.usage.items():
                usage[k] = usage.get(k, 0) + int(v)
        predictions = [
            {"sample_id": s.id, "true": t, "raw": preds.answers[s.id].raw, "parsed": p,
             **({"probs": preds.answers[s.id].probs} if preds.answers[s.id].probs else {})}
            for s, t, p in zip(preds.samples, y_true, y_pred)
        ]
        tkey = (task.name, case.model.name, case.prompt)
        result = CaseResult(
            case_id=case.id,
            task=task.name,
            model=case.model.name,
            model_id=case.model.model,
            prompt=case.prompt,
            classes=list(task.classes),
            scores=scores,
            threshold=self.config.threshold(*tkey),
            threshold_note=self.config.threshold_notes.get(tkey)
            or self.config.threshold_notes.get((task.name, case.model.name, None), ""),
            predictions=predictions,
            wall_s=preds.wall_s,
            usage=usage,
            derived_from=task.derived_from,
        )
        self.results.append(result)
        return result
