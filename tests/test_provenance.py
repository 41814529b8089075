"""Provenance (benchmark.provenance): what produced a run, and what differs between two runs."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

from benchmark import provenance
from benchmark.frozen import write_frozen
from benchmark.provenance import collect, differences
from tests.support.folder_task import KEY, PROMPT, folder_world, run_case, session
from tests.support.openai_stub import OpenAIStub

REPO = Path(__file__).resolve().parent.parent


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def recorded_then_replayed(tmp_path, monkeypatch, n: int = 6):
    """A folder task recorded live by the loopback stand-in, then a session that replays it."""
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, n)
        live = session(raw, tmp_path, "once")
        run_case(live)
        replay = session(raw, tmp_path, "none")
        run_case(replay)
    return raw, live, replay


def test_collect_names_what_produced_the_run(tmp_path, monkeypatch):
    raw, live, replay = recorded_then_replayed(tmp_path, monkeypatch)
    p = collect(live)
    assert json.loads(json.dumps(p)) == p  # JSON-ready
    assert p["schema"] == "astrobench-provenance/1"
    assert p["project"]["name"] == "astro-vlm-bench" and p["project"]["version"]
    assert p["python"].startswith(".".join(map(str, sys.version_info[:2])))
    assert set(p["packages"]) == {"torch", "transformers", "bitsandbytes", "accelerate", "openai", "vcrpy",
                                  "numpy", "pillow"}
    assert p["packages"]["numpy"] == np.__version__
    assert p["accelerator"]["name"] and p["accelerator"]["via"] in ("torch", "nvidia-smi", "platform")
    assert p["record_mode"] == "once" and p["limit"] is None

    assert p["models"] == {"stub": {"provider": "openai", "model": "stub-vlm", "quantization": None,
                                    "revision": None, "settings": {"base_url": raw["models"]["stub"]["base_url"]}}}
    prompt_file = tmp_path / "prompts" / "toy" / "paper.txt"
    assert p["prompts"] == {"toy/paper": {"path": str(prompt_file), "sha256": sha(prompt_file.read_bytes()),
                                          "text_sha256": live.results[0].prompt_sha256,
                                          "variant": {"file": "paper"}}}
    assert p["prompts"]["toy/paper"]["text_sha256"] == sha(live.config.tasks["toy"].prompt_text("paper").encode())
    assert p["datasets"] == {"toy": {"format": "folder", "files": {}, "path": raw["datasets"]["toy"]["path"],
                                     "frozen": None}}
    assert p["config"]["sources"] == [] and p["config"]["sha256"] is None  # built in code, no files

    case = p["cases"]["toy-stub"]
    assert case["answers"] == {"total": 6, "replayed": 0, "live": 6}
    assert case["served_model"] == ["stub-vlm"] and case["method"] == "parser" and case["model_id"] == "stub-vlm"
    assert case["sample_sha256"] == live.results[0].sample_sha256

    live.provider(live.config.models["stub"]).loaded_revision = "0123abcd"  # as an in-process model sets it
    assert collect(live)["models"]["stub"]["loaded_revision"] == "0123abcd"

    again = collect(replay)
    assert again["cases"]["toy-stub"]["answers"] == {"total": 6, "replayed": 6, "live": 0}
    assert again["record_mode"] == "none"
    assert differences(p, again) == ["note: record mode: once -> none"]


def test_differences_list_a_changed_prompt_and_model_id(tmp_path, monkeypatch):
    _, live, _ = recorded_then_replayed(tmp_path, monkeypatch)
    old = collect(live)
    assert differences(old, copy.deepcopy(old)) == []

    new = copy.deepcopy(old)
    new["prompts"]["toy/paper"]["text_sha256"] = "b" * 64
    new["prompts"]["toy/paper"]["sha256"] = "c" * 64
    new["models"]["stub"]["model"] = "stub-vlm-2024-05-13"
    new["cases"]["toy-stub"]["served_model"] = ["stub-vlm-2024-05-13"]
    new["packages"]["torch"] = "0.0.1-other"
    new["packages"]["numpy"] = "0.0.1-other"  # unrelated: not reported
    new["accelerator"] = {"name": "NVIDIA H100", "via": "nvidia-smi"}
    lines = differences(old, new)
    old_text = old["prompts"]["toy/paper"]["text_sha256"][:12]
    assert lines[:3] == [
        "model stub: model id: stub-vlm -> stub-vlm-2024-05-13",
        f"prompt toy/paper: sha256 of the text sent: {old_text} -> {'b' * 12}",
        "case toy-stub: served model: stub-vlm -> stub-vlm-2024-05-13",
    ]
    assert lines[3:] == [f"note: torch version: {old['packages']['torch']} -> 0.0.1-other",
                         f"note: accelerator: {old['accelerator']['name']} -> NVIDIA H100"]
    assert all(line.startswith("note:") for line in lines[3:])


def test_a_prompt_edited_on_disk_shows_in_the_next_run(tmp_path, monkeypatch):
    """End to end: a real edit of the prompt file changes the digest that differences() reports."""
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 4)
        first = session(raw, tmp_path, None)
        run_case(first)
        old = collect(first)
        (tmp_path / "prompts" / "toy" / "paper.txt").write_text(PROMPT + " Answer with one digit.")
        raw["models"]["stub"]["model"] = "stub-vlm-pinned"
        second = session(raw, tmp_path, None)
        run_case(second)
        new = collect(second)
    lines = differences(old, new)
    assert "model stub: model id: stub-vlm -> stub-vlm-pinned" in lines
    assert any(line.startswith("prompt toy/paper: sha256 of the text sent: ") for line in lines)
    assert not any(line.startswith("case toy-stub: model id") for line in lines)  # said once, for the model
    assert "case toy-stub: served model: stub-vlm -> stub-vlm-pinned" in lines
    assert new["record_mode"] is None and new["cases"]["toy-stub"]["answers"]["live"] == 4


def test_datasets_frozen_sample_and_config_files(tmp_path, monkeypatch):
    from benchmark.config import load_config

    _, live, _ = recorded_then_replayed(tmp_path, monkeypatch, n=4)
    spec = live.config.datasets["toy"]
    frozen = write_frozen(tmp_path / "frozen" / "toy.npz", live.samples(live.config.tasks["toy"]),
                          dataset="toy", spec=spec)
    p = collect(live)
    assert p["datasets"]["toy"]["frozen"] == {"path": str(frozen), "sha256": sha(frozen.read_bytes())}

    # dataset checksums come from the config (datasets.<name>.files.*.checksum)
    builtin = load_config()
    info = provenance.dataset_info("lsbg", builtin.datasets["lsbg"], tmp_path / "none")
    assert info["files"]["y_labels.npy"] == "git-sha1:c7767de36d1f41d5857cec9fd7af5bf6cee05039"
    assert len(info["files"]) == 6 and info["frozen"] is None
    old = {"datasets": {"lsbg": info}}
    new = copy.deepcopy(old)
    new["datasets"]["lsbg"]["files"]["X_data_1.npy"] = "git-sha1:" + "0" * 40
    new["datasets"]["lsbg"]["frozen"] = {"path": "x", "sha256": "d" * 64}
    assert differences(old, new) == [
        ("dataset lsbg: checksum of X_data_1.npy: git-sha1:c89fa107c623cab2bd3bfd673432499e98329ce8 -> "
         "git-sha1:0000000000000000000000000000000000000000"),
        f"dataset lsbg: frozen sample sha256: none -> {'d' * 12}",
    ]

    # the config's source files, hashed byte for byte in merge order
    user = tmp_path / "user.toml"
    user.write_text('[models.gpt-4o]\nmodel = "gpt-4o-2024-05-13"\n')
    digest = provenance.config_digest(load_config(user).sources)
    files = [f["sha256"] for f in digest["sources"]]
    assert files == [sha((REPO / "cases" / "bench.toml").read_bytes()), sha(user.read_bytes())]
    assert digest["sha256"] == sha("\n".join(files).encode())


def test_models_record_quantization_revision_and_answer_changing_settings_only():
    from benchmark.config import ModelConfig

    llava = ModelConfig("llava-next", "transformers", "llava-hf/llava-v1.6-mistral-7b-hf",
                        settings={"quantization": "4bit", "revision": "abc123", "mode": "generate",
                                  "device_map": "auto", "batch_size": 1})
    info = provenance.model_info(llava)
    assert info["quantization"] == "4bit" and info["revision"] == "abc123"
    assert "device_map" not in info["settings"] and info["settings"]["mode"] == "generate"
    assert provenance.model_info(ModelConfig("m", "transformers", "x"))["quantization"] == "none"
    api = ModelConfig("gpt-4o", "openai", "gpt-4o", settings={"api_key_env": "OPENAI_API_KEY", "temperature": 0,
                                                              "prices": {"input_per_mtok": 2.5}, "concurrency": 8})
    assert provenance.model_info(api) == {"provider": "openai", "model": "gpt-4o", "quantization": None,
                                          "revision": None, "settings": {"temperature": 0}}
    old = {"models": {"llava-next": info}}
    new = copy.deepcopy(old)
    new["models"]["llava-next"].update(quantization="none", revision=None)
    new["models"]["llava-next"]["settings"].update(quantization="none", revision=None, mode="score")
    assert differences(old, new) == ["model llava-next: quantization: 4bit -> none",
                                     "model llava-next: revision: abc123 -> none",
                                     "model llava-next: setting mode: generate -> score"]


def test_packages_are_read_from_metadata_without_importing_torch():
    versions = provenance.package_versions(("numpy", "surely-not-a-real-distribution-xyz"))
    assert versions == {"numpy": np.__version__, "surely-not-a-real-distribution-xyz": "not installed"}
    script = ("import sys, benchmark.provenance as p; p.package_versions(); p.accelerator(); p.project(); "
              "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_accelerator_prefers_an_imported_torch_then_nvidia_smi_then_the_cpu(monkeypatch):
    cuda = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 1,
                                 get_device_name=lambda i: "NVIDIA H100 80GB HBM3")
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    assert provenance.accelerator() == {"name": "NVIDIA H100 80GB HBM3", "via": "torch"}

    calls = []

    def smi(args, **kw):
        calls.append((args, kw["timeout"]))
        return subprocess.CompletedProcess(args, 0, stdout="NVIDIA H200\n", stderr="")

    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(provenance.subprocess, "run", smi)
    assert provenance.accelerator() == {"name": "NVIDIA H200", "via": "nvidia-smi"}
    assert calls == [(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], 5.0)]

    def missing(args, **kw):
        raise FileNotFoundError(args[0])

    monkeypatch.setattr(provenance.subprocess, "run", missing)
    monkeypatch.setattr(provenance.platform, "processor", lambda: "")
    monkeypatch.setattr(provenance.platform, "machine", lambda: "x86_64")
    assert provenance.accelerator() == {"name": "CPU x86_64", "via": "platform"}


def test_git_state_only_for_a_checkout_of_the_package(tmp_path, monkeypatch):
    assert provenance.git_state(tmp_path) is None  # not a work tree
    repo = tmp_path / "repo"
    (repo / "benchmark").mkdir(parents=True)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "f.txt").write_text("a")
    subprocess.run(["git", "-C", str(repo), "add", "f.txt"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "commit.gpgsign=false", "commit", "-qm", "x"], check=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert provenance.git_state(repo) == {"commit": head, "dirty": False}
    (repo / "f.txt").write_text("b")
    assert provenance.git_state(repo) == {"commit": head, "dirty": True}
    assert provenance.git_state(repo / "benchmark") is None  # inside, but not the top: not this package's repo

    def hangs(args, **kw):
        raise subprocess.TimeoutExpired(args, kw["timeout"])

    monkeypatch.setattr(provenance.subprocess, "run", hangs)
    assert provenance.git_state(repo) is None


def test_the_paper_llava_case_names_its_extractor_and_instruction(tmp_path):
    """llava-next reads its text with gpt-4o-extract and prompts/<task>/extract-paper.txt: both are listed."""
    from benchmark.config import load_config

    config = load_config()
    llava = config.models["llava-next"]
    result = types.SimpleNamespace(
        case_id="morphology-merged-llava-next", task="morphology-merged", model="llava-next", prompt="paper-llava",
        model_id=llava.model, prompt_sha256="", sample_sha256="", method="extract (gpt-4o-extract)",
        served_model="gpt-4o-2024-05-13", derived_from="morphology", cached=0,
        scores=types.SimpleNamespace(n=500))
    bench = types.SimpleNamespace(config=config, results=[result], record_mode="none", limit=None,
                                  frozen_dir=tmp_path)
    p = collect(bench)
    assert list(p["models"]) == ["llava-next", llava.settings["extract_with"]]
    assert p["models"]["llava-next"]["quantization"] == "4bit"
    assert list(p["prompts"]) == ["morphology/paper-llava", "morphology/extract-paper"]
    for name in p["prompts"]:
        task, variant = name.split("/")
        path = config.tasks[task].prompt_path(variant)
        assert p["prompts"][name]["sha256"] == sha(path.read_bytes())
    assert p["datasets"]["galaxy-mnist"]["files"] == {
        "train_dataset.hdf5.gz": "md5:e408ae294e9b975482dc1abffeb373a6"}
    case = p["cases"]["morphology-merged-llava-next"]
    assert case["derived_from"] == "morphology" and "answers" not in case  # a derived case asks nothing
    assert case["served_model"] == ["gpt-4o-2024-05-13"]
