"""Label-order robustness (``permute_labels``): templates with marked class blocks, every cyclic
shift asked through the real ``openai`` client against the loopback stand-in, answers mapped
back, and the per-shift, consistent and digit-preference numbers of designed answers.

The stand-in's READS_PROMPT images answer the number the prompt shows for their class (found
by words of the class's block in the shipped ``paper-blocks.txt``); ZERO images always answer
"0"; the other styles answer a fixed number whatever the prompt says.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest

from benchmark.config import load_config, parse_config
from benchmark.core import Answer, BenchError
from benchmark.permute import parse_template, permutation_stats, shifted_prompts, unshift
from benchmark.planning import plan_cases
from benchmark.provenance import prompt_info
from benchmark.report import Report
from benchmark.results import CaseResult
from benchmark.session import BenchSession
from tests.support.chromium import chromium_binary, headless
from tests.support.openai_stub import (
    BARE,
    CORRECT,
    READS_PROMPT,
    UNPARSEABLE,
    VERBOSE,
    WRONG,
    ZERO,
    OpenAIStub,
    mark_image,
    shown_number,
)

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "cases" / "prompts"
KEY = "sk-permute-DISTINCTIVE-KEY-5a6b"
MORPH_CLASSES = ["smooth round", "smooth cigar", "edge-on disk", "unbarred spiral"]
LSBG_CLASSES = ["artifact", "LSBG"]
# Words that only one class's block of the shipped templates holds (what READS_PROMPT looks for).
MORPH_TEXTS = ["smooth and round galaxy", "smooth and cigar-shaped galaxy", "edge-on-disk/spiral galaxy",
               "unbarred spiral galaxy"]
LSBG_TEXTS = ["In this category belong all the images", "LSBG: The image is dominated"]


# -- the templates ------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["lsbg", "morphology"])
def test_the_identity_shift_is_the_paper_prompt_byte_for_byte(task):
    cfg = load_config()
    prompts = shifted_prompts(cfg.tasks[task], "paper-permuted")
    assert prompts is not None and len(prompts) == cfg.tasks[task].n_classes
    assert prompts[0].encode("utf-8") == (PROMPTS / task / "paper.txt").read_bytes()
    assert len(set(prompts)) == len(prompts)  # every shift is a prompt of its own
    assert not any("{{" in p for p in prompts)


def test_lsbg_shift_1_swaps_the_numbers_and_keeps_the_order_of_the_shown_numbers():
    prompts = shifted_prompts(load_config().tasks["lsbg"], "paper-permuted")
    assert prompts is not None
    assert prompts[1] == (
        "You are tasked with classifying astronomical images. Each image belongs to one of two categories:\n"
        "\n"
        "Low Surface Brightness Galaxies (LSBG, Category 0) or non-LSBG (Category 1).\n"
        "Note that category 1 may also include parts or off-centered LSBGs.\n"
        "\n"
        "Here are some characteristics of the two categories:\n"
        "\n"
        "Category 1: In this category belong all the images that do not fit into the\n"
        "category 0 definiton. Examples may include: off-centered bright galaxies, diffuse light,\n"
        "bright stars, light reflections.\n"
        "\n"
        "Category 0, LSBG: The image is dominated by a well-centered,\n"
        "circular or elliptical, diffuse galaxy-like light source. There may be some\n"
        "smaller, more compact light sources nearby.\n"
        "\n"
        "To what category does the image belong?\n"
        "Respond with a number only.\n")


def test_every_morphology_shift_shows_class_k_as_k_plus_s_everywhere():
    prompts = shifted_prompts(load_config().tasks["morphology"], "paper-permuted")
    assert prompts is not None
    for s, text in enumerate(prompts):
        assert [shown_number(text, t) for t in MORPH_TEXTS] == [(k + s) % 4 for k in range(4)]
        # the blocks are listed by shown number, 0 first, as in the paper
        assert [int(line[9]) for line in text.splitlines() if line.startswith("Category ")] == [0, 1, 2, 3]
        a, b = (1 + s) % 4, (2 + s) % 4  # the free text follows: "categories 1 and 2 ... category 1 ... 2"
        assert f"Note that categories {a} and {b} tend to be very similar" in text
        assert f"belongs to category {a}. Does it" in text and f"Then it belongs to category {b}.\n" in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Pick one.\n", r"t.txt: permute_labels = true expects a template with '\{\{#class K\}\}' .*found no markers"),
        ("{{#class 0}}A {{class 0}}{{/class}}\n{{#class 1}}B {{class 1}}\n",
         r"line 2: expected '\{\{/class\}\}' to close the block of class 1, found the end of the file"),
        ("{{#class 0}}A {{class 0}}{{/class}} {{#class 2}}C {{class 2}}{{/class}}",
         r"line 1: expected a class index in 0..1 \(the task has 2 classes\) in '\{\{#class 2\}\}', found 2"),
        ("{{#class 0}}A {{class 0}}{{/class}}\nsee {{class 1}}\n",
         r"expected one block per class 0..1 .*found none for class 1$"),
        ("{{#class 0}}A {{class 0}}{{/class}}\nand then\n{{#class 1}}B {{class 1}}{{/class}}",
         r"line 3: expected the class blocks to follow one another with only whitespace between them, found "
         r"'and then' between the blocks of class 0 and class 1"),
        ("{{#class 0}}A {{#class 1}}B{{/class}}", r"expected '\{\{/class\}\}' to close the block of class 0 before"),
        ("{{#class 0}}A {{class 0}}{{/class}}{{#class 0}}again{{/class}}", r"found a second block of class 0"),
        ("x {{/class}}", r"expected '\{\{/class\}\}' only after a '\{\{#class K\}\}'"),
        ("{{#class 0}}Category 0: A{{/class}}{{#class 1}}B {{class 1}}{{/class}}",
         r"line 1: expected the block of class 0 to show its number \('\{\{class 0\}\}'\), found none in it"),
        ("{{#class 0}}A {{klass 0}}{{/class}}", r"expected a marker .*found '\{\{klass 0\}\}'"),
        ("ok\n{{#class 0", r"line 2: expected '\}\}' to close the marker"),
    ],
)
def test_malformed_templates_are_clear_errors(text, message):
    with pytest.raises(BenchError, match=message):
        parse_template(text, 2, where="t.txt")


def test_a_class_number_written_literally_is_sent_as_written():
    """Documented: only '{{class K}}' is renumbered; a literal digit stays what it is."""
    t = parse_template("{{#class 0}}Category {{class 0}} (not 1){{/class}}\n{{#class 1}}Category "
                       "{{class 1}}{{/class}}.", 2)
    assert [t.render(s) for s in (0, 1)] == ["Category 0 (not 1)\nCategory 1.", "Category 0\nCategory 1 (not 1)."]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("variant", "prompt", "message"),
    [
        ('file = "paper"\npermute_labels = true', None,
         r"task 'lsbg', prompt variant 'p': .*paper.txt: permute_labels = true expects a template .*found no markers"),
        ('file = "bad"\npermute_labels = true', "{{#class 0}}A{{/class}}",
         r"prompt variant 'p': .*bad.txt: line 1: expected the block of class 0 to show its number"),
        ('file = "paper-blocks"', None,
         r"prompt variant 'p': .*paper-blocks.txt: line 3: found a class marker .*expected permute_labels = true in "
         r"\[tasks.lsbg.variants.p\]"),
    ],
)
def test_template_mistakes_stop_the_config_at_load(tmp_path, variant, prompt, message):
    if prompt is not None:
        write(tmp_path / "prompts" / "lsbg" / "bad.txt", prompt)
    user = write(tmp_path / "my.toml", f"[tasks.lsbg.variants.p]\n{variant}\n")
    with pytest.raises(BenchError, match=message):
        load_config(user)


# -- config and planning ------------------------------------------------------------------------
def test_the_default_run_asks_no_permuted_case_and_bench_prompt_names_it(tmp_path):
    cfg = load_config()
    assert [c.id for c in plan_cases(cfg)] == ["lsbg-gpt-4o", "morphology-gpt-4o", "morphology-merged-gpt-4o",
                                               "lsbg-smolvlm", "morphology-smolvlm", "morphology-merged-smolvlm"]
    assert [c.id for c in plan_cases(cfg, models=["gpt-4o"], prompts=["paper-permuted"])] == [
        "lsbg-gpt-4o-paper-permuted", "morphology-gpt-4o-paper-permuted", "morphology-merged-gpt-4o-paper-permuted"]
    assert [c.id for c in plan_cases(cfg, tasks=["lsbg"], prompts=["paper", "paper-permuted"])] == [
        "lsbg-gpt-4o", "lsbg-gpt-4o-paper-permuted", "lsbg-smolvlm", "lsbg-smolvlm-paper-permuted"]
    # a model with its own prompts list runs only those
    with pytest.raises(BenchError, match=r"unknown prompt variant\(s\) \['paper-permuted'\]"):
        plan_cases(cfg, models=["llava-next"], prompts=["paper-permuted"])
    user = load_config(write(tmp_path / "my.toml", '[thresholds]\n"morphology/gpt-4o/paper-permuted" = 0.5\n'))
    assert user.threshold("morphology", "gpt-4o", "paper-permuted") == 0.5  # a named variant can have its own
    variant = cfg.tasks["morphology"].variant("paper-permuted")
    assert variant.settings() == {"file": "paper-blocks", "permute_labels": True}
    assert cfg.tasks["morphology"].variant("paper").settings() == {"file": "paper"}  # as before the setting
    assert prompt_info(cfg.tasks["morphology"], "paper-permuted")["variant"] == {"file": "paper-blocks",
                                                                                "permute_labels": True}


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ('[models.gpt-4o]\nrepeats = 3\ntemperature = 1',
         r"with model 'gpt-4o': expected repeats = 1 \(each image is already asked once per label shift\), "
         r"found repeats = 3"),
        ('[models.llava-next]\nprompts = ["paper-permuted"]', r"with model 'llava-next': expected no extract_with"),
    ],
)
def test_combinations_permute_labels_refuses_are_errors_before_any_call(tmp_path, model, message):
    cfg = load_config(write(tmp_path / "my.toml", model))
    name = "llava-next" if "llava" in model else "gpt-4o"
    with pytest.raises(BenchError, match=r"task 'lsbg', prompt variant 'paper-permuted' \(permute_labels = true\) "
                                         + message):
        plan_cases(cfg, tasks=["lsbg"], models=[name], prompts=["paper-permuted"])


# -- mapping back ---------------------------------------------------------------------------------
def test_unshift_maps_label_probabilities_and_both_mode_labels_back():
    a = Answer("x", raw="2", label=2, probs=[0.1, 0.2, 0.6, 0.1], meta={"score_label": 2, "generate_label": 3})
    unshift(a, 1, 4)  # shift 1 shows class k as k + 1: "2" is class 1
    assert (a.label, a.probs, a.meta["score_label"], a.meta["generate_label"]) == (1, [0.2, 0.6, 0.1, 0.1], 1, 2)
    assert (a.meta["shown"], a.meta["shift"]) == (2, 1)
    none = Answer("y", raw="no idea", label=None)
    unshift(none, 3, 4)
    assert none.label is None  # never a default class


def test_permutation_stats_of_a_model_that_always_answers_zero():
    y_true = [0, 1, 2, 3]
    preds = [[(0 - s) % 4] * 4 for s in range(4)]  # "0" under shift s is class -s
    stats = permutation_stats(y_true, preds, 4)
    assert stats["accuracies"] == [0.25] * 4 and stats["consistent_accuracy"] == 0.0
    assert stats["digit_share"] == [1.0, 0.0, 0.0, 0.0] and stats["digit_counts"] == [16, 0, 0, 0]


# -- through the loopback stand-in -----------------------------------------------------------------
def world(tmp_path: Path, stub: OpenAIStub | None, task: str, items: list[tuple[int, int, int]], *,
          merged: bool = False, model: dict | None = None) -> BenchSession:
    """A folder task named ``task`` (the built-in prompts of that task) of ``items`` =
    (true label, label marked for the stand-in, style), asked by the stand-in (``model``: more
    settings), or by the in-process ``model`` when the stand-in is None."""
    from PIL import Image

    classes = MORPH_CLASSES if task == "morphology" else LSBG_CLASSES
    rng = np.random.default_rng(1)
    root = tmp_path / "images"
    for c in range(len(classes)):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i, (true, mark, style) in enumerate(items):
        im = mark_image(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), label=mark, style=style,
                        n_classes=len(classes))
        Image.fromarray(im).save(root / f"c{true}" / f"img{i:02d}.png")
    raw = {
        "datasets": {"d": {"format": "folder", "path": str(root), "classes": [f"c{c}" for c in range(len(classes))]}},
        "tasks": {task: {"dataset": "d", "classes": classes, "prompts": ["paper", "paper-permuted"],
                         "variants": {"paper-permuted": {"file": "paper-blocks", "permute_labels": True}}}},
        "models": {"stub": {"provider": "openai", "model": "stub-vlm", "base_url": stub.base_url,
                            "api_key_env": "ASTROBENCH_PERMUTE_KEY", "concurrency": 4, **(model or {})}
                   if stub is not None else model},
    }
    if merged:
        raw["tasks"][f"{task}-merged"] = {"derived_from": task, "merge": [[0], [1, 2], [3]],
                                          "merged_classes": ["smooth round", "cigar or edge-on", "unbarred spiral"]}
    config = parse_config(raw, prompt_dirs={task: [PROMPTS / task]})
    return BenchSession(config, cassette_dir=tmp_path / "cassettes-from-test-server", record_mode="once",
                        frozen_dir=tmp_path / "frozen", progress=False)


def run_permuted(bench: BenchSession) -> list[CaseResult]:
    return [bench.run(c) for c in plan_cases(bench.config, prompts=["paper-permuted"])]


def item(sample_id: str) -> int:
    """The index in ``items`` of a sample ("c<true label>/img<index>.png")."""
    return int(sample_id.split("/img")[1][:2])


def shift_parsed(r: CaseResult) -> list[list[int | None]]:
    """Each sample's classes per shift, in the order of ``items``."""
    return [x["shift_parsed"] for x in sorted(r.predictions, key=lambda x: item(x["sample_id"]))]


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("ASTROBENCH_PERMUTE_KEY", KEY)


