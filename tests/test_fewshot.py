"""Few-shot prompt variants (``shots = k``): the examples drawn, what is sent, recorded and reported.

The world: a two-class folder task of 20 images, the first 8 the sample (image i is class i % 2, in
the folder's order). The loopback stand-in answers three sample images (``NEEDS_EXAMPLES``) right only
after labelled examples of every class, so accuracy is 4/8 zero-shot and 7/8 with examples. Pool
images 8, 10 and 12 are copies of sample images 0, 2 and 4 (class 0), so class 0's pool outside the
sample's pixels is exactly images 14, 16 and 18.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.config import ModelConfig, parse_config
from benchmark.core import BenchError, DatasetUnavailable, Example, Request, Sample
from benchmark.fewshot import choose_examples, draw_examples, load_items
from benchmark.frozen import write_frozen
from benchmark.report import Report
from benchmark.results import CaseResult
from benchmark.schema import EXAMPLE_TEXT, QUERY_TEXT
from tests.support.folder_task import KEY, PROMPT, folder_world, session
from tests.support.openai_stub import BARE, CORRECT, NEEDS_EXAMPLES, VERBOSE, WRONG, OpenAIStub, mark_image

SAMPLE_STYLES = [CORRECT, NEEDS_EXAMPLES, NEEDS_EXAMPLES, WRONG, CORRECT, NEEDS_EXAMPLES, BARE, VERBOSE]
# shots = 3, shot_seed = 0 (pinned: the draw is the same on every machine and NumPy version)
EXAMPLES_SEED0 = [("artifact/img018.png", 0), ("lsbg/img019.png", 1), ("artifact/img014.png", 0),
                  ("lsbg/img013.png", 1), ("artifact/img016.png", 0), ("lsbg/img017.png", 1)]


def world_images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    styles = SAMPLE_STYLES + [CORRECT] * 12
    imgs = [mark_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), label=i % 2, style=s, n_classes=2)
            for i, s in enumerate(styles)]
    imgs[8], imgs[10], imgs[12] = imgs[0].copy(), imgs[2].copy(), imgs[4].copy()
    return imgs


def fewshot_world(tmp_path: Path, stub: OpenAIStub, **variant) -> dict:
    raw = folder_world(tmp_path, stub, 20, imgs=world_images())
    raw["tasks"]["toy"].update(sample_size=8, prompts=["paper", "paper-3shot"],
                               variants={"paper-3shot": {"file": "paper", "shots": 3, **variant}})
    return raw


def run_all(raw: dict, tmp_path: Path, mode: str | None) -> dict[str, CaseResult]:
    bench = session(raw, tmp_path, mode)
    from benchmark.session import plan_cases

    return {c.prompt: bench.run(c) for c in plan_cases(bench.config)}


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)


# -- the designed answers ------------------------------------------------------------
def test_examples_raise_accuracy_by_the_designed_amount_and_are_sent_in_order(tmp_path, key):
    with OpenAIStub() as stub:
        results = run_all(fewshot_world(tmp_path, stub), tmp_path, "once")
        sent = stub.requests
    zero, few = results["paper"], results["paper-3shot"]
    assert (zero.scores.accuracy, few.scores.accuracy) == (0.5, 0.875)
    assert zero.shots is None
    assert few.shots == {"k": 3, "seed": 0, "examples": [{"id": i, "label": c} for i, c in EXAMPLES_SEED0]}

    assert len(sent) == 16 and all(r["kinds"] == ["text", "image"] for r in sent[:8])
    for r in sent[8:]:  # one user message: prompt, (text, image) per example, query text, query image
        assert len(r["body"]["messages"]) == 1
        assert r["kinds"] == ["text"] + ["text", "image"] * 6 + ["text", "image"]
        assert r["texts"] == [PROMPT] + [f"Example of category {c}:" for _, c in EXAMPLES_SEED0] + [QUERY_TEXT]
        assert [m[0] % 10 for m in r["marks"][:-1]] == [c for _, c in EXAMPLES_SEED0]  # each image its class
    assert sorted(m[-1][0] for m in (r["marks"] for r in sent[8:])) == sorted(
        i % 2 + 10 * s for i, s in enumerate(SAMPLE_STYLES))  # the query image last, each sample once


def test_the_pair_table_compares_few_shot_with_zero_shot(tmp_path, key):
    with OpenAIStub() as stub:
        results = run_all(fewshot_world(tmp_path, stub), tmp_path, "once")
    [pair] = Report.build(list(results.values())).pairs()
    assert (pair.a, pair.b_case) == ("toy-stub", "toy-stub-paper-3shot")
    assert (pair.n_shared, pair.delta, pair.b, pair.c, pair.p_value) == (8, 0.375, 0, 3, 0.25)


def test_example_texts_are_configurable(tmp_path, key):
    with OpenAIStub() as stub:
        raw = fewshot_world(tmp_path, stub, example_text="This is a {name} (category {label}).",
                            query_text="And this one?", shots=1, shot_seed=5)
        few = run_all(raw, tmp_path, "once")["paper-3shot"]
        texts = stub.requests[-1]["texts"]
    [(id0, _), (id1, _)] = [(e["id"], e["label"]) for e in few.shots["examples"]]
    assert texts == [PROMPT, "This is a artifact (category 0).", "This is a lsbg (category 1).", "And this one?"]
    assert id0.startswith("artifact/") and id1.startswith("lsbg/")
    assert few.scores.accuracy == 0.875  # the stub reads the last number before each example image


# -- recording ---------------------------------------------------------------------
def test_replay_is_identical_and_a_changed_draw_never_replays_old_answers(tmp_path, key, monkeypatch):
    with OpenAIStub() as stub:
        raw = fewshot_world(tmp_path, stub)
        first = run_all(raw, tmp_path, "once")
    monkeypatch.delenv("ASTROBENCH_TEST_KEY")
    again = run_all(raw, tmp_path, "none")  # the stub is gone: replay only
    assert {p: r.predictions for p, r in again.items()} == {p: r.predictions for p, r in first.items()}
    assert again["paper-3shot"].shots == first["paper-3shot"].shots and again["paper-3shot"].cached == 8

    recording = tmp_path / "cassettes-from-test-server" / "toy+stub+paper-3shot.jsonl"
    lines = [json.loads(ln) for ln in recording.read_text().splitlines() if ln.startswith('{"key"')]
    request = lines[0]["request"]
    assert request["example_ids"] == [i for i, _ in EXAMPLES_SEED0]
    parts = request["messages"][0]["content"]
    assert [p["image_url"]["sha256"] for p in parts if p["type"] == "image_url"][:-1] == [
        Sample("x", world_images()[int(i[-7:-4])], 0).sha256 for i, _ in EXAMPLES_SEED0]

    for change in ({"shot_seed": 1}, {"shots": 2}, {"example_text": "Category {label}:"}):
        raw["tasks"]["toy"]["variants"]["paper-3shot"].update(change)
        with pytest.raises(BenchError, match=r"(?s)toy\+stub\+paper-3shot.jsonl has no recorded answer for 8 of the "
                                             r"requested samples.*--record-mode new_episodes"):
            run_all(raw, tmp_path, "none")
        raw["tasks"]["toy"]["variants"]["paper-3shot"] = {"file": "paper", "shots": 3}


def test_bench_limit_changes_neither_the_pool_nor_the_examples(tmp_path, key, monkeypatch):
    """--bench-limit 3 replays the first 3 answers of the recorded case: the sample images it leaves
    out stay out of the pool (image 12, a copy of sample image 4, too), so the examples, and with
    them the recording keys, are the whole run's."""
    with OpenAIStub() as stub:
        raw = fewshot_world(tmp_path, stub)
        first = run_all(raw, tmp_path, "once")
    monkeypatch.delenv("ASTROBENCH_TEST_KEY")
    bench = session(raw, tmp_path, "none", limit=3)
    from benchmark.session import plan_cases

    limited = {c.prompt: bench.run(c) for c in plan_cases(bench.config)}
    assert limited["paper-3shot"].shots == first["paper-3shot"].shots
    assert limited["paper-3shot"].predictions == first["paper-3shot"].predictions[:3]


