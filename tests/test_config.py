"""Config loading, merging and the clear errors for config mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.config import load_config
from benchmark.session import plan_cases
from benchmark.core import BenchError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_builtin_config_has_the_paper_tasks_and_thresholds():
    cfg = load_config()
    assert set(cfg.tasks) >= {"lsbg", "morphology", "morphology-merged"}
    assert cfg.tasks["morphology-merged"].merge_map() == [0, 1, 1, 2]
    assert cfg.threshold("lsbg", "gpt-4o", "paper") == 0.80
    assert cfg.threshold("morphology-merged", "gpt-4o", "paper") == 0.85
    lsbg = cfg.tasks["lsbg"].prompt_text("paper")
    assert lsbg.startswith("You are tasked with classifying astronomical images.")
    assert "definiton" in lsbg  # verbatim, typo included
    assert cfg.tasks["lsbg"].prompt_text("paper-llava").startswith("\nYou are tasked to classify")  # the notebook template: a newline first
    ids = [c.id for c in plan_cases(cfg)]
    assert ids == ["lsbg-gpt-4o", "morphology-gpt-4o", "morphology-merged-gpt-4o",
                   "lsbg-smolvlm", "morphology-smolvlm", "morphology-merged-smolvlm"]
    # the one open model on by default: in-process, score mode, float32, no key
    smol = cfg.models["smolvlm"]
    assert (smol.provider, smol.model, smol.enabled) == ("transformers", "HuggingFaceTB/SmolVLM-256M-Instruct", True)
    assert {k: smol.settings[k] for k in ("mode", "dtype", "image_splitting", "image_longest_edge")} == \
        {"mode": "score", "dtype": "float32", "image_splitting": False, "image_longest_edge": 512}
    assert [n for n, m in cfg.models.items() if m.enabled] == ["gpt-4o", "smolvlm"]
    assert all(cfg.threshold(t, "smolvlm", "paper") is None for t in cfg.tasks)  # nothing published to gate on


def test_user_config_merges_over_builtin(tmp_path):
    user = write(tmp_path / "my.toml", """
[models.local-vllm]
provider = "openai"
model = "Qwen/Qwen2-VL-7B-Instruct"
base_url = "http://localhost:8000/v1"
api_key_env = "VLLM_KEY"

[models.gpt-4o]
enabled = false

[tasks.lsbg]
prompts = ["paper", "terse"]

