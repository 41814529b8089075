"""Turn a model's free-text answer into a class index, strictly and explainably.

Classes are numbered ``0..n_classes-1`` (prompts say "Category 0", "Category 1",
...). :func:`explain_answer` returns the label *and* the reason; an answer that
cannot be read is ``label=None`` (its own outcome, never a default class).

Rules, in order:

1. **Clean-up.** NFKC-normalise (full-width digits become ASCII), drop
   zero-width/format characters, turn other control characters and markdown
   marks (``* _ ` # ~ >`` and ``|``) into spaces, collapse whitespace.
   ``NxM`` dimensions ("64x64", "64 × 64") and percentages ("90%") are never
   class numbers.
2. **Explicit mentions win.** A number right after ``category``/``categories``,
   ``class``/``classes``, ``label`` or ``answer`` (optionally with ``:``, ``=``,
   ``#``, ``is``, ``no.``, ``number``, or an opening bracket in between) is a
   mention, as is every number chained to it by ``,``, ``/``, ``&``, ``+``,
   dashes, ``or``, ``and``, ``vs``, ``versus``, ``to``, ``nor`` (so
   "categories 1 and 2" and "category 0 or 1" mention two classes). After
   category/class, ``zero``..``ten`` also count. If there is any mention, all
   other numbers in the text are ignored, and the mentions must name exactly
   one distinct integer, in range; repeats are fine ("Category 2. Final
   answer: 2"). Two distinct classes are ambiguous even when one is negated
   ("category 1 rather than category 0"): no attempt is made to read negation.
3. **Otherwise, one standalone number.** Numbers glued to letters ("R2",
   "2nd"), to a preceding dot (".5"), dimensions and percentages are skipped;
   every other number counts, decimals included. The text must contain exactly
   one distinct such number and it must be an in-range integer ("1", "1.",
   "`3`", "The answer is 2!").
4. **Refusals.** More than one distinct number -> ambiguous; a decimal
   ("1.5"; a sentence-final "1." is an integer) -> not an integer; a minus
   sign directly before the digits makes the number negative ("-1",
   "category-1") -> out of range; nothing found -> no class number.

Never raises on any string; ``n_classes < 1`` is a programming error
(``ValueError``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["ParsedAnswer", "explain_answer", "parse_answer"]

_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
          "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_HUGE = 10**9  # stand-in for integers too long to convert (always out of range)

_FORMAT_CHARS = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_CONTROL_AND_MARKDOWN = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f*_`#~>|]")
_SPACES = re.compile(r"\s+")
_DIMENSION = re.compile(
    r"(?<![\w.])[0-9]+(?:\.[0-9]+)? ?[x×X] ?[0-9]+(?:\.[0-9]+)?(?![\w]|\.[0-9])")
_NUM = r"[-\u2212]?[0-9]+(?:\.[0-9]+)?"
_END = r"(?![\w]|\.[0-9]| ?%)"
_SPELLED = "|".join(_WORDS)
_KEYWORD = re.compile(
    r"\b(?P<kw>categor(?:y|ies)|class(?:es)?|labels?|answer)\b"
    r" ?(?:(?:[:=#]|is|no\.?|number) ?)?(?:[(\[{] ?)?"
    rf"(?P<num>{_NUM}|{_SPELLED}){_END}",
    re.IGNORECASE,
)
_CONTINUATION = re.compile(
    r"(?: ?(?:,|/|&|\+|-|\u2013|\u2014|\bor\b|\band\b|\bvs\b\.?|\bversus\b|\bto\b|\bnor\b))+ ?"
    r"(?:(?P<kw>categor(?:y|ies)|class(?:es)?) ?:? ?)?"
    rf"(?P<num>[0-9]+(?:\.[0-9]+)?|{_SPELLED}){_END}",
    re.IGNORECASE,
)
_STANDALONE = re.compile(rf"(?<![\w.])(?P<num>{_NUM}){_END}")
_EDGE = " .,;:!?'\"()[]{}<>"


@dataclass(frozen=True)
class ParsedAnswer:
    """A parsed answer: ``label`` is ``None`` when unparseable; ``reason`` says why."""

    label: int | None
    reason: str


@dataclass(frozen=True)
class _Number:
    text: str          # as written (truncated for display)
    value: int | None  # None for decimals

    @property
    def shown(self) -> str:
        return str(self.value) if self.value is not None and self.value != _HUGE else self.text


def _number(token: str) -> _Number:
    token = token.replace("\u2212", "-")
    shown = token if len(token) <= 20 else token[:20] + "..."
    low = token.lower()
    if low in _WORDS:
        return _Number(shown, _WORDS[low])
    if "." in token:
        return _Number(shown, None)
    sign, digits = ("-", token[1:]) if token.startswith("-") else ("", token)
    digits = digits.lstrip("0") or "0"
    value = _HUGE if len(digits) > 9 else int(digits)
    return _Number(shown, -value if sign else value)


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _FORMAT_CHARS.sub("", text)
    text = _CONTROL_AND_MARKDOWN.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _mentions(text: str) -> list[_Number]:
    found: list[_Number] = []
    start = 0
    while (m := _KEYWORD.search(text, start)) is not None:
        start = m.end()
        word = m.group("num")
        if word.lower() in _WORDS and m.group("kw").lower() in ("answer", "label", "labels"):
            continue  # "the answer is one of ..." is not a class number
        found.append(_number(word))
        spelled = word.lower() in _WORDS
        pos = m.end()
        while (c := _CONTINUATION.match(text, pos)) is not None:
            if c.group("num").lower() in _WORDS and not (spelled or c.group("kw")):
                break  # "Category 2, and one could argue ..." names one class
            found.append(_number(c.group("num")))
            start = pos = c.end()
    return found


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _decide(numbers: list[_Number], n_classes: int, what: str, single: str) -> ParsedAnswer:
    prefix = f"{what} " if what else ""
    decimals = [x for x in numbers if x.value is None]
    if decimals:
        return ParsedAnswer(None, f"not an integer: {prefix}{decimals[0].text}")
    values = sorted({x.value for x in numbers if x.value is not None})
    if len(values) > 1:
        shown = [str(v) if v != _HUGE else "(huge)" for v in values]
        plural = {"category": "categories", "": "numbers"}[what]
        return ParsedAnswer(None, f"ambiguous: {plural} {_join(shown)} mentioned")
    value = values[0]
    if not 0 <= value < n_classes:
        shown = next(x.shown for x in numbers)
        return ParsedAnswer(None, f"out of range: {prefix}{shown} (expected 0..{n_classes - 1})")
    return ParsedAnswer(value, single.format(value))


def explain_answer(text: str, n_classes: int) -> ParsedAnswer:
    """Parse ``text`` into a class in ``0..n_classes-1`` and say why (see module rules)."""
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    if not isinstance(text, str):
        return ParsedAnswer(None, f"not a string: {type(text).__name__}")
    clean = _clean(text)
    if not clean:
        return ParsedAnswer(None, "empty answer")
    mentions = _mentions(clean)
    if mentions:
        return _decide(mentions, n_classes, "category", "category {} mentioned")
    loose = _DIMENSION.sub(" ", clean)
    numbers = [_number(m.group("num")) for m in _STANDALONE.finditer(loose)]
    if not numbers:
        return ParsedAnswer(None, "no class number found")
    bare = loose.strip(_EDGE)
    is_bare = len(numbers) == 1 and bare == numbers[0].text
    single = "bare number {}" if is_bare else "single number {} in text"
    return _decide(numbers, n_classes, "", single)


def parse_answer(text: str, n_classes: int) -> int | None:
    """The class index of ``text``, or ``None`` when it cannot be read strictly."""
    return explain_answer(text, n_classes).label
