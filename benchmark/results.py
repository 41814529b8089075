"""Results: one case's scores and per-sample predictions, and the results JSON they make.

``RESULTS_SCHEMA`` names the format of a results file (``--bench-results``);
report, compare and merge read and write it through :class:`CaseResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from benchmark.metrics import Scores

RESULTS_SCHEMA = "astrobench-results/1"


class _PredictionBase(TypedDict):
    sample_id: str
    true: int
    raw: str
    parsed: int | None


class Prediction(_PredictionBase, total=False):
    """One sample's outcome in a results file."""

    reason: str                 # why the parser chose ``parsed`` (or none); absent when the model gave the label
    refusal: str                # the model's refusal text
    probs: list[float]          # class probabilities (score mode)
    generate_label: int | None  # both mode: the label of the generated text
    score_label: int | None     # both mode: the label of the scored tokens
    shift_parsed: list[int | None]  # permute_labels: the class under each label shift (index = shift)


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
    predictions: list[Prediction]
    wall_s: float
    usage: dict[str, int] = field(default_factory=dict)
    derived_from: str | None = None
    cached: int = 0  # answers replayed from the case's recording, not asked live
    prompt_sha256: str = ""  # of the prompt text sent
    sample_sha256: str = ""  # over the sample's (id, label, image sha256), in order
    served_model: str = ""  # the model id(s) the API said it served (response.model), comma-joined
    method: str = ""  # how answers became classes, e.g. "parser", "extract (gpt-4o)", "score"
    repeats: dict[str, Any] | None = None  # ``repeats`` > 1: n, accuracies, mean, sd, majority_accuracy
    shots: dict[str, Any] | None = None  # few-shot: k, seed and the examples sent ([{id, label}], in order)
    permutation: dict[str, Any] | None = None  # permute_labels: benchmark.permute.permutation_stats
    traffic: dict[str, Any] | None = None  # live HTTP requests: 429s, effective concurrency, replicas (None: none)

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
            "cached": self.cached,
            "prompt_sha256": self.prompt_sha256,
            "sample_sha256": self.sample_sha256,
            "served_model": self.served_model,
            "method": self.method,
            "repeats": self.repeats,
            "shots": self.shots,
            "permutation": self.permutation,
            "traffic": self.traffic,
            "metrics": self.scores.to_json(),
            "predictions": self.predictions,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CaseResult:
        """Inverse of :meth:`to_json` (e.g. results sent back by xdist workers)."""
        known = set(Scores.__dataclass_fields__)
        return cls(
            case_id=data["case_id"], task=data["task"], model=data["model"], model_id=data["model_id"],
            prompt=data["prompt"], classes=list(data["classes"]),
            scores=Scores(**{k: v for k, v in data["metrics"].items() if k in known}),
            threshold=data.get("threshold"), threshold_note=data.get("threshold_note", ""),
            predictions=list(data["predictions"]), wall_s=float(data["wall_s"]),
            usage=dict(data.get("usage") or {}), derived_from=data.get("derived_from"),
            cached=int(data.get("cached") or 0),
            prompt_sha256=str(data.get("prompt_sha256") or ""),
            sample_sha256=str(data.get("sample_sha256") or ""),
            served_model=str(data.get("served_model") or ""),
            method=str(data.get("method") or ""),
            repeats=data.get("repeats"),
            shots=data.get("shots"),
            permutation=data.get("permutation"),
            traffic=data.get("traffic"),
        )
