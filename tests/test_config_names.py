"""Names that build file paths (tasks, models, datasets, prompt variants) are
checked at load, and prompt files / recording paths cannot leave their folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.config import TaskConfig, load_config
from benchmark.core import BenchError

NAME_RULE = r"expected letters, digits, '\.', '_' or '-'"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_model_name_with_dots_and_slashes_is_rejected_at_load(tmp_path):
    user = write(tmp_path / "my.toml", '[models."../../x"]\nprovider = "openai"\nmodel = "m"\n')
    with pytest.raises(BenchError, match=r"models: model '\.\./\.\./x': " + NAME_RULE + r".*found '/'"):
        load_config(user)


def test_prompt_variant_cannot_read_a_file_outside_the_prompt_folder(tmp_path):
    # prompt folder: tmp/cfg/prompts/lsbg -> ../../../secret-notes.txt is tmp/secret-notes.txt
    write(tmp_path / "secret-notes.txt", "private text that must never reach an API")
    write(tmp_path / "cfg" / "prompts" / "lsbg" / "terse.txt", "LSBG (1) or artifact (0)?")
    user = write(tmp_path / "cfg" / "my.toml", '[tasks.lsbg]\nprompts = ["../../../secret-notes"]\n')
    with pytest.raises(BenchError, match=r"tasks\.lsbg\.prompts: prompt variant '\.\./\.\./\.\./secret-notes': "
                                         + NAME_RULE):
        load_config(user)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[models.gpt-4o]\nprompts = ["../../../secret-notes"]\n',
         r"models\.gpt-4o\.prompts: prompt variant '\.\./\.\./\.\./secret-notes'"),
        ('[datasets."../evil"]\nformat = "folder"\npath = "x"\n', r"datasets: dataset '\.\./evil'"),
        ('[tasks."../t"]\ndataset = "lsbg"\nclasses = ["a", "b"]\n', r"tasks: task '\.\./t'"),
        ('[thresholds]\n"lsbg/gpt-4o/.." = 0.5\n', r"thresholds\.'lsbg/gpt-4o/\.\.': prompt variant '\.\.'"),
        ('[models."a+b"]\nmodel = "m"\n', r"model 'a\+b': .*found '\+'"),
        ('[models.".hidden"]\nmodel = "m"\n', r"model '\.hidden': .*found '\.' at the start"),
        ('[models."a..b"]\nmodel = "m"\n', r"model 'a\.\.b': .*found '\.\.'"),
        ('[models."a b"]\nmodel = "m"\n', r"model 'a b': .*found ' '"),
        (f'[models.{"m" * 101}]\nmodel = "m"\n', r"found 101 characters"),
    ],
)
def test_unsafe_names_are_rejected_at_load(tmp_path, text, message):
    with pytest.raises(BenchError, match=message):
        load_config(write(tmp_path / "bad.toml", text))


def test_safe_names_are_accepted(tmp_path):
    user = write(tmp_path / "my.toml", """
[datasets.my_set-2]
format = "folder"
path = "images"

[tasks."Toy.v2"]
dataset = "my_set-2"
classes = ["a", "b"]
prompts = ["terse_v2", "paper.1"]

[models.Qwen2-VL-7B_local]
model = "Qwen/Qwen2-VL-7B-Instruct"
base_url = "http://127.0.0.1:8000/v1"
prompts = ["terse_v2"]

[thresholds]
"Toy.v2/Qwen2-VL-7B_local/terse_v2" = 0.5
""")
    for c in ("a", "b"):  # the folder is listed at load (never decoded)
        write(tmp_path / "images" / c / "1.png", "")
    write(tmp_path / "prompts" / "Toy.v2" / "terse_v2.txt", "a or b?")
    write(tmp_path / "prompts" / "Toy.v2" / "paper.1.txt", "a or b, please?")
    cfg = load_config(user)
    assert cfg.tasks["Toy.v2"].prompt_text("terse_v2") == "a or b?"  # as written, nothing added
    assert cfg.threshold("Toy.v2", "Qwen2-VL-7B_local", "terse_v2") == 0.5
    # the built-in names all pass
    assert {"gpt-4o", "llava-next"} <= set(cfg.models)
    assert {"lsbg", "morphology", "morphology-merged"} <= set(cfg.tasks)
    assert cfg.tasks["lsbg"].prompt_text("paper-llava")


def test_prompt_path_refuses_a_file_that_resolves_outside_its_folder(tmp_path):
    secret = write(tmp_path / "secret.txt", "private")
    folder = tmp_path / "prompts" / "toy"
    folder.mkdir(parents=True)
    (folder / "evil.txt").symlink_to(secret)
    write(folder / "ok.txt", "fine")
    task = TaskConfig(name="toy", classes=("a", "b"), dataset="d", sample_size=None,
                      prompts=("ok",), prompt_dirs=(folder,))
    assert task.prompt_text("ok") == "fine"
    with pytest.raises(BenchError, match=r"prompt variant 'evil': expected its file inside .*found .*secret\.txt"):
        task.prompt_text("evil")
    with pytest.raises(BenchError, match=r"prompt variant '\.\./\.\./secret'"):
        task.prompt_text("../../secret")


def test_check_name_returns_the_name_or_says_what_is_wrong():
    from benchmark.config import check_name

    assert check_name("model", "gpt-4o") == "gpt-4o"
    assert check_name("task", "morphology-merged") == "morphology-merged"
    for bad in ("a+b", "a/b", "..", "", "x\n", "a\\b", "é"):
        with pytest.raises(BenchError, match=r"^model "):
            check_name("model", bad)
    with pytest.raises(BenchError, match=r"model 3: expected a string name, found int"):
        check_name("model", 3)  # type: ignore[arg-type]


def test_safe_join_stays_inside_its_root(tmp_path):
    from benchmark.config import safe_join

    assert safe_join(tmp_path, "lsbg", "lsbg+gpt-4o+paper.jsonl") == tmp_path / "lsbg" / "lsbg+gpt-4o+paper.jsonl"
    for parts in (("..", "x.jsonl"), ("a", "../../x"), ("/etc/passwd",), (".",)):
        with pytest.raises(BenchError, match=r"expected a path inside .*found "):
            safe_join(tmp_path, *parts)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(BenchError, match="expected a path inside"):
        safe_join(tmp_path, "link", "x.jsonl")