def test_replay_needs_the_dataset_itself_not_only_the_frozen_sample(tmp_path, key, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_FIXTURES_DIR", str(tmp_path / "frozen"))  # where the config looks too
    with OpenAIStub() as stub:
        raw = fewshot_world(tmp_path, stub)
        first = run_all(raw, tmp_path, "once")
    spec = raw["datasets"]["toy"]
    bench = session(raw, tmp_path, "none")
    write_frozen(tmp_path / "frozen" / "toy.npz", bench.samples(bench.config.tasks["toy"]), dataset="toy",
                 spec=spec)
    shutil.rmtree(spec["path"])
    bench = session(raw, tmp_path, "none")
    from benchmark.session import plan_cases

    zero, few = plan_cases(bench.config)
    assert bench.run(zero).predictions == first["paper"].predictions  # zero-shot replays from the frozen sample
    with pytest.raises(DatasetUnavailable, match=r"prompt variant 'paper-3shot' draws its few-shot examples from "
                                                 r"the images of dataset 'toy' beyond the sample \(a frozen sample "
                                                 r"holds only the sample\).*found nothing"):
        bench.run(few)


# -- the draw ------------------------------------------------------------------------
def test_a_class_with_too_few_images_outside_the_sample_is_a_clear_error(tmp_path, key):
    with OpenAIStub() as stub:
        raw = fewshot_world(tmp_path, stub, shots=4)
        with pytest.raises(BenchError, match=r"task toy: prompt variant 'paper-3shot' \(20 images, 8 of them "
                                             r"the sample, 3 more left out as copies of sample images\): expected at "
                                             r"least 4 images of every class outside the sample to draw 4 examples "
                                             r"per class, found class 0: 3$"):
            run_all(raw, tmp_path, "once")
        assert len(stub.requests) == 8  # the zero-shot case ran; the few-shot one asked nothing


def test_the_draw_is_pinned():
    ids = [f"i{n}" for n in range(10)]
    assert draw_examples(ids, [n % 2 for n in range(10)], k=2, n_classes=2, seed=0) == [
        ("i2", 0), ("i9", 1), ("i4", 0), ("i5", 1)]
    assert draw_examples(ids, [n % 2 for n in range(10)], exclude={"i8"}, k=2, n_classes=2, seed=0) == [
        ("i6", 0), ("i9", 1), ("i4", 0), ("i5", 1)]
    assert draw_examples(ids, [n % 2 for n in range(10)], k=5, n_classes=2, seed=0)[::2] != draw_examples(
        ids, [n % 2 for n in range(10)], k=5, n_classes=2, seed=1)[::2]  # another seed, another order


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(2, 40), n_classes=st.integers(2, 4), k=st.integers(1, 4),
       seed=st.integers(0, 2**63))
