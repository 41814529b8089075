"""The paper's second step for local models: another model (GPT-4o) reads
the generated text, without the image, and answers the class number.

As in the authors' notebook: one user message with two text parts, the
task's structured instruction (``prompts/<task>/extract-paper.txt``, their
text byte for byte) and the model's answer (its text after the last
``ASSISTANT:``); the extractor model's settings carry the call's parameters
(``max_tokens = 200``, ``temperature = 0``, ``n = 1``). The session asks the
extractor like any other answer source, so its answers are recorded in the
case's recording and the record modes apply.
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmark.core import Answer, Request
from benchmark.parsing import parse_answer

EXTRACT_PROMPT = "extract-paper"  # default prompt variant of the extractor's instruction


def extraction_requests(requests: Sequence[Request], answers: dict[str, Answer], instruction: str) -> list[Request]:
    """One text-only request per generated answer: [instruction, the answer's text]."""
    return [Request(r.sample_id, instruction, None, r.n_classes, text=answers[r.sample_id].raw) for r in requests]


def apply_extraction(answer: Answer, extracted: Answer, n_classes: int, *, extractor: str) -> None:
    """Set the generate label of ``answer`` from the extractor's answer."""
    answer.meta["extracted"] = extracted.raw
    if extracted.error is not None:
        answer.error = f"extractor {extractor!r}: {extracted.error}"
        return
    label = extracted.label if extracted.label is not None else parse_answer(extracted.raw, n_classes)
    if "score_label" in answer.meta:  # both mode: the label stays the score's
        answer.meta.update(generate_label=label, agree=label is not None and label == answer.label)
    else:
        answer.label = label
