"""One typed schema (benchmark.schema), checked at load: every config mistake is a
BenchError naming the table and key, what was expected, what was found and, for a
misspelling, the likely key or choice; before any dataset is touched or model called."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from benchmark import schema
from benchmark.config import BUILTIN_CONFIG, load_config, parse_config
from benchmark.core import BenchError

REPO = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(BenchError) as info:
        load_config(write(tmp_path / "bad.toml", text))
    return str(info.value)


@pytest.mark.parametrize(("text", "parts"), [
    ("[models.gpt-4o]\ntemprature = 0\n",
     [("models.gpt-4o: unknown keys ['temprature'] for provider 'openai' (did you mean 'temperature'?); expected "
       "some of ["), "'temperature'"]),
    ("[models.gpt-4o]\nconcurrancy = 2\n",
     ["models.gpt-4o: unknown keys ['concurrancy']", "(did you mean 'concurrency'?)"]),
    ('[tasks.lsbg]\nclases = ["artifact", "LSBG"]\n',
     ["tasks.lsbg: unknown keys ['clases'] (did you mean 'classes'?); expected some of ["]),
    ('[models.mine]\nprovider = "opnai"\nmodel = "m"\n',
     ["models.mine: expected 'provider' one of ['openai', 'transformers'", "found 'opnai'; did you mean 'openai'?"]),
    ("[models.gpt-4o]\nmax_tokens = -1\n", ["models.gpt-4o: expected 'max_tokens' an integer >= 1, found -1"]),
    ('[models.gpt-4o]\ndetail = "hgih"\n',
     ["models.gpt-4o: expected 'detail' one of ['low', 'high', 'auto'], found 'hgih'; did you mean 'high'?"]),
    ('[models.gpt-4o]\ntemperature = "hot"\n',
     ["models.gpt-4o: expected 'temperature' a number in [0, 2], found 'hot'"]),
    ("[models.gpt-4o]\ntimeout_s = -5\n", ["models.gpt-4o: expected 'timeout_s' a number > 0, found -5"]),
    ('[thresholds]\n"lsbg/gpt-4o/papr" = 0.5\n',
     [("thresholds.'lsbg/gpt-4o/papr': expected a prompt variant that lsbg x gpt-4o runs (paper, paper-permuted), "
       "found 'papr'; did you mean 'paper'?")]),
    ('[thresholds]\n"morphology-merged/llava-next/paper" = 0.5\n',  # llava-next runs paper-llava only
     ["expected a prompt variant that morphology-merged x llava-next runs (paper-llava), found 'paper'"]),
    ('[datasets.galaxy-mnist]\nformat = "foldr"\n',
     [("datasets.galaxy-mnist: expected 'format' one of ['lsbg-npy', 'galaxy-mnist-hdf5-gz', 'folder'], "
       "found 'foldr'; did you mean 'folder'?")]),
    ('[tasks.lsbg]\nclasses = ["artifact", "LSBG", "star"]\n',
     ["tasks.lsbg: expected 2 class names (dataset 'lsbg' has 2 classes), found 3"]),
    ('[tasks.lsbg]\ndataset = "lsgb"\n', ["tasks.lsbg: dataset 'lsgb' is not defined", "did you mean 'lsbg'?"]),
    ('[models.llava-next]\nmode = "scor"\n', ["found 'scor'; did you mean 'score'?"]),
    ('[models.llava-next]\nextract_with = "gpt4o"\n',
     ["extract_with 'gpt4o' is not a model", "did you mean 'gpt-4o'?"]),
    ("[models.llava-next]\nbatch_size = true\n",
     ["models.llava-next: expected 'batch_size' an integer >= 1, found True"]),
    ('[models.llava-next]\ntemperature = 0\n', ["unknown keys ['temperature'] for provider 'transformers'"]),
    ('[taks.x]\n', ["unknown top-level tables ['taks'] (did you mean 'tasks'?)"]),
    ('[datasets.lsbg]\nlabels = "y.npy"\n', ["datasets.lsbg: expected 'labels' to name an entry of 'files'"]),
    ('[datasets.galaxy-mnist.files]\n"train_dataset.hdf5.gz" = { url = "https://h/x", checksum = "md5:12" }\n',
     ["datasets.galaxy-mnist.files.'train_dataset.hdf5.gz': expected 'checksum' \"algo:hex\""]),
    ('[tasks.morphology-merged]\nsample_size = 10\n', ["a derived task takes its data and prompts from 'morphology'"]),
])
def test_each_mistake_is_a_usage_error_naming_key_expected_found_and_a_suggestion(tmp_path, text, parts):
    message = error_of(tmp_path, text)
    for part in parts:
        assert part in message


def test_every_mistake_is_reported_at_once(tmp_path):
    message = error_of(tmp_path, '[models.gpt-4o]\ntemprature = 0\ndetail = "hgih"\n[tasks.lsbg]\nsample_size = 0\n')
    lines = message.splitlines()
    assert lines[0].startswith("3 mistakes in ") and lines[0].endswith("bad.toml:")
    assert any("'temprature'" in line for line in lines) and any("'hgih'" in line for line in lines)
    assert any("tasks.lsbg: expected 'sample_size' an integer >= 1 or \"all\", found 0" in line for line in lines)


def test_a_key_written_where_its_name_belongs_is_never_echoed(tmp_path):
    message = error_of(tmp_path, '[models.gpt-4o]\napi_key_env = "sk-live-SECRET-123"\n')
    assert "models.gpt-4o: expected 'api_key_env' the NAME of the environment variable" in message
    assert "SECRET" not in message


def test_values_reach_the_providers_as_written(tmp_path):
    from benchmark.providers.openai_chat import settings_from

    model = load_config(write(tmp_path / "ok.toml", "[models.gpt-4o]\ntimeout_s = 5\n")).models["gpt-4o"]
    assert model.settings == {"api_key_env": "OPENAI_API_KEY", "temperature": 0, "max_tokens": 20,
                              "concurrency": 8, "timeout_s": 5,
                              "prices": {"input_per_mtok": 5.0, "output_per_mtok": 15.0}}
    settings = settings_from(model)
    assert type(settings["temperature"]) is int  # 0 stays 0: it is part of the recording key
    assert settings["max_retries"] == 6 and settings["detail"] is None


def test_the_providers_take_their_keys_and_defaults_from_the_schema():
    from benchmark.config import ModelConfig
    from benchmark.providers import hf, openai_chat

    assert openai_chat._SETTINGS is schema.OPENAI_SETTINGS and hf.SETTINGS is schema.HF_SETTINGS
    assert schema.OPENAI_SETTINGS["temperature"] == 0.0 and schema.HF_SETTINGS["max_new_tokens"] == 200
    with pytest.raises(BenchError, match=r"^models\.m: expected 'detail' one of .*did you mean 'high'\?$"):
        openai_chat.settings_from(ModelConfig("m", "openai", "x", settings={"detail": "hgih"}))


def test_dataset_keys_agree_with_the_loaders():
    from benchmark import datasets

    for cls in (schema.LsbgNpy, schema.GalaxyMnist, schema.Folder):
        fmt = cls.model_fields["format"].annotation.__args__[0]
        required, optional = datasets._FORMAT_KEYS[fmt]
        assert set(cls.model_fields) == required | optional | datasets._META_KEYS
        assert {k for k, f in cls.model_fields.items() if f.is_required()} == required | {"format"}
        assert cls.model_fields["n_classes"].default == datasets._DEFAULT_N_CLASSES.get(fmt)


# -- folder datasets: listed (never decoded) at load ------------------------------------
def image_folder(root: Path, per_class: int = 5, classes: tuple[str, ...] = ("a", "b")) -> Path:
    for c in classes:
        for i in range(per_class):
            write(root / c / f"{i}.png", "not decoded at load")
    return root


FOLDER_TASK = '[datasets.imgs]\nformat = "folder"\npath = "imgs"\n{extra}\n[tasks.lens]\ndataset = "imgs"\n{task}\n'


@pytest.fixture
def folder_config(tmp_path):
    image_folder(tmp_path / "imgs")
    write(tmp_path / "prompts" / "lens" / "paper.txt", "0 or 1?")
    return lambda task, extra="": write(tmp_path / "my.toml", FOLDER_TASK.format(task=task, extra=extra))


@pytest.mark.parametrize(("extra", "task", "message"), [
    ('classes = ["a", "b"]', 'classes = ["x", "y", "z"]',
     "tasks.lens: expected 2 class names (dataset 'imgs' has 2 classes), found 3: ['x', 'y', 'z']"),
    ("", 'classes = ["x", "y", "z"]',
     "tasks.lens: expected 2 class names, one per class folder of dataset 'imgs' (['a', 'b'] in "),
    ("", 'classes = ["x", "y"]\nsample_size = 500',
     "tasks.lens: expected 'sample_size' <= 10 (the images of dataset 'imgs' in "),
    ('classes = ["a", "c"]', 'classes = ["x", "y"]', "has sub-folders ['b'] that are not in classes ['a', 'c']"),
])
def test_folder_datasets_are_checked_against_their_tasks_at_load(folder_config, extra, task, message):
    with pytest.raises(BenchError) as info:
        load_config(folder_config(task, extra))
    assert message in str(info.value)


def test_a_folder_dataset_is_listed_not_decoded(folder_config):
    cfg = load_config(folder_config('classes = ["x", "y"]\nsample_size = 10'))  # the "images" are text
    assert cfg.tasks["lens"].sample_size == 10


def test_a_missing_folder_is_an_error_at_load_unless_a_frozen_sample_stands_in(tmp_path, monkeypatch):
    write(tmp_path / "prompts" / "lens" / "paper.txt", "0 or 1?")
    cfg = write(tmp_path / "my.toml", FOLDER_TASK.format(extra="", task='classes = ["x", "y"]'))
    monkeypatch.setenv("ASTROBENCH_FIXTURES_DIR", str(tmp_path / "frozen"))
    with pytest.raises(BenchError, match=r"datasets\.imgs: expected an image folder with one sub-folder per class "
                                         r"at .*imgs, found nothing \(and no frozen sample .*imgs\.npz\)"):
        load_config(cfg)
    write(tmp_path / "frozen" / "imgs.npz", "")  # the only copy of a folder that is gone
    assert load_config(cfg).tasks["lens"].dataset == "imgs"


def test_registered_providers_beyond_the_built_in_ones_keep_their_own_settings(monkeypatch):
    from benchmark.providers import PROVIDERS

    monkeypatch.setitem(PROVIDERS, "fake", "tests.nowhere:Fake")
    raw = {"models": {"m": {"provider": "fake", "model": "x", "anything": 1}}}
    assert parse_config(raw).models["m"].settings == {"anything": 1}
    with pytest.raises(BenchError, match=r"models\.m: expected 'enabled' true or false, found 'yes'"):
        parse_config({"models": {"m": {"provider": "fake", "model": "x", "enabled": "yes"}}})
    with pytest.raises(BenchError, match=r"expected 'provider' one of \['openai', 'transformers', 'fake'\], "
                                         r"found 'fak'; did you mean 'fake'\?"):
        parse_config({"models": {"m": {"provider": "fak", "model": "x"}}})


# -- the published JSON Schema ----------------------------------------------------------
def test_published_json_schema_is_the_generated_one():
    published = REPO / "cases" / "bench.schema.json"
    assert published.read_text() == schema.schema_text(), (
        "cases/bench.schema.json is stale: run `python -m benchmark.schema > cases/bench.schema.json`")
    doc = json.loads(published.read_text())
    assert doc["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert set(doc["properties"]) == {"tasks", "datasets", "models", "thresholds"}
    assert "null" not in published.read_text()  # TOML has no null


def test_bench_toml_names_its_schema_in_a_comment_tomllib_ignores():
    first = BUILTIN_CONFIG.read_text().splitlines()[0]
    assert first == "#:schema ./bench.schema.json"
    assert (BUILTIN_CONFIG.parent / first.split()[1]).is_file()
    assert set(tomllib.loads(BUILTIN_CONFIG.read_text())) == {"tasks", "datasets", "models", "thresholds"}


def test_schema_module_prints_the_schema():
    proc = subprocess.run([sys.executable, "-m", "benchmark.schema"], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == schema.schema_text()


# -- end to end: a usage error before anything is downloaded --------------------------
@pytest.mark.parametrize("via", ["--bench-config", "$ASTROBENCH_CONFIG"])
def test_pytest_cases_with_a_misspelt_key_is_a_usage_error_before_any_download(tmp_path, via):
    bad = write(tmp_path / "bad.toml", "[models.gpt-4o]\ntemprature = 0\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**os.environ, "ASTROBENCH_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    env.pop("ASTROBENCH_CONFIG", None)
    args = ["--bench-config", str(bad)] if via == "--bench-config" else []
    if via == "$ASTROBENCH_CONFIG":
        env["ASTROBENCH_CONFIG"] = str(bad)
    proc = subprocess.run([sys.executable, "-m", "pytest", "cases", *args, "-p", "no:cacheprovider"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out  # pytest's usage error
    assert out.count("unknown keys ['temprature']") == 1, out
    assert "did you mean 'temperature'?" in out
    assert list(cache.iterdir()) == []  # nothing downloaded, not even a folder made