def test_examples_are_never_sample_images_and_k_per_class(data, n, n_classes, k, seed):
    """Random datasets with many duplicated images (pixels from 3 values), random samples and seeds."""
    labels = data.draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))
    pixels = data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    items = [Sample(f"id{i}", np.full((2, 2, 3), p, np.uint8), lab) for i, (p, lab) in enumerate(zip(pixels, labels))]
    chosen = data.draw(st.sets(st.integers(0, n - 1), min_size=1))  # a prefix ("first") or any subset (stratified)
    sample = [items[i] for i in sorted(chosen)]
    ids, digests = {s.id for s in sample}, {s.sha256 for s in sample}
    eligible = [sum(1 for s in items if s.id not in ids and s.label == c and s.sha256 not in digests)
                for c in range(n_classes)]
    classes = [f"c{c}" for c in range(n_classes)]

    def choose():
        return choose_examples(items, sample, k=k, seed=seed, classes=classes, example_text=EXAMPLE_TEXT)

    if min(eligible) < k:
        with pytest.raises(BenchError, match="expected at least"):
            choose()
        return
    examples = choose()
    assert not {e.id for e in examples} & ids
    assert not {e.image_sha256 for e in examples} & digests
    assert [e.label for e in examples] == list(range(n_classes)) * k  # in rounds, k per class
    assert len({e.id for e in examples}) == k * n_classes
    assert all(e.text == f"Example of category {e.label}:" for e in examples)
    assert [(e.id, e.image_sha256) for e in choose()] == [(e.id, e.image_sha256) for e in examples]  # deterministic


def test_load_items_says_why_a_missing_folder_is_unavailable(tmp_path):
    spec = {"format": "folder", "path": str(tmp_path / "gone"), "classes": ["a", "b"]}
    with pytest.raises(DatasetUnavailable, match=r"variant 'v' draws its few-shot examples .*at .*gone, found nothing"):
        load_items("toy", spec, base_dir=None, variant="v")