@pytest.mark.parametrize(("task", "texts"), [("morphology", MORPH_TEXTS), ("lsbg", LSBG_TEXTS)])
def test_a_model_that_reads_the_prompt_is_right_under_every_shift(tmp_path, key, task, texts):
    n = len(texts)
    items = [(k, k, READS_PROMPT) for k in range(n)] * 2
    with OpenAIStub(class_texts=texts) as stub:
        bench = world(tmp_path, stub, task, items)
        (r,) = run_permuted(bench)
        sent = sorted({q["texts"][0] for q in stub.requests})
    p = r.permutation
    assert p is not None
    assert (p["shifts"], p["n"], p["accuracies"], p["consistent_accuracy"]) == (n, 2 * n, [1.0] * n, 1.0)
    assert p["digit_share"] == [1 / n] * n and p["no_class"] == 0
    assert r.scores.accuracy == 1.0 and all(x["shift_parsed"] == [x["true"]] * n for x in r.predictions)
    assert len(stub.requests) == 2 * n * n  # each image once per shift
    assert sent == sorted(shifted_prompts(bench.config.tasks[task], "paper-permuted"))


def test_a_model_that_always_answers_zero_gets_one_in_n_per_shift_and_nothing_consistent(tmp_path, key):
    items = [(k, k, ZERO) for k in range(4)] * 2
    with OpenAIStub() as stub:
        (r,) = run_permuted(world(tmp_path, stub, "morphology", items))
    p = r.permutation
    assert p["accuracies"] == [0.25, 0.25, 0.25, 0.25] and p["consistent_accuracy"] == 0.0
    assert p["digit_share"] == [1.0, 0.0, 0.0, 0.0] and p["digit_counts"] == [32, 0, 0, 0]
    assert r.scores.accuracy == 0.25  # the case's own numbers: shift 0, the paper's numbering
    assert all(x["shift_parsed"] == [0, 3, 2, 1] for x in r.predictions)  # "0" under shift s is class -s mod 4
    assert r.usage == {"prompt_tokens": 3200, "completion_tokens": 160}  # all 32 calls, not shift 0's 8


