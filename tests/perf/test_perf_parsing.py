"""Throughput of the answer parser (pytest-benchmark, group ``parser``).

``benchmark.parsing.parse_answer`` over 3,000 varied answers with known
outcomes: short answers ("1", "**Category 2**", "The image belongs to category
0."), long free-text answers like LLaVA's 200-token ones (600-1,000
characters, the class at the end), ambiguous ones, refusals, out-of-range
numbers. Every parsed label is checked against the expected one, with or
without timings.

Target: >= 15,000 answers/s (mean), asserted from the stats. Measured:
30,000-53,000 answers/s on a shared 2-core CPU, the lower figure under heavy
load (then about 12 us per short answer, 80 us per long one), so the target
leaves a 2x margin for a slower or busier machine; it catches a gross regression (a quadratic scan, a
backtracking regex), and ``make perf COMPARE=...`` catches smaller ones.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from benchmark.parsing import parse_answer

N_CLASSES = 4
N_ANSWERS = 3_000
MIN_ANSWERS_PER_S = 15_000

SHORT = ["{k}", " {k} ", "{k}.", "Category {k}", "category {k}", "CATEGORY {k}", "**Category {k}**",
         "Category: {k}", "Class {k}", "Answer: {k}", "`{k}`", "```\n{k}\n```", "(**{k}**)",
         "The image belongs to category {k}.", "The answer is {k}.", "### Category {k}\n\nIt is faint.",
         "**Answer:** Category {k}", "Category {k}. Final answer: {k}", "category {word}",
         "This 64x64 cutout is category {k}", "I am 90% sure it is {k}", "\\boxed{{{k}}}",
         "<answer>{k}</answer>"]
AMBIGUOUS = ["category {j} or {k}", "Category {j}. Category {k}.", "{j}/{k}", "categories {j} and {k}",
             "This is category {j} rather than category {k}."]
REFUSED = ["I cannot tell from this image.", "Category {out}", "{out}", "Category {k}.5", "",
           "The answer is one of the categories", "Category LSBG"]
SENTENCES = [
    "The image shows a faint, diffuse object near the centre of the cutout.",
    "There is a bright point source to the upper left, likely a foreground star.",
    "The light profile falls off smoothly from the centre without any visible arms.",
    "Some noise and a few compact sources are scattered across the background.",
    "The object appears elongated, with a bright central bulge and fainter outskirts.",
    "Spiral structure is hard to make out at this resolution, but there are hints of it.",
    "The colours are mostly blue with a redder core, typical of such systems.",
    "A diffraction spike crosses the frame, though it does not overlap the main object.",
    "Overall, the morphology is consistent with the description given in the prompt.",
]
WORDS = ["zero", "one", "two", "three"]


def corpus(seed: int = 0) -> list[tuple[str, int | None]]:
    """``N_ANSWERS`` (answer, expected label) pairs; deterministic."""
    rng = random.Random(seed)
    out: list[tuple[str, int | None]] = []
    while len(out) < N_ANSWERS:
        k = rng.randrange(N_CLASSES)
        j = (k + rng.randrange(1, N_CLASSES)) % N_CLASSES
        kind = rng.random()
        if kind < 0.45:
            out.append((rng.choice(SHORT).format(k=k, word=WORDS[k]), k))
        elif kind < 0.75:  # a long free-text answer (generate mode), class named at the end
            body = " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(7, 12)))
            out.append((f"{body} Therefore, the image belongs to **Category {k}**.", k))
        elif kind < 0.88:
            out.append((rng.choice(AMBIGUOUS).format(j=j, k=k), None))
        else:
            out.append((rng.choice(REFUSED).format(k=k, out=N_CLASSES + rng.randrange(5)), None))
    return out


@pytest.fixture(scope="module")
def answers() -> list[tuple[str, int | None]]:
    return corpus()


def parse_all(texts: list[str]) -> list[int | None]:
    return [parse_answer(t, N_CLASSES) for t in texts]


@pytest.mark.benchmark(group="parser")
def test_parser_throughput(benchmark: Any, perf: Any, answers: list[tuple[str, int | None]]) -> None:
    texts = [t for t, _ in answers]
    labels = benchmark(parse_all, texts)
    assert labels == [k for _, k in answers]
    perf.keep("parse", benchmark, items=len(texts))
    if benchmark.enabled:
        per_s = 1 / perf.per_item("parse")
        ok = per_s >= MIN_ANSWERS_PER_S
        perf.note(f"{'parser throughput (answers/s)':<48} {per_s:10,.0f}    "
                  f"target >= {MIN_ANSWERS_PER_S:,}   {'met' if ok else 'MISSED'}")
        assert ok, f"expected >= {MIN_ANSWERS_PER_S:,} answers/s, found {per_s:,.0f}"