# -- config ------------------------------------------------------------------------
@pytest.mark.parametrize(("variant", "task", "message"), [
    ({"shot_seed": 2}, {}, r"\['shot_seed'\] apply to few-shot prompts; expected 'shots' >= 1"),
    ({"shots": 2, "example_text": "Class {klass}:"}, {},
     r"only the placeholders \{label\} and \{name\}, found \['klass'\]"),
    ({"shots": -1}, {}, r"tasks.toy.variants.v: expected 'shots' an integer >= 0, found -1"),
    ({"shots": 1, "exampel_text": "x"}, {}, r"unknown keys \['exampel_text'\] \(did you mean 'example_text'\?\)"),
    ({"shots": 2}, {"sample_size": None},
     r"few-shot variants \['v'\] draw their examples from the images beyond the sample; expected 'sample_size'"),
])
def test_few_shot_settings_are_checked_at_load(tmp_path, variant, task, message):
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 6)
    raw["tasks"]["toy"].update({"sample_size": 2, "variants": {"v": {"file": "paper", **variant}}, **task})
    raw["tasks"]["toy"] = {k: v for k, v in raw["tasks"]["toy"].items() if v is not None}
    with pytest.raises(BenchError, match=message):
        parse_config(raw, prompt_dirs={"toy": [tmp_path / "prompts" / "toy"]})


def test_variant_settings_and_provenance_name_the_draw(tmp_path, key):
    from benchmark.provenance import collect, differences

    with OpenAIStub() as stub:
        raw = fewshot_world(tmp_path, stub)
        bench = session(raw, tmp_path, "once")
        from benchmark.session import plan_cases

        for case in plan_cases(bench.config):
            bench.run(case)
        old = collect(bench)
        raw["tasks"]["toy"]["variants"]["paper-3shot"]["shot_seed"] = 1
        bench = session(raw, tmp_path, "new_episodes")
        for case in plan_cases(bench.config):
            bench.run(case)
        new = collect(bench)
    assert old["prompts"]["toy/paper"]["variant"] == {"file": "paper"}  # zero-shot: as before
    assert old["prompts"]["toy/paper-3shot"]["variant"] == {"file": "paper", "shots": 3, "shot_seed": 0,
                                                            "example_text": EXAMPLE_TEXT, "query_text": QUERY_TEXT}
    assert old["cases"]["toy-stub-paper-3shot"]["shots"]["examples"][0] == {"id": "artifact/img018.png", "label": 0}
    found = differences(old, new)
    assert "prompt toy/paper-3shot: shot_seed: 0 -> 1" in found
    assert any(line.startswith("case toy-stub-paper-3shot: few-shot examples: artifact/img018.png") for line in found)


# -- reports -------------------------------------------------------------------------
def test_merging_results_files_tells_runs_with_other_examples_apart():
    from benchmark.merge import differences

    case = {"model_id": "m", "predictions": [], "sample_sha256": "s", "prompt_sha256": "p",
            "shots": {"k": 1, "seed": 0, "examples": [{"id": "7", "label": 0}, {"id": "9", "label": 1}]}}
    assert differences(case, json.loads(json.dumps(case))) == []
    other = {**case, "shots": {"k": 1, "seed": 1, "examples": [{"id": "8", "label": 0}, {"id": "9", "label": 1}]}}
    assert differences(case, other) == ["few-shot examples differ"]
    assert differences({**case, "shots": None}, case) == ["few-shot examples differ"]


def test_results_json_markdown_detail_and_html_list_the_examples(tmp_path, key):
    with OpenAIStub() as stub:
        results = run_all(fewshot_world(tmp_path, stub), tmp_path, "once")
    report = Report.build(list(results.values()))
    doc = report.document()
    few = next(c for c in doc["cases"] if c["prompt"] == "paper-3shot")
    assert few["shots"]["examples"] == [{"id": i, "label": c} for i, c in EXAMPLES_SEED0]
    assert next(c for c in doc["cases"] if c["prompt"] == "paper")["shots"] is None
    assert CaseResult.from_json(json.loads(json.dumps(few))).shots == few["shots"]

    listed = ", ".join(f"{i} ({c}: {['artifact', 'lsbg'][c]})" for i, c in EXAMPLES_SEED0)
    assert (f"few-shot: 3 example(s) per class (shot_seed 0), sent in this order before every image: {listed}"
            in report.detail())
    assert f"| toy-stub-paper-3shot | 3                 | 0           | {listed} |" in report.markdown()
    page = report.html()
    table = page.split('<table id="shots-toy-stub-paper-3shot">')[1].split("</table>")[0]
    assert [row.count("<td") for row in table.split("<tr>")[2:]] == [2] * 6
    assert "<td>artifact/img018.png</td><td>0: artifact</td>" in table
    assert page.count('id="shots-') == 1  # only the few-shot case has the section