# Designed answers, (true label, marked label, style); the stand-in's answer and when it is right:
MIXED = [
    (0, 0, READS_PROMPT),  # the number shown for class 0: right under every shift
    (1, 1, READS_PROMPT),  # the same for class 1
    (2, 2, CORRECT),       # "Category 2" always: class 2 only under shift 0
    (3, 3, WRONG),         # "**Category 0**" always: class 3 under shift 1
    (0, 0, VERBOSE),       # "...category 0." always: shift 0
    (1, 1, ZERO),          # "0": class 1 under shift 3
    (2, 2, UNPARSEABLE),   # never a class
    (3, 3, BARE),          # "3": shift 0
    (2, 1, READS_PROMPT),  # an edge-on disk read as the cigar's block: class 1 always (right once 1, 2 merge)
]


def test_designed_answers_give_exact_per_shift_consistent_and_merged_numbers(tmp_path, key):
    with OpenAIStub(class_texts=MORPH_TEXTS) as stub:
        base, merged = run_permuted(world(tmp_path, stub, "morphology", MIXED, merged=True))
    p = base.permutation
    assert p["accuracies"] == [5 / 9, 3 / 9, 2 / 9, 3 / 9]
    assert (p["consistent"], p["consistent_accuracy"], p["mean_accuracy"]) == (2, 2 / 9, 13 / 36)
    assert p["digit_counts"] == [15, 3, 7, 7] and p["no_class"] == 4
    assert p["digit_share"] == [15 / 36, 3 / 36, 7 / 36, 7 / 36]
    assert base.scores.accuracy == 5 / 9 and base.scores.unparseable == 1
    assert shift_parsed(base) == [
        [0, 0, 0, 0], [1, 1, 1, 1], [2, 1, 0, 3], [0, 3, 2, 1], [0, 3, 2, 1], [0, 3, 2, 1],
        [None] * 4, [3, 2, 1, 0], [1, 1, 1, 1]]
    # merged after mapping back: 1 and 2 are one class, so the confused disk is right every time
    m = merged.permutation
    assert m["accuracies"] == [6 / 9, 5 / 9, 4 / 9, 4 / 9]
    assert (m["consistent"], m["consistent_accuracy"]) == (3, 3 / 9)
    assert m["digit_counts"] == p["digit_counts"]  # the numbers of the base prompt, answered once
    assert merged.scores.accuracy == 6 / 9
    assert shift_parsed(merged)[2] == [1, 1, 0, 2]
    assert len(stub.requests) == 36  # the merged case made no calls of its own

    # reported in the terminal, Markdown, HTML and JSON
    report = Report.build([base, merged])
    row = ["morphology-stub-paper-permuted", "4", "0.556 / 0.333 / 0.222 / 0.333", "0.361", "0.222",
           "0: 42%, 1: 8%, 2: 19%, 3: 19%"]
    text = report.text()
    assert "Label order (permute_labels:" in text and "  ".join(row[2:4]) in text
    assert "| " + " | ".join(row) + " |" in re.sub(r" +", " ", report.markdown())
    html = report.html()
    assert '<table id="permutation" class="sortable">' in html and 'id="shifts-morphology-stub-paper-permuted"' in html
    assert "<td>0-&gt;1 1-&gt;2 2-&gt;3 3-&gt;0</td><td class=\"num\">0.333</td>" in html
    assert "consistent accuracy (right under every shift) 0.222 (2 of 9)" in report.detail()
    case = report.document()["cases"][0]
    assert case["permutation"] == p and shift_parsed(CaseResult.from_json(case))[8] == [1, 1, 1, 1]
    assert CaseResult.from_json(json.loads(json.dumps(case))).permutation == p


