"""The paper's LLaVA method, exactly: the input string byte for byte, the two-part
extraction call with the notebook's parameters, and a replay that needs neither a
server, a key, the Hugging Face hub nor torch."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmark.config import load_config
from tests.support.folder_task import KEY, FakeLocalProvider, folder_world
from tests.support.openai_stub import OpenAIStub

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO.parent / "shared" / "paper" / "reference.md"


def reference_texts() -> tuple[list[str], list[str]]:
    """The notebook's task prompts and extraction prompts, from the paper's reference notes."""
    if not REFERENCE.exists():
        pytest.skip(f"no {REFERENCE}")
    ref = REFERENCE.read_text()
    prompts = re.findall(r"```\n(You are tasked to classify.*?)```", ref, re.S)
    extract = [ast.literal_eval(block) for block in re.findall(r"```python\n(.*?)\n```", ref, re.S)]
    return prompts, extract


def test_builtin_prompt_files_are_the_notebooks_bytes():
    prompts, extract = reference_texts()
    config = load_config()
    for task, text, instruction in zip(("lsbg", "morphology"), prompts, extract, strict=True):
        # the notebook's prompt_template begins and ends with a newline
        assert config.tasks[task].prompt_text("paper-llava") == "\n" + text
        assert config.tasks[task].prompt_text("extract-paper") == instruction
    assert config.tasks["lsbg"].prompt_text("extract-paper").startswith(
        "\nYou will receive some text, that says that an input image describes either a Low surface")


def test_llava_input_string_is_the_notebooks_literal(tiny_llava_dir):
    from benchmark.config import ModelConfig
    from benchmark.core import Request
    from benchmark.providers.hf import TransformersProvider

    config = load_config()
    model = ModelConfig("tiny", "transformers", str(tiny_llava_dir), settings={"prompt_format": "paper"})
    provider = TransformersProvider.from_config(model)
    text = provider.prompt_text(Request("0", config.tasks["lsbg"].prompt_text("paper-llava"), None, 2))
    assert text.startswith("USER: <image>\n\nYou are tasked to classify astronomical images. Each image belongs "
                           "to one of two categories:\n\nLow Surface Brightness Galaxies (LSBG, Category 1) or")
    assert text.endswith("bright stars, light reflections.\n\nTo what category does the image belong?\n\nASSISTANT:")
    prompts, _ = reference_texts()
    assert text == "USER: <image>\n" + "\n" + prompts[0] + "\nASSISTANT:"


class VerboseLocal(FakeLocalProvider):
    """An in-process model that answers like LLaVA: verbose text, no class of its own."""

    kind = "verbose-local"

    def text(self, request) -> str:
        return (f" The image shows sample {request.sample_id}: Category 0, as it does not fit "
                "into the category 1 definition.")


def test_the_extraction_call_is_the_notebooks_and_replays_without_a_server(tmp_path, monkeypatch):
    from benchmark.providers import PROVIDERS
    from tests.support.folder_task import run_case, session

    monkeypatch.setitem(PROVIDERS, "verbose-local", f"{__name__}:VerboseLocal")
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    instruction = reference_texts()[1][0]
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 4)
        (tmp_path / "prompts" / "toy" / "extract-paper.txt").write_text(instruction)
        extractor = dict(raw["models"]["stub"], model="gpt-4o-2024-05-13", temperature=0.0, max_tokens=200, n=1,
                         enabled=False)
        raw["models"] = {"llava": {"provider": "verbose-local", "model": "x", "extract_with": "gpt-extract"},
                         "gpt-extract": extractor}
        recorded = run_case(session(raw, tmp_path, "once"))
        bodies = [r["body"] for r in stub.requests]
    assert len(bodies) == 4
    for body, pred in zip(sorted(bodies, key=lambda b: b["messages"][0]["content"][1]["text"]),
                          sorted(recorded.predictions, key=lambda p: p["raw"])):
        assert body == {"model": "gpt-4o-2024-05-13", "temperature": 0.0, "max_tokens": 200, "n": 1,
                        "messages": [{"role": "user", "content": [{"type": "text", "text": instruction},
                                                                  {"type": "text", "text": pred["raw"]}]}]}
    assert recorded.method == "extract (gpt-extract)"
    assert [p["parsed"] for p in recorded.predictions] == [0, 0, 0, 0]  # the stub answers "0"
    # replay: the server is gone, the key unset, the local model never asked
    monkeypatch.delenv("ASTROBENCH_TEST_KEY")
    calls = VerboseLocal.calls
    replayed = run_case(session(raw, tmp_path, "none"))
    assert replayed.scores == recorded.scores and VerboseLocal.calls == calls


REPLAY_SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None          # import torch fails: replay must not need it
    sys.modules["transformers"] = None   # nor transformers (so nor the hub)
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from benchmark.config import parse_config
    from benchmark.planning import plan_cases
    from benchmark.session import BenchSession
    raw = {raw!r}
    config = parse_config(raw, prompt_dirs={{"toy": [Path({prompts!r})]}})
    bench = BenchSession(config, cassette_dir=Path({cassettes!r}), record_mode="none", frozen_dir=Path({frozen!r}),
                         progress=False)
    result = bench.run(plan_cases(config)[0])
    print("REPLAYED", result.scores.n, result.cached, result.scores.accuracy)
""")


