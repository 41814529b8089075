"""Label-order robustness (``permute_labels``, in the spirit of VLMEvalKit's CircularEval).

A prompt template marks each class's block and every class number, so renumbering is
mechanical, never string surgery on free text (syntax: ``cases/prompts/README.md``)::

    {{#class K}} ... {{/class}}    the block that describes class K (K = class index)
    {{class K}}                    the number shown for class K, anywhere (inside blocks too)

Shift ``s`` (0..n-1) shows class ``k`` as the number ``(k + s) mod n``. The blocks keep their
slots: the slot that holds class ``k`` in the file holds, under shift ``s``, the class now
shown as ``k``, so the numbers are listed in the file's order and shift 0 is the file with
its markers removed (the shipped ``paper-blocks.txt`` give ``paper.txt`` byte for byte).
An answer ``j`` given under shift ``s`` is class ``(j - s) mod n``; no class stays no class,
and class probabilities (score mode) are reordered the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.core import Answer, BenchError

if TYPE_CHECKING:
    from benchmark.config import ModelConfig, TaskConfig

Piece = str | int  # text, or the class whose shown number goes here
_TOKEN = re.compile(r"\s*(?:#\s*class\s+(?P<open>\d+)|(?P<close>/\s*class)|class\s+(?P<number>\d+))\s*")
_ANY_MARKER = re.compile(r"\{\{\s*[#/]?\s*class\b")
SYNTAX = "'{{#class K}}' ... '{{/class}}' around each class's block and '{{class K}}' for its number"


@dataclass(frozen=True)
class LabelTemplate:
    """A parsed template: text before the blocks, the blocks in file order, the whitespace
    between them, and the text after them."""

    n_classes: int
    head: tuple[Piece, ...]
    blocks: tuple[tuple[int, tuple[Piece, ...]], ...]  # (class index, its pieces), in file order
    gaps: tuple[str, ...]
    tail: tuple[Piece, ...]

    def render(self, shift: int) -> str:
        """The prompt under ``shift``: class k shown as (k + shift) mod n, block slots kept."""
        n = self.n_classes

        def text(pieces: tuple[Piece, ...]) -> str:
            return "".join(p if isinstance(p, str) else str((p + shift) % n) for p in pieces)

        by_class = dict(self.blocks)
        out = [text(self.head)]
        for slot, (k, _) in enumerate(self.blocks):
            out.append(text(by_class[(k - shift) % n]))  # the class now shown as k
            if slot < len(self.gaps):
                out.append(self.gaps[slot])
        out.append(text(self.tail))
        return "".join(out)


def parse_template(text: str, n_classes: int, *, where: str = "prompt template") -> LabelTemplate:
    """``text`` as a :class:`LabelTemplate` for ``n_classes`` classes, or a BenchError saying
    what was expected and what was found (with the line)."""
    def fail(pos: int, what: str) -> BenchError:
        return BenchError(f"{where}: line {text.count(chr(10), 0, pos) + 1}: {what}")

    def check_index(k: int, pos: int, marker: str) -> int:
        if not 0 <= k < n_classes:
            raise fail(pos, f"expected a class index in 0..{n_classes - 1} (the task has {n_classes} classes) "
                            f"in '{marker}', found {k}")
        return k

    pieces: list[Piece] = []
    head: list[Piece] | None = None
    blocks: list[tuple[int, tuple[Piece, ...]]] = []
    gaps: list[str] = []
    open_at: tuple[int, int] | None = None  # (class, position) of the block being read
    seen_marker = False
    i = 0
    while True:
        j = text.find("{{", i)
        if j < 0:
            pieces.append(text[i:])
            break
        pieces.append(text[i:j])
        end = text.find("}}", j + 2)
        if end < 0:
            raise fail(j, f"expected '}}}}' to close the marker that starts {text[j:j + 20]!r}, found none")
        marker = text[j:end + 2]
        m = _TOKEN.fullmatch(text[j + 2:end])
        if m is None:
            raise fail(j, f"expected a marker {SYNTAX}, found {marker!r}")
        seen_marker = True
        i = end + 2
        if m["number"] is not None:
            pieces.append(check_index(int(m["number"]), j, marker))
        elif m["open"] is not None:
            k = check_index(int(m["open"]), j, marker)
            if open_at is not None:
                raise fail(j, f"expected '{{{{/class}}}}' to close the block of class {open_at[0]} before "
                              f"{marker!r} opens another")
            if any(b == k for b, _ in blocks):
                raise fail(j, f"expected one block per class, found a second block of class {k}")
            between = [p for p in pieces if p != ""]
            if head is None:
                head = between
            elif any(not isinstance(p, str) or p.strip() for p in between):
                shown = "".join(p if isinstance(p, str) else f"{{{{class {p}}}}}" for p in between)
                raise fail(j, f"expected the class blocks to follow one another with only whitespace between "
                              f"them, found {shown.strip()[:60]!r} between the blocks of class {blocks[-1][0]} "
                              f"and class {k}")
            else:
                gaps.append("".join(between))  # type: ignore[arg-type]
            pieces, open_at = [], (k, j)
        else:
            if open_at is None:
                raise fail(j, "expected '{{/class}}' only after a '{{#class K}}' that opens a block, found it "
                              "with no block open")
            k = open_at[0]
            body = tuple(p for p in pieces if p != "")
            if k not in body:
                raise fail(open_at[1], f"expected the block of class {k} to show its number ('{{{{class {k}}}}}'), "
                                       "found none in it")
            blocks.append((k, body))
            pieces, open_at = [], None
    if open_at is not None:
        raise fail(open_at[1], f"expected '{{{{/class}}}}' to close the block of class {open_at[0]}, found the "
                               "end of the file")
    if not seen_marker:
        raise BenchError(f"{where}: permute_labels = true expects a template with {SYNTAX} (see "
                         "cases/prompts/README.md), found no markers")
    missing = sorted(set(range(n_classes)) - {k for k, _ in blocks})
    if missing:
        raise BenchError(f"{where}: expected one block per class 0..{n_classes - 1} ('{{{{#class K}}}} ... "
                         f"'{{{{/class}}}}'), found none for class{'es' if len(missing) > 1 else ''} "
                         f"{', '.join(map(str, missing))}")
    return LabelTemplate(n_classes, tuple(head or ()), tuple(blocks), tuple(gaps),
                         tuple(p for p in pieces if p != ""))


def check_prompt_file(task: TaskConfig, variant: str, text: str, path: Path) -> None:
    """A ``permute_labels`` variant's file must parse as a template; any other variant's file
    must hold no class markers (they would be sent to the model as written)."""
    where = f"task {task.name!r}, prompt variant {variant!r}: {path}"
    if task.variant(variant).permute_labels:
        parse_template(text, task.n_classes, where=where)
    elif (m := _ANY_MARKER.search(text)) is not None:
        raise BenchError(f"{where}: line {text.count(chr(10), 0, m.start()) + 1}: found a class marker "
                         f"{text[m.start():m.start() + 14]!r}...; expected permute_labels = true in "
                         f"[tasks.{task.name}.variants.{variant}] for a template, or a prompt without "
                         "markers (a file is otherwise sent as written)")


def shifted_prompts(task: TaskConfig, variant: str) -> list[str] | None:
    """The prompt of every shift (index = shift) of a ``permute_labels`` variant; None otherwise."""
    if not task.variant(variant).permute_labels:
        return None
    path = task.prompt_path(variant)
    template = parse_template(task.prompt_text(variant), task.n_classes,
                              where=f"task {task.name!r}, prompt variant {variant!r}: {path}")
    return [template.render(s) for s in range(task.n_classes)]


def check_model(task: TaskConfig, variant: str, model: ModelConfig) -> None:
    """The model settings that ``permute_labels`` does not combine with, refused before any call."""
    if not task.variant(variant).permute_labels:
        return
    where = f"task {task.name!r}, prompt variant {variant!r} (permute_labels = true) with model {model.name!r}"
    repeats = int(model.settings.get("repeats", 1))
    if repeats > 1:
        raise BenchError(f"{where}: expected repeats = 1 (each image is already asked once per label shift), "
                         f"found repeats = {repeats}; run the repeats on a variant without permute_labels")
    if model.settings.get("extract_with"):
        raise BenchError(f"{where}: expected no extract_with (the extractor's instruction numbers the classes "
                         f"as the paper does, not as each shift shows them), found "
                         f"{model.settings['extract_with']!r}")


def class_of(shown: int | None, shift: int, n_classes: int) -> int | None:
    """The class that ``shift`` shows as number ``shown`` (None stays None)."""
    return None if shown is None else (shown - shift) % n_classes


def unshift(answer: Answer, shift: int, n_classes: int) -> None:
    """Map an answer given under ``shift`` back to class indices, in place: its label, class
    probabilities and both-mode labels. The number answered is kept in ``meta["shown"]``."""
    answer.meta.update(shift=shift, shown=answer.label)
    answer.label = class_of(answer.label, shift, n_classes)
    if answer.probs is not None and len(answer.probs) == n_classes:
        answer.probs = [answer.probs[(k + shift) % n_classes] for k in range(n_classes)]
    for key in ("generate_label", "score_label"):
        if key in answer.meta:
            answer.meta[key] = class_of(answer.meta[key], shift, n_classes)


def permutation_stats(y_true: Sequence[int], shift_preds: Sequence[Sequence[int | None]], n_classes: int,
                      merge: Sequence[int] | None = None) -> dict[str, Any]:
    """Per-shift accuracy, consistent accuracy (right under every shift) and the digit preference.

    ``y_true`` and ``shift_preds`` (per shift, the classes mapped back) are the base task's;
    ``merge`` (old -> new class) scores merged classes after mapping back. The digit preference
    counts the numbers the model answered as shown in the prompt (base numbering), over every
    shift and sample: ``digit_share[j]`` = answers "j" / (n x shifts); answers with no class
    are counted apart (``no_class``).
    """
    shifts, n = len(shift_preds), len(y_true)
    counts, no_class = [0] * n_classes, 0
    for s, preds in enumerate(shift_preds):
        for p in preds:
            if p is None:
                no_class += 1
            else:
                counts[(p + s) % n_classes] += 1
    if merge is not None:
        y_true = [merge[t] for t in y_true]
        shift_preds = [[None if p is None else merge[p] for p in preds] for preds in shift_preds]
    right = [[p == t for p, t in zip(preds, y_true)] for preds in shift_preds]
    consistent = sum(all(r[i] for r in right) for i in range(n))
    accuracies = [sum(r) / n if n else 0.0 for r in right]
    total = n * shifts
    return {"shifts": shifts, "n": n, "accuracies": accuracies,
            "mean_accuracy": sum(accuracies) / shifts if shifts else 0.0,
            "consistent": consistent, "consistent_accuracy": consistent / n if n else 0.0,
            "digit_counts": counts, "digit_share": [c / total if total else 0.0 for c in counts],
            "no_class": no_class}


def describe(stats: dict[str, Any]) -> list[str]:
    """The lines of the detail view (and the HTML case section) for a case's ``permutation``."""
    acc = ", ".join(f"{s}: {a:.3f}" for s, a in enumerate(stats["accuracies"]))
    share = ", ".join(f"{j}: {x:.0%}" for j, x in enumerate(stats["digit_share"]))
    return [(f"label shifts: {stats['shifts']} (class k shown as (k + shift) mod {len(stats['digit_share'])}); "
             f"accuracy per shift {acc}; mean {stats['mean_accuracy']:.3f}; consistent accuracy (right under "
             f"every shift) {stats['consistent_accuracy']:.3f} ({stats['consistent']} of {stats['n']}); "
             "the case's predictions are shift 0's (the file's numbering)"),
            (f"numbers answered across shifts: {share}; no class {stats['no_class']} of "
             f"{stats['n'] * stats['shifts']}")]