def test_score_mode_probabilities_are_mapped_back_to_class_order(tmp_path, key):
    items = [(k, k, READS_PROMPT) for k in range(4)] + [(k, k, ZERO) for k in range(4)]
    with OpenAIStub(class_texts=MORPH_TEXTS) as stub:
        bench = world(tmp_path, stub, "morphology", items, model={"mode": "score"})
        (r,) = run_permuted(bench)
        assert all(q["body"]["logprobs"] is True for q in stub.requests)
    assert r.permutation["accuracies"] == [5 / 8, 5 / 8, 5 / 8, 5 / 8]  # readers 4, "0" once per shift
    assert r.permutation["consistent_accuracy"] == 0.5
    task, model = bench.config.tasks["morphology"], bench.config.models["stub"]
    shifts = bench.predictions(task, model, "paper-permuted").shifts
    assert shifts is not None
    top, rest = 0.7 / 0.9, (0.2 / 3) / 0.9  # the stand-in's label tokens, normalised among the labels
    for s, answers in enumerate(shifts):
        for sample_id, a in answers.items():
            true, _, style = items[item(sample_id)]
            want = true if style == READS_PROMPT else (0 - s) % 4
            assert a.label == want
            assert a.probs == pytest.approx([top if c == want else rest for c in range(4)], abs=1e-12)
            assert a.meta["shown"] == (want + s) % 4


