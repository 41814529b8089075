"""The benchmark session: run planned cases (``benchmark.planning``), sharing
samples, providers and answers between them, and collect their results
(``benchmark.results``). Recording is ``benchmark.recording``'s business."""

from __future__ import annotations

import hashlib
import os
import shlex
import time
from contextlib import nullcontext
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmark.config import BenchConfig, ModelConfig, TaskConfig, safe_join
from benchmark.core import (Answer, BenchError, DatasetUnavailable, Example, LazySample, ModelUnavailable,
                            Request)
from benchmark.metrics import merge_predictions, merge_probs, score
from benchmark.parsing import explain_answer
from benchmark.permute import check_model, permutation_stats, shifted_prompts, unshift
from benchmark.planning import Case, is_default_prompt, plan_cases
from benchmark.results import CaseResult, Prediction
from benchmark.extraction import EXTRACT_PROMPT, apply_extraction, extraction_requests
from benchmark.frozen import samples_digest
from benchmark.progress import Progress
from benchmark.recording import RECORD_MODES, Scrubber

CASSETTES_ENV = "ASTROBENCH_CASSETTE_DIR"
DEFAULT_CASSETTES = Path("cassettes")  # relative to the project (the plugin passes pytest's rootdir)


@dataclass
class _Predictions:
    samples: list[LazySample]
    answers: dict[str, Answer]
    wall_s: float
    repeats: list[dict[str, int | None]] | None = None  # per repeat: sample id -> class (``repeats`` > 1)
    shifts: list[dict[str, Answer]] | None = None  # per label shift (``permute_labels``), classes mapped back
    traffic: dict[str, Any] | None = None  # what the live requests met (provider.take_traffic)
    rounds: list[dict[str, Answer]] | None = None  # every round asked (repeats or shifts): what was paid for


def majority_vote(rounds: list[dict[str, Answer]]) -> dict[str, Answer]:
    """Per sample, the class most repeats gave (ties: the one given first); the answer kept is
    the first repeat's with that class, with every repeat's vote in ``meta["votes"]``."""
    out: dict[str, Answer] = {}
    for sid in rounds[0]:
        votes = [rd[sid].label for rd in rounds]
        counted = Counter(v for v in votes if v is not None)
        winner = max(counted, key=lambda v: (counted[v], -votes.index(v))) if counted else None
        chosen = next((rd[sid] for rd in rounds if rd[sid].label == winner), rounds[0][sid])
        out[sid] = replace(chosen, meta={**chosen.meta, "votes": votes})  # no winner: rounds[0]'s, no class
    return out


