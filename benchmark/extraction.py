"""The paper's second step for local models: another model (GPT-4o) reads
the generated text, without the image, and answers the class number.

The session asks the extractor like any other answer source, so its
answers are recorded in the case's recording and the record modes apply.
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmark.core import Answer, Request
from benchmark.parsing import parse_answer

EXTRACT_INSTRUCTION = (
    "Below is a model's answer to a question that asked it to classify an image into one of "
    "{n} categories, numbered 0 to {last}. Which category number did the model choose? "
    "Output only the number.\n\nAnswer:\n{text}"
)


def extraction_requests(requests: Sequence[Request], answers: dict[str, Answer]) -> list[Request]:
    """One text-only request per generated answer."""
    return [Request(r.sample_id, EXTRACT_INSTRUCTION.format(n=r.n_classes, last=r.n_classes - 1,
                                                            text=answers[r.sample_id].raw), None, r.n_classes)
            for r in requests]


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