def test_recorded_then_replayed_exactly_with_the_shift_in_each_record(tmp_path, key, monkeypatch):
    with OpenAIStub(class_texts=MORPH_TEXTS) as stub:
        first = run_permuted(world(tmp_path, stub, "morphology", MIXED, merged=True))
        asked = len(stub.requests)
    assert asked == 36
    recording = tmp_path / "cassettes-from-test-server" / "morphology+stub+paper-permuted.jsonl"
    records = [json.loads(line) for line in recording.read_text().splitlines()[1:]]
    records = [r for r in records if "key" in r]
    assert len(records) == 36
    assert sorted(r["request"].get("label_shift", 0) for r in records) == [s for s in range(4) for _ in range(9)]
    assert KEY not in recording.read_text()

    monkeypatch.delenv("ASTROBENCH_PERMUTE_KEY")
    with OpenAIStub(class_texts=MORPH_TEXTS) as stub:  # a fresh server: replay must not reach it
        bench = world(tmp_path, stub, "morphology", MIXED, merged=True)
        bench.record_mode = "none"
        again = run_permuted(bench)
        assert stub.requests == []
    strip = lambda r: {k: v for k, v in r.to_json().items() if k not in ("wall_s", "cached", "traffic")}  # traffic: live only
    assert [strip(r) for r in again] == [strip(r) for r in first]
    assert again[0].cached == 9


