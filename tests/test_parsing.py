"""Tests for benchmark.parsing: free-text answer -> class index (or None)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.parsing import ParsedAnswer, explain_answer, parse_answer

N = 4  # classes 0..3 in the example table

ACCEPTED: list[tuple[str, int]] = [
    ("1", 1),
    (" 1 ", 1),
    ("1.", 1),
    ("Category 1", 1),
    ("category 1", 1),
    ("CATEGORY 1", 1),
    ("**Category 1**", 1),
    ("*Category 1*", 1),
    ("__Category 1__", 1),
    ("Category: 1", 1),
    ("Class 1", 1),
    ("Category 1 (LSBG)", 1),
    ("Category 1: LSBG", 1),
    ("The image belongs to category 0.", 0),
    ("Answer: 2", 2),
    ("`3`", 3),
    ("```\n3\n```", 3),
    ("Category 2!", 2),
    ("Category 2;\n", 2),
    ("1)", 1),
    ("(1)", 1),
    ("# Category 2", 2),
    ("### Category 2\n\nThe galaxy is faint and diffuse.", 2),
    ("**Answer:** Category 1", 1),
    ("Category\n1", 1),
    ("The image shows a well-centered diffuse galaxy, so it belongs to Category 1.", 1),
    ("Category 2. Final answer: 2", 2),
    ("Category 2. Category 2.", 2),
    ("The answer is 2.", 2),
    ("I think it is 3", 3),
    ("The category is 2", 2),
    ("Category (2)", 2),
    ("Category 1 of 4", 1),
    ("This 64x64 cutout is category 0", 0),
    ("This 64x64 cutout: 0", 0),
    ("64 x 64 pixels; answer 0", 0),
    ("I am 90% sure it is 2", 2),
    ("R2 and H2O are irrelevant here: 1", 1),
    ("category one", 1),
    ("Class Three.", 3),
    ("Category 2, and one could argue otherwise", 2),
    ("\\boxed{2}", 2),
    ("<answer>3</answer>", 3),
    ("\uff11", 1),  # full-width digit
    ("Category\u200b 1", 1),  # zero-width space
    ("Category 01", 1),
]

REFUSED: list[tuple[str, str]] = [
    ("This is category 1 (LSBG) rather than category 0.", "ambiguous"),
    ("category 0 or 1", "ambiguous"),
    ("0 or 1", "ambiguous"),
    ("1/2", "ambiguous"),
    ("1-2", "ambiguous"),
    ("categories 1 and 2", "ambiguous"),
    ("Categories 0, 1, and 2", "ambiguous"),
    ("Category 1 or Category 2", "ambiguous"),
    ("category one or two", "ambiguous"),
    ("Category 0: non-LSBG. Category 1: LSBG.", "ambiguous"),
    ("There are 2 galaxies, so 1", "ambiguous"),
    ("Category 5", "out of range"),
    ("Category 4", "out of range"),
    ("Category -1", "out of range"),
    ("-1", "out of range"),
    ("10", "out of range"),
    ("Category 99999999999999999999999999", "out of range"),
    ("9" * 5000, "out of range"),
    ("1.5", "not an integer"),
    ("Category 1.5", "not an integer"),
    ("1.0", "not an integer"),
    ("", "empty answer"),
    ("   \n\t", "empty answer"),
    ("** **", "empty answer"),
    ("I cannot tell.", "no class number found"),
    ("The answer is one of the categories", "no class number found"),
    ("Category LSBG", "no class number found"),
    ("2nd", "no class number found"),
    ("64x64", "no class number found"),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED)
def test_accepted(text: str, expected: int) -> None:
    assert parse_answer(text, N) == expected


@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_refused(text: str, reason: str) -> None:
    result = explain_answer(text, N)
    assert result.label is None
    assert result.reason.startswith(reason), result.reason


@pytest.mark.parametrize(("text", "reason"), [
    ("Category 1", "category 1 mentioned"),
    ("2", "bare number 2"),
    ("it is 2", "single number 2 in text"),
    ("category 0 or 1", "ambiguous: categories 0 and 1 mentioned"),
    ("Category 5", "out of range: category 5 (expected 0..3)"),
    ("10", "out of range: 10 (expected 0..3)"),
    ("1.5", "not an integer: 1.5"),
    ("no idea", "no class number found"),
    ("", "empty answer"),
])
def test_reasons(text: str, reason: str) -> None:
    assert explain_answer(text, N).reason == reason


def test_explain_matches_parse_and_type() -> None:
    result = explain_answer("Category 2", N)
    assert result == ParsedAnswer(2, "category 2 mentioned")
    assert parse_answer("Category 2", N) == result.label


def test_non_string_and_bad_n_classes() -> None:
    assert explain_answer(None, N).label is None  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        explain_answer("1", 0)


def test_huge_inputs_are_fast_and_safe() -> None:
    assert parse_answer("category 1," * 20_000, N) == 1
    assert parse_answer("Category 1 or category 2 " * 10_000, N) is None
    assert parse_answer(" , " * 50_000 + "1", N) == 1
    assert parse_answer("a" * 200_000, N) is None


# ---- property tests -------------------------------------------------------

TEMPLATES = ["{k}", "Category {k}", "category {k}", "Class {k}",
             "The image belongs to category {k}", "Answer: {k}"]
MENTIONS = ["Category {k}", "category {k}", "Class {k}", "The image belongs to category {k}",
            "Answer: {k}"]
WRAPPERS = ["{}", "**{}**", "*{}*", "`{}`", "__{}__", "# {}", "### {}"]
WS = st.text(alphabet=" \t\n\r", max_size=3)
PUNCT = st.text(alphabet=".!;:", max_size=2)


@st.composite
def n_and_k(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(2, 10))
    return n, draw(st.integers(0, n - 1))


def _render(template: str, k: int, wrapper: str, punct: str, case: str) -> str:
    body = wrapper.format(template.format(k=k) + punct)
    return {"upper": body.upper(), "lower": body.lower(), "same": body}[case]


@settings(max_examples=300, deadline=None)
@given(n_and_k(), st.sampled_from(TEMPLATES), st.sampled_from(WRAPPERS), PUNCT,
       st.sampled_from(["upper", "lower", "same"]), WS, WS)
def test_single_class_is_parsed(nk: tuple[int, int], template: str, wrapper: str, punct: str,
                                case: str, before: str, after: str) -> None:
    n, k = nk
    text = before + _render(template, k, wrapper, punct, case) + after
    assert parse_answer(text, n) == k, explain_answer(text, n)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 10).flatmap(
           lambda n: st.tuples(st.just(n), st.lists(st.integers(0, n - 1), min_size=2,
                                                    max_size=2, unique=True))),
       st.sampled_from(MENTIONS), st.sampled_from(MENTIONS),
       st.sampled_from([" ", ". ", "\n", " or ", ", not ", "; maybe "]), PUNCT,
       st.sampled_from(WRAPPERS))
def test_two_classes_are_ambiguous(nks: tuple[int, list[int]], t1: str, t2: str, joiner: str,
                                   punct: str, wrapper: str) -> None:
    n, (j, k) = nks
    text = wrapper.format(t1.format(k=j) + punct) + joiner + t2.format(k=k)
    assert parse_answer(text, n) is None, explain_answer(text, n)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 10).flatmap(
           lambda n: st.tuples(st.just(n), st.lists(st.integers(0, n - 1), min_size=2,
                                                    max_size=2, unique=True))),
       st.sampled_from(["{} or {}", "{}/{}", "{}, {}", "{} and {}", "categories {} and {}",
                        "category {} or {}", "Class {} vs {}"]))
def test_joined_numbers_are_ambiguous(nks: tuple[int, list[int]], pattern: str) -> None:
    n, (j, k) = nks
    result = explain_answer(pattern.format(j, k), n)
    assert result.label is None and result.reason.startswith("ambiguous"), result


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 10).flatmap(lambda n: st.tuples(st.just(n), st.integers(n, 10**30))),
       st.sampled_from(TEMPLATES), st.sampled_from(WRAPPERS), PUNCT)
def test_out_of_range_is_refused(nm: tuple[int, int], template: str, wrapper: str,
                                 punct: str) -> None:
    n, m = nm
    result = explain_answer(wrapper.format(template.format(k=m) + punct), n)
    assert result.label is None and result.reason.startswith("out of range"), result


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(2, 10))
def test_arbitrary_text_never_raises(text: str, n: int) -> None:
    result = explain_answer(text, n)
    assert result.label is None or 0 <= result.label < n
    assert isinstance(result.reason, str) and result.reason


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.sampled_from([t for t, _ in ACCEPTED + REFUSED])),
       st.integers(2, 10), WS, WS)
def test_surrounding_whitespace_is_irrelevant(text: str, n: int, before: str,
                                              after: str) -> None:
    assert explain_answer(before + text + after, n) == explain_answer(text, n)
