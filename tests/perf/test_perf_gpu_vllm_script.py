"""tests/perf/gpu_vllm.py (a script: LLaVA-NeXT served by vLLM on a GPU) has its pure-Python
parts checked here: the vllm command, the model folder it serves, and the measuring client,
run against the loopback stub instead of vLLM. Nothing is timed or asserted about speed."""

from __future__ import annotations

import json

import pytest

from tests.perf import gpu_vllm
from tests.support.openai_stub import OpenAIStub


def test_vllm_command_serves_the_folder_with_random_weights(tmp_path):
    args = gpu_vllm.parse_args(["--tensor-parallel-size", "2", "--vllm-arg=--enforce-eager", "--model", "llava"])
    command = gpu_vllm.vllm_command(args, tmp_path / "model", 8123)
    assert command == ["vllm", "serve", str(tmp_path / "model"), "--load-format", "dummy",
                       "--served-model-name", "llava", "--host", "127.0.0.1", "--port", "8123",
                       "--tensor-parallel-size", "2", "--max-model-len", "4096", "--dtype", "float16",
                       "--seed", "0", "--enforce-eager"]
    assert args.concurrency == [1, 8, 32]


@pytest.mark.parametrize("levels", ["", "0,4", "two"])
def test_bad_concurrency_levels_are_refused(levels, capsys):
    with pytest.raises(SystemExit):
        gpu_vllm.parse_args(["--concurrency", levels])
    assert "expected --concurrency" in capsys.readouterr().err


def test_model_folder_has_the_architecture_and_no_weights(tmp_path):
    pytest.importorskip("transformers")
    folder = gpu_vllm.write_model_folder(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlavaNextForConditionalGeneration"]
    assert (config["text_config"]["hidden_size"], config["text_config"]["num_hidden_layers"],
            config["vision_config"]["image_size"], config["text_config"]["vocab_size"]) == (4096, 32, 336, 32064)
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer["tokenizer_class"] == "PreTrainedTokenizerFast" and "[INST]" in tokenizer["chat_template"]
    assert (folder / "preprocessor_config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert not [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt")]


def test_measures_generate_and_score_through_the_provider(capsys):
    with OpenAIStub() as stub:
        assert gpu_vllm.main(["--server", stub.base_url, "--model", "stub-vlm", "--images", "6",
                              "--gen-images", "4", "--concurrency", "1,3"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("mode "):].splitlines()
    assert table[0].split() == ["mode", "concurrency", "images", "wall", "s", "images/s", "tokens", "out/answer",
                                "with", "a", "class", "failed"]
    rows = [line.split() for line in table[1:5]]
    assert [(r[0], r[1], r[2], r[6], r[7]) for r in rows] == [
        ("generate", "1", "4", "4/4", "0"), ("generate", "3", "4", "4/4", "0"),
        ("score", "1", "6", "6/6", "0"), ("score", "3", "6", "6/6", "0")]
    assert [r[5] for r in rows] == ["5.0", "5.0", "5.0", "5.0"]  # the stub's completion_tokens
    assert table[5].startswith("concurrency 1: score / generate = ") and table[6].startswith("concurrency 3: ")
    bodies = [r["body"] for r in stub.requests]
    generate = [b for b in bodies if not b.get("logprobs")]
    score = [b for b in bodies if b.get("logprobs")]
    # warm-up (1 and 3 requests) plus the timed runs
    assert len(generate) == 1 + 3 + 2 * 4 and len(score) == 1 + 3 + 2 * 6
    assert {b["max_tokens"] for b in generate} == {200} and {b["model"] for b in bodies} == {"stub-vlm"}
    assert {(b["max_tokens"], b["top_logprobs"]) for b in score} == {(1, 20)}


def test_without_vllm_it_says_how_to_get_it(capsys):
    assert gpu_vllm.main(["--vllm", "/no/such/vllm"]) == 2
    assert "not found: install vLLM on a GPU machine" in capsys.readouterr().out