# -- in the browser and as a user runs it ---------------------------------------------------------
READ_TABLES = """<script>
(function () {
  var cells = function (id) { return Array.prototype.map.call(document.getElementById(id).tBodies[0].rows,
    function (r) { return Array.prototype.map.call(r.cells, function (c) { return c.textContent.trim(); }); }); };
  var heads = Array.prototype.map.call(document.querySelectorAll("#permutation thead th"),
                                       function (h) { return h.textContent.trim(); });
  var box = document.getElementById("permutation").getBoundingClientRect();
  var out = document.createElement("pre"); out.id = "seen";
  out.textContent = JSON.stringify({heads: heads, rows: cells("permutation"),
                                    shifts: cells("shifts-morphology-stub-paper-permuted"),
                                    shown: box.width > 0 && box.height > 0});
  document.body.appendChild(out);
})();
</script></body>"""


@pytest.mark.skipif(chromium_binary() is None, reason="no Chromium: apt-get install chromium")
def test_the_label_order_views_render_in_headless_chromium(tmp_path, key):
    with OpenAIStub(class_texts=MORPH_TEXTS) as stub:
        results = run_permuted(world(tmp_path, stub, "morphology", MIXED, merged=True))
    page = tmp_path / "board.html"
    page.write_text(Report.build(results).html().replace("</body>", READ_TABLES), encoding="utf-8")
    proc = headless(page, tmp_path / "profile", "--dump-dom")
    found = re.search(r'<pre id="seen">(.*?)</pre>', proc.stdout, flags=re.DOTALL)
    assert found, f"expected the tables' cells in the DOM (exit {proc.returncode}): {proc.stderr[-2000:]}"
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["shown"] and seen["heads"] == ["case", "shifts", "accuracy per shift", "mean", "consistent acc",
                                               "numbers answered"]
    assert seen["rows"] == [
        ["morphology-stub-paper-permuted", "4", "0.556 / 0.333 / 0.222 / 0.333", "0.361", "0.222",
         "0: 42%, 1: 8%, 2: 19%, 3: 19%"],
        ["morphology-merged-stub-paper-permuted", "4", "0.667 / 0.556 / 0.444 / 0.444", "0.528", "0.333",
         "0: 42%, 1: 8%, 2: 19%, 3: 19%"]]
    assert seen["shifts"] == [["0", "0->0 1->1 2->2 3->3", "0.556"], ["1", "0->1 1->2 2->3 3->0", "0.333"],
                              ["2", "0->2 1->3 2->0 3->1", "0.222"], ["3", "0->3 1->0 2->1 3->2", "0.333"],
                              ["every shift", "consistent (right under every shift)", "0.222"]]


