"""The built-in prompt files, pinned byte for byte (see cases/prompts/README.md).

``paper.txt``: the GPT-4o prompts of the paper's Figure 1 (the notebook text with the
figure's changes, and our completion of the figure's cut-off last line).
``paper-llava.txt``: the notebook's LLaVA ``prompt_template`` strings, byte for byte.
The notebook texts are copied below from the reference notes
(``shared/paper/reference.md``); when that file is present they are also checked against it.

Also here: the proposed ``bench.toml`` change that pins GPT-4o to the paper's snapshot and
adds the moving alias as a measurement row loads and plans as intended.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

from benchmark.config import load_config
from benchmark.planning import plan_cases

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "cases" / "prompts"
REFERENCE_CANDIDATES = (REPO / "shared" / "paper" / "reference.md", REPO.parent / "shared" / "paper" / "reference.md")

# The notebook's text (reference.md, "Prompts", the fenced blocks), byte for byte.
NOTEBOOK_LSBG = (
    "You are tasked to classify astronomical images. Each image belongs to one of two categories:\n"
    "\n"
    "Low Surface Brightness Galaxies (LSBG, Category 1) or non-LSBG (Category 0).\n"
    "Note that category 0 may also include parts or off-centered LSBGs.\n"
    "\n"
    "Here are some characteristics of the two categories:\n"
    "\n"
    "Category 1, LSBG: The image is dominated by a well-centered,\n"
    "circular or elliptical, diffuse galaxy-like light source. There may be some\n"
    "smaller, more compact light sources nearby.\n"
    "\n"
    "Category 0: In this category belong all the images that do not fit into the\n"
    "category 1 definiton. Examples may include: off-centered bright galaxies, diffuse light,\n"
    "bright stars, light reflections.\n"
    "\n"
    "To what category does the image belong?\n"
)
NOTEBOOK_MORPHOLOGY = (
    "You are tasked to classify images depicting galaxies, into four morphological categories:\n"
    "\n"
    "Category 0: smooth and round galaxy. Should not have signs of spires.\n"
    "\n"
    "Category 1: smooth and cigar-shaped galaxy, looks like being seen edge on. This should not have signs of "
    "spires of a spiral galaxy\n"
    "\n"
    "Category 2: edge-on-disk/spiral galaxy. This disk galaxy should have signs of spires, as seen from an "
    "edge-on perspective\n"
    "\n"
    "Category 3:  unbarred spiral galaxy. Has signs of a disk and/or spires\n"
    "\n"
    "Note that categories 1 and 2 tend to be very similar to each other.\n"
    "To categorize them, ask yourself the following question: Is this galaxy very smooth, maybe with a small "
    "bulge? Then it\n"
    "belongs to category 1. Does it have irregularities/signs of structure? Then it belongs to category 2.\n"
    "\n"
    "To which category does the image belong?\n"
)
NOTEBOOK = {"lsbg": NOTEBOOK_LSBG, "morphology": NOTEBOOK_MORPHOLOGY}

CLOSING = "Respond with a number only."  # Figure 1 shows "Respond with a nu"; "mber only." is ours
FIRST_LINE = {
    "lsbg": "You are tasked with classifying astronomical images. Each image belongs to one of two categories:",
    "morphology": "You are tasked with classifying images depicting galaxies, into four morphological categories:",
}
FIGURE_1 = {  # the figure's words, and the notebook's words they replace
    "lsbg": [("You are tasked with classifying", "You are tasked to classify")],
    "morphology": [("You are tasked with classifying", "You are tasked to classify"),
                   ("This disk galaxy show signs of spires", "This disk galaxy should have signs of spires")],
}
# What paper.txt is: the notebook text, Figure 1's changes, our closing line.
PAPER = {
    "lsbg": NOTEBOOK_LSBG.replace("tasked to classify", "tasked with classifying", 1) + CLOSING + "\n",
    "morphology": NOTEBOOK_MORPHOLOGY.replace("tasked to classify", "tasked with classifying", 1)
    .replace("This disk galaxy should have", "This disk galaxy show", 1) + CLOSING + "\n",
}


def read(task: str, variant: str) -> str:
    data = (PROMPTS / task / f"{variant}.txt").read_bytes()
    assert b"\r" not in data and b"\t" not in data
    return data.decode("utf-8")


@pytest.mark.parametrize("task", ["lsbg", "morphology"])
def test_paper_prompt_is_figure_1(task):
    text = read(task, "paper")
    lines = text.split("\n")
    assert lines[0] == FIRST_LINE[task]
    assert lines[-2:] == [CLOSING, ""]  # the last line, then the file's one final newline
    assert lines[-3] == ("To what category does the image belong?" if task == "lsbg"
                         else "To which category does the image belong?")
    for figure, notebook in FIGURE_1[task]:
        assert text.count(figure) == 1
        assert notebook not in text
    assert "Respond with a nu" in text
    assert "tasked to classify" not in text and "should have signs of spires" not in text
    quirk = "category 1 definiton." if task == "lsbg" else "Category 3:  unbarred spiral galaxy."
    assert quirk in text  # the source's typo / double space, kept
    assert text == PAPER[task]


def test_paper_prompts_exact_closing_lines():
    assert read("lsbg", "paper").endswith("To what category does the image belong?\nRespond with a number only.\n")
    assert read("morphology", "paper").endswith(
        "To which category does the image belong?\nRespond with a number only.\n")
    morph = read("morphology", "paper").split("\n")
    assert morph[6] == ("Category 2: edge-on-disk/spiral galaxy. This disk galaxy show signs of spires, "
                        "as seen from an edge-on perspective")


@pytest.mark.parametrize("task", ["lsbg", "morphology"])
def test_paper_llava_prompt_is_the_notebook_template(task):
    """The notebook's ``prompt_template`` begins and ends with a newline; the file holds it exactly."""
    text = read(task, "paper-llava")
    assert text == "\n" + NOTEBOOK[task]
    assert text.startswith("\nYou are tasked to classify") and text.endswith("belong?\n")
    assert "tasked with classifying" not in text and "Respond with" not in text
    # what the benchmark sends is the file, byte for byte
    assert load_config().tasks[task].prompt_text("paper-llava") == text
    assert load_config().tasks[task].prompt_text("paper") == PAPER[task]