[thresholds]
"lsbg/local-vllm/terse" = 0.7
""")
    write(tmp_path / "prompts" / "lsbg" / "terse.txt", "LSBG (1) or artifact (0)? Number only.")
    cfg = load_config(user)
    assert cfg.models["gpt-4o"].enabled is False
    assert cfg.models["gpt-4o"].settings["temperature"] == 0  # kept from the built-in
    assert cfg.models["local-vllm"].settings["base_url"] == "http://localhost:8000/v1"
    task = cfg.tasks["lsbg"]
    assert task.prompt_path("terse") == tmp_path / "prompts" / "lsbg" / "terse.txt"
    assert task.prompt_path("paper").parent.name == "lsbg"  # falls back to the built-in folder
    assert cfg.threshold("lsbg", "local-vllm", "terse") == 0.7
    assert cfg.threshold("lsbg", "local-vllm", "paper") is None
    ids = [c.id for c in plan_cases(cfg, tasks=["lsbg"])]  # the built-in smolvlm stays on unless disabled
    assert ids == ["lsbg-smolvlm", "lsbg-smolvlm-terse", "lsbg-local-vllm", "lsbg-local-vllm-terse"]
    ids = [c.id for c in plan_cases(cfg, tasks=["lsbg"], models=["local-vllm"], prompts=["terse"])]
    assert ids == ["lsbg-local-vllm-terse"]


def test_env_var_names_the_user_config(tmp_path, monkeypatch):
    user = write(tmp_path / "env.toml", '[models.gpt-4o]\nconcurrency = 3\n')
    monkeypatch.setenv("ASTROBENCH_CONFIG", str(user))
    assert load_config().models["gpt-4o"].settings["concurrency"] == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[thresholds]\n"lsbg/gpt-4o" = 1.5\n',
         r"thresholds\.'lsbg/gpt-4o': expected 'min_accuracy' a number in \[0, 1\], found 1.5"),
        ('[thresholds]\n"lsbg/gpt-4o" = -0.1\n', r"found -0.1"),
        ('[thresholds]\n"lsbg/gtp-4o" = 0.5\n', r"unknown model 'gtp-4o'; known models: gpt-4o, gpt-4o-constrained, gpt-4o-current, gpt-4o-extract, llava-next, llava-next-parser"),
        ('[thresholds]\n"lsgb/gpt-4o" = 0.5\n', r"unknown task 'lsgb'"),
        ('[tasks.lsbg]\nprompts = ["nope"]\n', r"prompt variant 'nope' expects a file nope.txt in .*none exists"),
        ('[tasks.x]\ndataset = "missing"\nclasses = ["a", "b"]\n', r"dataset 'missing' is not defined"),
        ('[tasks.x]\nderived_from = "morphology"\nmerge = [[0], [1]]\nmerged_classes = ["a", "b"]\n',
         r"merge must use each class of morphology \(0..3\) exactly once"),
        ('[models.m]\nprovider = "openai"\n', r"models.m: expected 'model'"),
        ('[tasks.lsbg]\nsample_size = 0\n', r"tasks\.lsbg: expected 'sample_size' an integer >= 1 or \"all\", found 0"),
        ('[bogus]\nx = 1\n', r"unknown top-level tables \['bogus'\]"),
        ('not toml = = 1', r"not valid TOML"),
    ],
)
def test_config_mistakes_are_clear_errors(tmp_path, text, message):
    with pytest.raises(BenchError, match=message):
        load_config(write(tmp_path / "bad.toml", text))


def test_unknown_task_or_model_lists_known_names():
    cfg = load_config()
    with pytest.raises(BenchError, match=r"unknown task 'lsbgg'; known tasks: lsbg, morphology, morphology-merged"):
        plan_cases(cfg, tasks=["lsbgg"])
    with pytest.raises(BenchError, match=r"unknown model 'gpt4o'; known models: gpt-4o, gpt-4o-constrained, gpt-4o-current, gpt-4o-extract, llava-next, llava-next-parser"):
        plan_cases(cfg, models=["gpt4o"])
    with pytest.raises(BenchError, match=r"unknown prompt variant\(s\) \['nope'\]"):
        plan_cases(cfg, prompts=["nope"])


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(BenchError, match="config file not found: .*absent.toml"):
        load_config(tmp_path / "absent.toml")


def test_disabled_model_runs_when_named():
    cfg = load_config()
    cases = plan_cases(cfg, models=["llava-next"], tasks=["lsbg"])
    assert [(c.id, c.prompt) for c in cases] == [("lsbg-llava-next", "paper-llava")]


def test_prompt_variants_can_share_a_file(tmp_path):
    user = write(tmp_path / "my.toml", """
[tasks.lsbg]
prompts = ["paper", "again"]

[tasks.lsbg.variants.again]
file = "paper"
""")
    cfg = load_config(user)
    task = cfg.tasks["lsbg"]
    assert task.variant("again").file == "paper"
    assert task.variant("paper").file == "paper"  # no table: its own name
    assert task.prompt_text("again") == task.prompt_text("paper")
    assert task.variant("again").settings() == {"file": "paper"}
    assert [c.id for c in plan_cases(cfg, tasks=["lsbg"], models=["gpt-4o"])] == ["lsbg-gpt-4o",
                                                                                  "lsbg-gpt-4o-again"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[tasks.lsbg.variants.v]\nfile = "nope"\n', r"prompt variant 'v' expects a file nope.txt in .*none exists"),
        ('[tasks.lsbg.variants.v]\nfile = "../x"\n', r"tasks.lsbg.variants.v.file '../x'"),
        ('[tasks.lsbg.variants.v]\nfiel = "paper"\n', r"fiel"),
        ('[tasks.morphology-merged.variants.v]\nfile = "paper"\n', r"expected no \['variants'\]"),
        ('[tasks.lsbg]\nsample_size = 9\n[tasks.lsbg.variants.v]\nfile = "paper-blocks"\nshots = 1\n'
         'permute_labels = true\n', r"tasks.lsbg.variants.v: expected 'shots' or 'permute_labels', found both"),
    ],
)
def test_prompt_variant_mistakes_are_clear_errors(tmp_path, text, message):
    with pytest.raises(BenchError, match=message):
        load_config(write(tmp_path / "bad.toml", text))