# -- transformers --------------------------------------------------------------------
@pytest.fixture(scope="module")
def fewshot_requests() -> list[Request]:
    rng = np.random.default_rng(0)
    examples = tuple(Example(f"e{i}", i % 2, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                             f"Example of category {i % 2}:") for i in range(4))
    return [Request(f"s{i}", "Which category?" + " Think." * (i % 3) + "\n",
                    rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), 2, text=QUERY_TEXT, examples=examples)
            for i in range(3)]


def tiny(path: Path, **settings):
    from benchmark.providers.hf import TransformersProvider

    return TransformersProvider.from_config(ModelConfig("tiny", "transformers", str(path), settings=settings))


# Shaped like llava-hf/llava-v1.6-mistral-7b-hf's chat_template.json: every image of a turn, then its texts.
IMAGES_FIRST = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}[INST] "
                "{% for c in message['content'] | selectattr('type', 'equalto', 'image') %}<image>\n{% endfor %}"
                "{% for c in message['content'] | selectattr('type', 'equalto', 'text') %}{{ c['text'] }}{% endfor %}"
                " [/INST]{% endif %}{% endfor %}")
FEWSHOT_TEXT = ("<s>[INST] Which category?\nExample of category 0:\n<image>\nExample of category 1:\n<image>\n"
                "Example of category 0:\n<image>\nExample of category 1:\n<image>\n"
                f"{QUERY_TEXT}\n<image>\n [/INST]")


def test_tiny_llava_chat_template_sends_every_image_in_order_batch_equals_single(tiny_llava_dir, fewshot_requests):
    import torch

    torch.set_num_threads(1)
    one = tiny(tiny_llava_dir, mode="score", prompt_format="chat-template", batch_size=1)
    three = tiny(tiny_llava_dir, mode="score", prompt_format="chat-template", batch_size=3)
    assert one.prompt_text(fewshot_requests[0]) == FEWSHOT_TEXT
    a, b = one.classify(fewshot_requests), three.classify(fewshot_requests)
    np.testing.assert_allclose([x.probs for x in b], [x.probs for x in a], atol=1e-5)
    assert [x.label for x in a] == [x.label for x in b]
    enc = one._inputs([one.prompt_text(r) for r in fewshot_requests[:2]], fewshot_requests[:2])
    assert enc["pixel_values"].shape[0] == 10  # 5 images per request: 4 examples, then the query
    image_id = one.tokenizer.convert_tokens_to_ids("<image>")
    counts = (enc["input_ids"] == image_id).sum(-1).tolist()
    assert counts[0] == counts[1] > 0 and counts[0] % 5 == 0
    zero = one.classify([Request("z", fewshot_requests[0].prompt, fewshot_requests[0].image, 2)])
    assert zero[0].probs != a[0].probs  # the examples reach the model


def test_a_template_that_puts_images_first_gets_the_images_inline(tiny_llava_dir, fewshot_requests):
    provider = tiny(tiny_llava_dir, prompt_format="chat-template")
    provider.processor.chat_template = IMAGES_FIRST
    assert provider._keeps_order is False
    assert provider.prompt_text(fewshot_requests[0]) == FEWSHOT_TEXT  # the same text as an order-keeping template


def test_tiny_llava_paper_format_refuses_examples_and_keys_name_them(tiny_llava_dir, fewshot_requests):
    with pytest.raises(BenchError, match=r"few-shot prompts \(several images in one turn\) need prompt_format = "
                                         r"\"chat-template\", found 'paper'"):
        tiny(tiny_llava_dir, prompt_format="paper").canonical_request(fewshot_requests[0])
    key = tiny(tiny_llava_dir, prompt_format="chat-template").canonical_request(fewshot_requests[0])
    assert [e["id"] for e in key["examples"]] == ["e0", "e1", "e2", "e3"]
    assert key["examples"][1] == {"id": "e1", "label": 1, "text": "Example of category 1:",
                                  "image_sha256": fewshot_requests[0].examples[1].image_sha256}
    assert key["query_text"] == QUERY_TEXT