def test_a_recorded_llava_case_replays_without_hub_cache_or_torch(tiny_llava_dir, tmp_path):
    """Recorded with the tiny model; replayed in a process where torch and transformers
    cannot be imported and the model folder is gone."""
    from tests.support.folder_task import run_case, session

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_llava_dir, model_dir)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 4)
    raw["models"] = {"tiny": {"provider": "transformers", "model": str(model_dir), "prompt_format": "paper",
                              "mode": "generate", "max_new_tokens": 3, "batch_size": 2}}
    recorded = run_case(session(raw, tmp_path, "once"))
    shutil.rmtree(model_dir)  # no weights, no processor, no cache
    script = REPLAY_SCRIPT.format(repo=str(REPO), raw=raw, prompts=str(tmp_path / "prompts" / "toy"),
                                  cassettes=str(tmp_path / "cassettes-from-test-server"),
                                  frozen=str(tmp_path / "frozen"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"REPLAYED 4 4 {recorded.scores.accuracy}" in proc.stdout


def test_the_pil_image_processor_is_used_whatever_is_installed(tiny_llava_dir, monkeypatch):
    """The authors' pixels: the slow (PIL) image processor, chosen explicitly (with torchvision
    installed, transformers would pick the fast one by default)."""
    import transformers

    from benchmark.config import ModelConfig
    from benchmark.providers.hf import TransformersProvider

    asked: list[dict] = []
    real = transformers.AutoProcessor.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        asked.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", classmethod(spy))
    provider = TransformersProvider.from_config(ModelConfig("tiny", "transformers", str(tiny_llava_dir)))
    image_processor = provider.processor.image_processor
    assert asked == [{"use_fast": False}]
    assert not getattr(image_processor, "is_fast", False)
    assert not type(image_processor).__name__.endswith("Fast")


def test_an_extractor_reply_without_a_class_is_no_class_not_a_guess_from_the_models_text():
    """The paper's second step decides: when the extractor's reply names no class, the case counts
    the sample as unparseable; the local model's own text is not parsed instead."""
    from benchmark.core import Answer
    from benchmark.extraction import apply_extraction
    from benchmark.session import BenchSession

    answer = Answer("a", raw="The image belongs to category 1.")
    apply_extraction(answer, Answer("a", raw="I cannot tell which category."), 2, extractor="gpt-extract")
    BenchSession._read_class(answer, 2)
    assert answer.label is None
    assert answer.meta["reason"] == "the extractor's reply names no class"