class BenchSession:
    """Holds what cases share in one pytest session, and their results.

    Answers are recorded per base case in ``cassette_dir`` (see
    :mod:`benchmark.recording` for the files and the record modes, which
    follow pytest-recording's ``--record-mode``; ``none``, the default,
    replays only). ``record_mode=None`` means no recording: every answer is live.
    """

    def __init__(
        self,
        config: BenchConfig,
        *,
        limit: int | None = None,
        cassette_dir: Path | None = None,
        record_mode: str | None = "none",
        frozen_dir: Path | None = None,
        progress: bool | Progress = True,
        command_hint: str = "pytest cases",
    ) -> None:
        from benchmark.frozen import frozen_dir as default_frozen_dir

        if limit is not None and limit < 1:
            raise BenchError(f"expected --bench-limit >= 1, found {limit}")
        if record_mode is not None and record_mode not in RECORD_MODES:
            raise BenchError(f"expected --record-mode in {RECORD_MODES}, found {record_mode!r}")
        self.config = config
        self.limit = limit
        env_dir = os.environ.get(CASSETTES_ENV)
        self.cassette_dir = cassette_dir or (Path(env_dir) if env_dir else DEFAULT_CASSETTES)
        self.record_mode = record_mode
        self.frozen_dir = frozen_dir or default_frozen_dir()
        self.progress: Progress | None = (Progress() if progress is True else progress or None)
        self.command_hint = command_hint
        self.announce: Callable[[str], None] | None = None  # the recording layer's notices (None: stderr)
        self.vcr_config: dict[str, Any] = {}
        self.vcr_configure: Any = None  # pytest-recording's pytest_recording_configure(vcr), if any
        self.scrub = Scrubber(os.environ.get(str(m.settings.get("api_key_env") or "OPENAI_API_KEY"))
                              for m in config.models.values() if m.provider == "openai")
        self.results: list[CaseResult] = []
        self._samples: dict[tuple[Any, ...], list[LazySample]] = {}
        self._providers: dict[str, Any] = {}
        self._predictions: dict[tuple[str, str, str], _Predictions] = {}
        self._examples: dict[tuple[str, str], tuple[Example, ...]] = {}
        self._pools: dict[str, list[LazySample]] = {}  # few-shot: a dataset's items, their digests computed once

    # -- data ---------------------------------------------------------------
    def samples(self, task: TaskConfig, *, whole: bool = False) -> list[LazySample]:
        """The task's sample (``sample_size`` by its ``sample`` rule, cut to ``--bench-limit``
        unless ``whole``; :func:`benchmark.sampling.task_sample`), computed once per session.

        A frozen sample in ``fixtures/samples/<dataset>.npz`` is used when it holds this
        sample; otherwise the dataset is read (and downloaded). Images stay on disk: a
        sample's image is read when a request is sent, and only its digest is kept.
        """
        from benchmark.sampling import task_sample

        assert task.dataset is not None
        limit = None if whole else self.limit
        key = (task.dataset, task.selection, limit)
        if key in self._samples:
            return self._samples[key]
        spec = self.config.datasets[task.dataset]
        try:
            samples = task_sample(task, spec, limit=limit, frozen=self.frozen_dir / f"{task.dataset}.npz",
                                  base_dir=self.config.dataset_dirs.get(task.dataset))
        except DatasetUnavailable as exc:
            raise DatasetUnavailable(self._with_config(str(exc))) from None
        bad = [s.label for s in samples if not 0 <= s.label < task.n_classes]
        if bad:
            raise BenchError(f"task {task.name}: dataset {task.dataset} has labels {sorted(set(bad))}"
                             f" outside 0..{task.n_classes - 1}")
        self._samples[key] = samples
        return samples

    def examples(self, task: TaskConfig, prompt: str) -> tuple[Example, ...]:
        """The few-shot examples of a prompt variant (none for zero-shot), drawn once per session
        from the dataset beyond the task's whole sample, so ``--bench-limit`` changes neither the
        examples nor the recording keys (:mod:`benchmark.fewshot`)."""
        from benchmark.fewshot import choose_examples, load_items

        variant = task.variant(prompt)
        key = (task.name, prompt)
        if not variant.shots or key in self._examples:
            return self._examples.get(key, ())
        assert task.dataset is not None and task.sample_size is not None  # the schema requires them
        items = self._pools.get(task.dataset)
        if items is None:  # opened once per session, whichever few-shot variants draw from it
            try:
                items = load_items(task.dataset, self.config.datasets[task.dataset], variant=prompt,
                                   base_dir=self.config.dataset_dirs.get(task.dataset))
            except DatasetUnavailable as exc:
                raise DatasetUnavailable(self._with_config(str(exc))) from None
            self._pools[task.dataset] = items
        sample = self.samples(task, whole=True)
        examples = choose_examples(items, sample, k=variant.shots, seed=variant.shot_seed,
                                   classes=task.classes, example_text=variant.example_text,
                                   where=f"task {task.name}: prompt variant {prompt!r}")
        ids, digests = {s.id for s in sample}, {s.sha256 for s in sample}
        leak = [e.id for e in examples if e.id in ids or e.image_sha256 in digests]
        if leak:  # impossible by construction: a last guard before anything is sent
            raise BenchError(f"task {task.name}: prompt variant {prompt!r}: expected examples from outside the "
                             f"sample, found {leak} in it")
        self._examples[key] = examples
        return examples

    def _with_config(self, message: str) -> str:
        """A fetch hint that names the user's config (the dataset may be defined only there)."""
        users = self.config.sources[1:]
        if len(users) != 1:
            return message
        return message.replace("`python -m benchmark fetch ",
                               f"`python -m benchmark --bench-config {shlex.quote(str(users[0]))} fetch ")

    # -- models -------------------------------------------------------------
    def provider(self, model: ModelConfig) -> Any:
        """Built once per model; API clients without a key can still replay."""
        from benchmark.providers import make_provider

        if model.name not in self._providers:
            self._providers[model.name] = make_provider(model, bench=self.config, require_key=False)
        return self._providers[model.name]

    def close(self) -> None:
        for p in self._providers.values():
            p.close()
        self._providers.clear()

    def _record_command(self, task: TaskConfig, model: ModelConfig, prompt: str) -> str:
        """The command that records this case (without --record-mode)."""
        parts = [self.command_hint, f"--bench-task {task.name}", f"--bench-model {model.name}"]
        if not is_default_prompt(task, model, prompt):
            parts.append(f"--bench-prompt {prompt}")
        if self.limit is not None:
            parts.append(f"--bench-limit {self.limit}")
        for src in self.config.sources[1:]:
            parts.append(f"--bench-config {src}")
        return " ".join(parts)

    def recording_path(self, task: TaskConfig, model: ModelConfig, prompt: str) -> Path:
        """``<cassette dir>/<task>+<model>+<prompt>.jsonl``: names cannot hold '+' or '/'
        (``config.check_name``), so two cases never share a file or escape the folder."""
        return safe_join(self.cassette_dir, f"{task.name}+{model.name}+{prompt}.jsonl")

    def _whole_sample(self, task: TaskConfig) -> bool:
        return self.limit is None or (task.sample_size is not None and self.limit >= task.sample_size)

    def predictions(self, task: TaskConfig, model: ModelConfig, prompt: str) -> _Predictions:
        """Answers of ``model`` on ``task``'s sample, computed once per session."""
        from benchmark.recording import Recording, answer_requests

        key = (task.name, model.name, prompt)
        if key in self._predictions:
            return self._predictions[key]
        samples = self.samples(task)
        text = task.prompt_text(prompt)
        examples = self.examples(task, prompt)
        query = task.variant(prompt).query_text if examples else None
        requests = [Request(s.id, text, s.read, task.n_classes, s.sha256, text=query, examples=examples)
                    for s in samples]
        provider = self.provider(model)
        label = f"{task.name}/{model.name}" + ("" if is_default_prompt(task, model, prompt) else f"/{prompt}")
        command = self._record_command(task, model, prompt)
        recording = (nullcontext(None) if self.record_mode is None else
                     Recording(self.recording_path(task, model, prompt), mode=self.record_mode,
                               scrub=self.scrub, resolve_hint=command,
                               **({"announce": self.announce} if self.announce else {})))
        take_traffic = getattr(provider, "take_traffic", lambda: None)
        take_traffic()  # counts start with this case
        start = time.perf_counter()
        n_repeats = int(model.settings.get("repeats", 1))
        shifted = shifted_prompts(task, prompt)  # permute_labels: one prompt per label shift
        if shifted is None:
            plan = [(requests if r == 0 else [replace(q, repeat=r) for q in requests],
                     label if n_repeats == 1 else f"{label} repeat {r + 1}/{n_repeats}") for r in range(n_repeats)]
        else:
            check_model(task, prompt, model)
            plan = [([replace(q, prompt=text_s, shift=s) for q in requests], f"{label} label shift {s}")
                    for s, text_s in enumerate(shifted)]
        rounds: list[dict[str, Answer]] = []
        with recording as rec:
            def ask(source: Any, source_model: ModelConfig, asks: list[Request], label: str):
                return answer_requests(source, asks, recording=rec, progress=self.progress, label=label,
                                       vcr_config=self.vcr_config,
                                       vcr_configure=self.vcr_configure,
                                       need_live=lambda n: self._need_live(source, source_model))

            for asks, shown in plan:
                rounds.append(self._answers_of(ask, task, model, provider, asks, shown))
            if rec is not None:
                rec.finish(complete=self._whole_sample(task))
        wall = time.perf_counter() - start
        traffic = take_traffic()
        for shift, answers in enumerate(rounds):
            for a in answers.values():
                self._read_class(a, task.n_classes)
                if shifted is not None:
                    unshift(a, shift, task.n_classes)
        answers = rounds[0] if n_repeats == 1 or shifted is not None else majority_vote(rounds)
        repeats = None if n_repeats == 1 else [{s.id: rd[s.id].label for s in samples} for rd in rounds]
        self._predictions[key] = _Predictions(samples, answers, wall, repeats,
                                              shifts=rounds if shifted is not None else None, traffic=traffic,
                                              rounds=rounds)
        return self._predictions[key]

    def _answers_of(self, ask: Any, task: TaskConfig, model: ModelConfig, provider: Any,
                    requests: list[Request], label: str) -> dict[str, Answer]:
        """One round of the model's answers (and their extraction, the paper's second step)."""
        answers = ask(provider, model, requests, label)
        extract_with = model.settings.get("extract_with")
        if extract_with:
            ext_model = self.config.models[extract_with]
            instruction = task.prompt_text(model.settings.get("extract_prompt", EXTRACT_PROMPT))
            asks = extraction_requests([r for r in requests if answers[r.sample_id].error is None], answers,
                                       instruction)
            extracted = ask(self.provider(ext_model), ext_model, asks, f"{label} extract ({extract_with})")
            for r in asks:
                apply_extraction(answers[r.sample_id], extracted[r.sample_id], task.n_classes,
                                 extractor=extract_with)
        failed = [a for a in answers.values() if a.error]
        if failed:
            again = (f"rerun the same command (--record-mode {self.record_mode}) to resume"
                     if self.record_mode in ("all", "rewrite") else
                     "rerun with --record-mode new_episodes to retry only the failed ones")
            raise BenchError(
                f"{len(failed)} of {len(requests)} requests to {model.name} failed after retries "
                f"(e.g. sample {failed[0].sample_id}: {self.scrub(failed[0].error)}); the "
                f"{len(requests) - len(failed)} answers received are saved; {again}")
        return answers

    @staticmethod
    def _read_class(a: Answer, n_classes: int) -> None:
        """The answer's class: the provider's if it gave one in range, else the parser's."""
        if "score_label" in a.meta and "generate_label" not in a.meta:  # both mode, no extractor
            g = explain_answer(a.raw, n_classes).label
            a.meta.update(generate_label=g, agree=g is not None and g == a.label)
        if a.label is not None and not 0 <= a.label < n_classes:  # e.g. a constrained answer
            a.meta["reason"] = f"out of range: {a.label} (expected 0..{n_classes - 1})"
            a.label = None
        elif a.label is None and "extracted" in a.meta:
            a.meta["reason"] = "the extractor's reply names no class"  # its step decides, as in the paper
        elif a.label is None and a.refusal is None:
            parsed = explain_answer(a.raw, n_classes)
            a.label, a.meta["reason"] = parsed.label, parsed.reason


    def _need_live(self, provider: Any, model: ModelConfig) -> None:
        """Before the first live call. With ``once`` (``make bench``) a model that cannot be
        asked (no key, local weights offline) skips its case with the reason; a mode that asked to record fails."""
        if not provider.can_call_live():
            reason = getattr(provider, "why_not_live", lambda: "")() or f"model {model.name!r} cannot be asked live"
            raise (ModelUnavailable if self.record_mode == "once" else BenchError)(reason)

    # -- cases --------------------------------------------------------------
    def run(self, case: Case) -> CaseResult:
        """Run one case; a BenchError's message never carries a configured key."""
        try:
            return self._run(case)
        except BenchError as exc:
            scrubbed = self.scrub(str(exc))
            if scrubbed == str(exc):
                raise
            raise type(exc)(scrubbed) from None

    def _run(self, case: Case) -> CaseResult:
        task = case.task
        base = self.config.base_task(task)
        preds = self.predictions(base, case.model, case.prompt)
        y_true = [s.label for s in preds.samples]
        y_pred = [preds.answers[s.id].label for s in preds.samples]
        if task.merge is not None:
            y_true, y_pred = merge_predictions(y_true, y_pred, task.merge_map())
        refused = [preds.answers[s.id].refusal is not None for s in preds.samples]
        scores = score(y_true, y_pred, task.n_classes, refused=refused)
        usage: dict[str, int] = {}
        for answers in (preds.rounds or [preds.answers]) if task.derived_from is None else ():
            for a in answers.values():
                for k, v in a.usage.items():  # a derived task made no calls of its own
                    usage[k] = usage.get(k, 0) + int(v)
                    if a.meta.get("via") == "batch":  # also counted apart: costed at the batch price
                        usage[f"batch_{k}"] = usage.get(f"batch_{k}", 0) + int(v)
        merge = task.merge_map() if task.merge is not None else None
        predictions = [self._prediction(s, t, p, preds.answers[s.id], merge)
                       for s, t, p in zip(preds.samples, y_true, y_pred)]
        permutation = None
        if preds.shifts is not None:  # the case's predictions are shift 0's; each sample's shifts beside them
            by_shift = [[rd[s.id].label for s in preds.samples] for rd in preds.shifts]
            permutation = permutation_stats([s.label for s in preds.samples], by_shift, base.n_classes, merge)
            for i, p in enumerate(predictions):
                p["shift_parsed"] = [None if rd[i] is None else rd[i] if merge is None else merge[rd[i]]
                                     for rd in by_shift]
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
            wall_s=preds.wall_s if task.derived_from is None else 0.0,
            usage=usage,
            derived_from=task.derived_from,
            cached=sum(1 for a in preds.answers.values() if a.meta.get("cached")),
            prompt_sha256=hashlib.sha256(base.prompt_text(case.prompt).encode()).hexdigest(),
            sample_sha256=samples_digest([s.id for s in preds.samples], [s.label for s in preds.samples],
                                         [s.sha256 for s in preds.samples]),
            served_model=", ".join(sorted({str(a.meta["served_model"]) for a in preds.answers.values()
                                           if a.meta.get("served_model")})),
            method=self._method(case.model),
            repeats=self._repeat_stats(preds, task, y_true) if preds.repeats else None,
            shots=self._shots(base, case.prompt),
            permutation=permutation,
            traffic=preds.traffic if task.derived_from is None else None,
        )
        self.results.append(result)
        return result

    @staticmethod
    def _repeat_stats(preds: _Predictions, task: TaskConfig, y_true: list[int]) -> dict[str, Any]:
        """Accuracy of each repeat (classes merged as the task says), their mean and sample sd,
        and the accuracy of the majority vote (the case's own predictions)."""
        mapping = task.merge_map() if task.merge is not None else None
        accuracies = []
        majority = {s.id: preds.answers[s.id].label for s in preds.samples}
        for labels in [*(preds.repeats or []), majority]:
            pred = [labels[s.id] for s in preds.samples]
            if mapping is not None:
                pred = [None if p is None else mapping[p] for p in pred]
            accuracies.append(sum(p == t for p, t in zip(pred, y_true)) / len(y_true) if y_true else 0.0)
        *accuracies, majority_accuracy = accuracies
        mean = sum(accuracies) / len(accuracies)
        sd = (sum((a - mean) ** 2 for a in accuracies) / (len(accuracies) - 1)) ** 0.5
        return {"n": len(accuracies), "accuracies": accuracies, "mean": mean, "sd": sd,
                "majority_accuracy": majority_accuracy}

    def _shots(self, task: TaskConfig, prompt: str) -> dict[str, Any] | None:
        """A few-shot case's k, seed and examples (id and class) for the results; None for zero-shot."""
        variant = task.variant(prompt)
        if not variant.shots:
            return None
        return {"k": variant.shots, "seed": variant.shot_seed,
                "examples": [{"id": e.id, "label": e.label} for e in self.examples(task, prompt)]}

    @staticmethod
    def _method(model: ModelConfig) -> str:
        """How the model's answers became classes (shown beside each row)."""
        mode = model.settings.get("mode", "generate")
        if mode == "score":
            return "score"
        how = f"extract ({model.settings['extract_with']})" if model.settings.get("extract_with") else "parser"
        return f"score + generate/{how}" if mode == "both" else how

    def _prediction(self, sample: LazySample, true: int, parsed: int | None, answer: Answer,
                    merge: list[int] | None) -> Prediction:
        """One sample's record in the results (keys in scrubbed text, merged classes applied)."""
        out: Prediction = {"sample_id": sample.id, "true": true, "raw": self.scrub(answer.raw), "parsed": parsed}
        if "reason" in answer.meta:
            out["reason"] = answer.meta["reason"]
        if answer.refusal:
            out["refusal"] = self.scrub(answer.refusal)
        if answer.probs:
            out["probs"] = answer.probs if merge is None else merge_probs(answer.probs, merge)
        if merge is None:
            for k in ("generate_label", "score_label"):
                if k in answer.meta:
                    out[k] = answer.meta[k]  # type: ignore[literal-required]
        return out


__all__ = ["BenchSession", "Case", "CaseResult", "plan_cases"]  # planning and results are re-exported here