def _reference() -> str:
    for path in REFERENCE_CANDIDATES:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    pytest.skip("shared/paper/reference.md is not in this checkout")


def test_notebook_texts_here_are_the_reference_notes():
    ref = _reference()
    blocks = dict(re.findall(r"^(LSBG|Morphology):\n\n```\n(.*?)```", ref, re.DOTALL | re.MULTILINE))
    assert blocks == {"LSBG": NOTEBOOK_LSBG, "Morphology": NOTEBOOK_MORPHOLOGY}
    assert "\"You are tasked with classifying ...\"" in ref and "Respond with a nu" in ref
    assert "This disk galaxy show signs of spires" in ref


def test_extract_prompts_are_the_notebook_structured_prompts():
    ref = _reference()
    for var, task in (("structured_prompt_LSBG", "lsbg"), ("structured_prompt_morphology", "morphology")):
        literal = re.search(r"\(`" + var + r"`\):\n\n```python\n(.*?)\n```", ref, re.DOTALL)
        assert literal is not None
        path = PROMPTS / task / "extract-paper.txt"
        if not path.is_file():
            pytest.skip(f"{path} is not in this checkout")
        assert path.read_bytes().decode("utf-8") == ast.literal_eval(literal.group(1))


# -- the proposed bench.toml change: the paper's snapshot, and the moving alias as a measurement --
SNAPSHOT_TOML = textwrap.dedent("""\
    [models.gpt-4o]
    model = "gpt-4o-2024-05-13"
    prices = { input_per_mtok = 5.00, output_per_mtok = 15.00 }

    [models.gpt-4o-current]
    provider = "openai"
    model = "gpt-4o"
    enabled = false
    api_key_env = "OPENAI_API_KEY"
    temperature = 0
    max_tokens = 20
    concurrency = 8
    prices = { input_per_mtok = 2.50, output_per_mtok = 10.00 }
""")


def test_snapshot_pin_and_current_alias_load(tmp_path):
    user = tmp_path / "bench-snapshot.toml"
    user.write_text(SNAPSHOT_TOML)
    cfg = load_config(user)
    pinned, current = cfg.models["gpt-4o"], cfg.models["gpt-4o-current"]
    assert pinned.model == "gpt-4o-2024-05-13" and pinned.enabled
    assert current.model == "gpt-4o" and not current.enabled
    assert current.provider == pinned.provider == "openai"
    # same settings; only the model id and the prices differ (the snapshot is priced as gpt-4o-extract is)
    assert {k: v for k, v in current.settings.items() if k != "prices"} == \
        {k: v for k, v in pinned.settings.items() if k != "prices"}
    assert pinned.settings["prices"] == cfg.models["gpt-4o-extract"].settings["prices"] == \
        {"input_per_mtok": 5.00, "output_per_mtok": 15.00}
    assert current.settings["prices"] == {"input_per_mtok": 2.50, "output_per_mtok": 10.00}
    # the paper's case runs the snapshot by default; the alias only when named, with no threshold
    assert [c.id for c in plan_cases(cfg) if c.model.provider == "openai"] == \
        ["lsbg-gpt-4o", "morphology-gpt-4o", "morphology-merged-gpt-4o"]
    named = plan_cases(cfg, models=["gpt-4o-current"])
    assert [c.id for c in named] == ["lsbg-gpt-4o-current", "morphology-gpt-4o-current",
                                     "morphology-merged-gpt-4o-current"]
    assert all(c.prompt == "paper" for c in named)
    assert all(cfg.threshold(c.task.name, "gpt-4o-current", c.prompt) is None for c in named)
    assert cfg.threshold("lsbg", "gpt-4o", "paper") == 0.80