def test_a_user_runs_the_built_in_permuted_variant_with_one_option(world):
    """`pytest cases --bench-prompt paper-permuted` on the end-to-end world: the built-in
    paper-blocks template, every shift through the real client, reported in JSON and terminal.
    Its stand-in answers a fixed number per image (label, or label + 1 for WRONG), so an image
    is right under shift 0 (7 of 12) or shift 1 (the 4 WRONG ones), never under every shift."""
    run, stub, _, tmp = world
    out = tmp / "results.json"
    proc = run("--bench-task", "morphology", "--bench-task", "morphology-merged", "--bench-prompt",
               "paper-permuted", "--bench-results", str(out), "--bench-detail")
    text = proc.stdout + proc.stderr
    # the task/model thresholds gate shift 0, the paper's numbering: 7/12 < 0.62, as the paper case
    assert proc.returncode == 1 and "accuracy 0.5833" in text and "1 passed" not in text, text
    assert len(stub.requests) == 48  # 12 images x 4 shifts
    cases = {c["case_id"]: c for c in json.loads(out.read_text())["cases"]}
    base = cases["morphology-gpt-4o-paper-permuted"]["permutation"]
    merged = cases["morphology-merged-gpt-4o-paper-permuted"]["permutation"]
    assert base["accuracies"] == [7 / 12, 4 / 12, 0.0, 0.0] and base["consistent_accuracy"] == 0.0
    assert base["digit_counts"] == [16, 4, 12, 12] and base["no_class"] == 4
    assert merged["accuracies"] == [9 / 12, 5 / 12, 1 / 12, 1 / 12] and merged["consistent_accuracy"] == 0.0
    assert cases["morphology-gpt-4o-paper-permuted"]["metrics"]["accuracy"] == 7 / 12  # = the paper prompt's case
    assert "Label order (permute_labels:" in text
    assert "accuracy per shift 0: 0.583, 1: 0.333, 2: 0.000, 3: 0.000; mean 0.229" in text


def test_a_tiny_random_llava_in_both_modes_has_its_scores_mapped_back_and_replays(tiny_llava_dir, tmp_path,
                                                                                  monkeypatch):
    """The in-process path: what the recording holds is the answer as given (shown numbers);
    what the case scores is that answer mapped back, live and replayed alike."""
    from benchmark.providers.hf import TransformersProvider

    items = [(k % 2, k % 2, CORRECT) for k in range(4)]
    tiny = {"provider": "transformers", "model": str(tiny_llava_dir), "mode": "both", "max_new_tokens": 3,
            "batch_size": 4}
    bench = world(tmp_path, None, "lsbg", items, model=tiny)
    (live,) = run_permuted(bench)
    task, model = bench.config.tasks["lsbg"], bench.config.models["stub"]
    shifts = bench.predictions(task, model, "paper-permuted").shifts
    recording = tmp_path / "cassettes-from-test-server" / "lsbg+stub+paper-permuted.jsonl"
    records = [r for r in map(json.loads, recording.read_text().splitlines()[1:]) if "key" in r]
    assert len(records) == 8 and {r["request"].get("label_shift", 0) for r in records} == {0, 1}
    for r in records:
        s, given = r["request"].get("label_shift", 0), r["answer"]
        scored = shifts[s][r["sample"]]
        assert scored.probs == [given["probs"][(k + s) % 2] for k in range(2)]
        assert scored.label == (given["label"] - s) % 2 == scored.meta["score_label"]
        assert scored.meta["shown"] == given["label"]
    assert live.permutation["accuracies"] == [sum(p["shift_parsed"][s] == p["true"] for p in live.predictions) / 4
                                              for s in range(2)]

    def no_weights(self):
        raise AssertionError("replay must not load the model")

    monkeypatch.setattr(TransformersProvider, "_load_model", no_weights)
    again = world(tmp_path, None, "lsbg", items, model=tiny)
    again.record_mode = "none"
    (replayed,) = run_permuted(again)
    assert replayed.permutation == live.permutation and replayed.predictions == live.predictions
