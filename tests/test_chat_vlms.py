"""The transformers provider on tiny random chat-template VLMs of each architecture, on CPU, offline.

Qwen2-VL, Qwen2.5-VL, Idefics3 (what SmolVLM-256M-Instruct is) and LLaVA-OneVision, each
the real model and processor classes at toy sizes (tests.support.tiny_vlms), loaded by the
provider with ``from_pretrained`` from a folder. Asserted: the prompt each chat template
makes and where the image goes, the label tokens of each tokenizer family, batch = single
in score and generate mode, recording then replay through the session, and the image-size
settings. Never accuracy: the models are random.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from benchmark.config import ModelConfig  # noqa: E402
from benchmark.core import BenchError, Request  # noqa: E402
from benchmark.providers.hf import TransformersProvider  # noqa: E402
from tests.support.tiny_vlms import (  # noqa: E402
    ASSISTANT_OPENING,
    EXPECTED_IMAGE_TOKENS,
    IMAGE_TOKENS,
    KINDS,
    VIDEO_CAPABLE,
    build_tiny_vlm,
    install_in_hub_cache,
    processors_without_video,
    unpatched_get_attributes,
)

N_CLASSES = 4
PROMPT = "Which category?"
# The whole model input for PROMPT, per chat template (generation prompt included).
EXPECTED_PROMPTS = {
    "qwen2-vl": ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                 "<|vision_start|><|image_pad|><|vision_end|>Which category?<|im_end|>\n<|im_start|>assistant\n"),
    "idefics3": "<|im_start|>User:<image>Which category?<end_of_utterance>\nAssistant:",
    "llava-onevision": "<|im_start|>user <image>\nWhich category?<|im_end|>\n<|im_start|>assistant\n",
}
EXPECTED_PROMPTS["qwen2.5-vl"] = EXPECTED_PROMPTS["qwen2-vl"]
USER_TURN = {"qwen2-vl": "<|im_start|>user\n", "qwen2.5-vl": "<|im_start|>user\n", "idefics3": "User:",
             "llava-onevision": "<|im_start|>user "}


@pytest.fixture(scope="module", autouse=True)
def single_thread_and_no_video() -> Iterator[None]:
    """One torch thread (toy matrices: hand-offs cost more than the maths) and the
    video-free processors of tests.support.tiny_vlms where torchvision is missing."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with processors_without_video():
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=KINDS)
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    kind = request.param
    return kind, build_tiny_vlm(kind, tmp_path_factory.mktemp(f"tiny-{kind}"))


@pytest.fixture(scope="module")
def requests() -> list[Request]:
    """6 random 64x64 images (the tasks' size); prompts of different lengths, so left padding is used."""
    rng = np.random.default_rng(3)
    return [Request(f"s{i}", PROMPT + " Think." * (i % 3), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                    N_CLASSES) for i in range(6)]


_SHARED: dict[tuple[Any, ...], TransformersProvider] = {}


def make(path: Path, **settings: Any) -> TransformersProvider:
    return TransformersProvider.from_config(ModelConfig("tiny", "transformers", str(path), settings=settings))


def shared(path: Path, **settings: Any) -> TransformersProvider:
    key = (str(path), tuple(sorted(settings.items())))
    if key not in _SHARED:
        _SHARED[key] = make(path, **settings)
    return _SHARED[key]


# -- prompt and image placement ----------------------------------------------------------
def test_chat_template_prompt_and_image_placement(tiny: tuple[str, Path]) -> None:
    kind, path = tiny
    provider = shared(path, mode="score")
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    text = provider.prompt_text(Request("a", f"\n{PROMPT}\n", image, N_CLASSES))  # the prompt is stripped
    assert text == EXPECTED_PROMPTS[kind]
    provider._load_model()
    enc = provider._inputs([text], [Request("a", PROMPT, image, N_CLASSES)])
    ids = enc["input_ids"][0].tolist()
    image_id = provider.tokenizer.convert_tokens_to_ids(IMAGE_TOKENS[kind])
    assert provider.image_token == IMAGE_TOKENS[kind]
    assert ids.count(image_id) == EXPECTED_IMAGE_TOKENS[kind]  # the processor expanded the one placeholder
    shown = provider.tokenizer.decode(ids, skip_special_tokens=False)
    # the image inside the user turn, before the prompt; the assistant's opening last
    assert shown.index(USER_TURN[kind]) < shown.index(IMAGE_TOKENS[kind])
    assert shown.rindex(IMAGE_TOKENS[kind]) < shown.index(PROMPT)
    assert shown.endswith(PROMPT + ASSISTANT_OPENING[kind])


@pytest.mark.parametrize("prefix", ["", " "])
def test_label_tokens_of_each_tokenizer_family(tiny: tuple[str, Path], prefix: str) -> None:
    """Qwen2's and SmolLM2's tokenizers split digits off: "0".."3" are single tokens after the
    assistant's opening with either prefix, and "10" is two (a clear error, not a wrong score)."""
    kind, path = tiny
    provider = shared(path, mode="score")
    text = provider.prompt_text(Request("a", PROMPT, np.zeros((8, 8, 3), np.uint8), N_CLASSES)) + prefix
    ids = provider.label_token_ids(text, N_CLASSES)
    assert provider.tokenizer.convert_ids_to_tokens(ids) == ["0", "1", "2", "3"]
    with pytest.raises(BenchError, match=r"one token after the prompt .*'10' -> \['1', '0'\]"):
        provider.label_token_ids(text, 11)


# -- batching ----------------------------------------------------------------------------
def test_score_batch_equals_single(tiny: tuple[str, Path], requests: list[Request]) -> None:
    kind, path = tiny
    prefix = " " if kind == "idefics3" else ""
    one = shared(path, mode="score", batch_size=1, answer_prefix=prefix).classify(requests)
    batched = shared(path, mode="score", batch_size=4, answer_prefix=prefix).classify(requests)
    p1, pb = np.array([a.probs for a in one]), np.array([a.probs for a in batched])
    assert p1.shape == pb.shape == (len(requests), N_CLASSES)
    np.testing.assert_allclose(p1.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(pb, p1, atol=1e-5)
    assert [a.label for a in batched] == [a.label for a in one] == list(p1.argmax(axis=1))
    assert [a.raw for a in one] == [str(a.label) for a in one]
    assert [a.sample_id for a in batched] == [r.sample_id for r in requests]
    assert p1.std(axis=0).max() > 1e-4  # the images matter: not one distribution for all


def test_score_is_the_models_own_next_token_probability(tiny: tuple[str, Path], requests: list[Request]) -> None:
    """The reference: the processor and model called as transformers documents it (one request,
    no padding, the model's own positions: Qwen2-VL's M-RoPE places the image tokens on a grid)."""
    import torch
    from PIL import Image

    kind, path = tiny
    prefix = " " if kind == "idefics3" else ""
    provider = shared(path, mode="score", batch_size=4, answer_prefix=prefix)
    got = provider.classify(requests[:4])
    for req, answer in zip(requests[:4], got):
        text = provider.prompt_text(req) + prefix
        enc = provider.processor(images=[Image.fromarray(req.image)], text=[text], return_tensors="pt")
        with torch.inference_mode():
            logits = provider._model(**enc).logits[0, -1]
        ids = provider.label_token_ids(text, N_CLASSES)
        np.testing.assert_allclose(answer.probs, torch.softmax(logits[ids], dim=-1).numpy(), atol=1e-5)


def test_generate_batch_equals_single(tiny: tuple[str, Path], requests: list[Request]) -> None:
    kind, path = tiny
    one = shared(path, mode="generate", batch_size=1, max_new_tokens=5).classify(requests)
    batched = shared(path, mode="generate", batch_size=4, max_new_tokens=5).classify(requests)
    assert [a.raw for a in batched] == [a.raw for a in one]
    assert [a.usage for a in batched] == [a.usage for a in one]
    assert all(0 < a.usage["completion_tokens"] <= 5 and a.label is None for a in one)


# -- image-size settings ------------------------------------------------------------------
def _image_token_count(provider: TransformersProvider, kind: str, size: int = 64) -> int:
    provider._load_model()
    req = Request("a", PROMPT, np.zeros((size, size, 3), np.uint8), N_CLASSES)
    ids = provider._inputs([provider.prompt_text(req)], [req])["input_ids"][0].tolist()
    return ids.count(provider.tokenizer.convert_tokens_to_ids(IMAGE_TOKENS[kind]))


def test_image_size_settings_reach_the_processor(tiny: tuple[str, Path]) -> None:
    kind, path = tiny
    if kind in ("qwen2-vl", "qwen2.5-vl"):
        # min_pixels 112*112: 64 px scaled up to 112 px -> 8x8 patches -> 16 tokens (default: 4)
        assert _image_token_count(make(path, mode="score", min_pixels=112 * 112), kind) == 16
        # max_pixels 28*28: scaled down to one merged patch -> 1 token
        assert _image_token_count(make(path, mode="score", max_pixels=28 * 28), kind) == 1
        wrong = dict(image_splitting=False)
    elif kind == "idefics3":
        assert _image_token_count(make(path, mode="score", image_splitting=False), kind) == 4  # one view
        # longest edge 96 -> 3x3 tiles of 32 + global view = 10 x 4 tokens
        assert _image_token_count(make(path, mode="score", image_longest_edge=96), kind) == 40
        wrong = dict(min_pixels=3136)
    else:
        wrong = dict(max_pixels=3136)
    key = next(iter(wrong))
    with pytest.raises(BenchError, match=rf"'{key}' sizes images of .*; expected one of those, found "
                                         rf"{type(shared(path).processor).__name__}"):
        make(path, mode="score", **wrong).processor  # noqa: B018


def test_image_settings_are_part_of_the_key(tiny: tuple[str, Path]) -> None:
    _, path = tiny
    base = make(path, mode="score")
    assert not {"min_pixels", "max_pixels", "image_splitting", "image_longest_edge"} & set(base.fingerprint())
    for change in (dict(min_pixels=50176), dict(max_pixels=50176), dict(image_splitting=False),
                   dict(image_longest_edge=512)):
        fp = make(path, mode="score", **change).fingerprint()
        assert fp != base.fingerprint() and fp.items() >= change.items(), change


def test_bad_image_settings_fail_at_load() -> None:
    with pytest.raises(BenchError, match=r"expected 'min_pixels' <= max_pixels \(100\), found 200"):
        TransformersProvider.from_config(ModelConfig("m", "transformers", "x", settings=dict(
            min_pixels=200, max_pixels=100)))
    with pytest.raises(BenchError, match=r"expected 'image_splitting' true or false, found 'no'"):
        TransformersProvider.from_config(ModelConfig("m", "transformers", "x", settings=dict(
            image_splitting="no")))


# -- the session: record, then replay without the weights ---------------------------------
def test_session_records_then_replays(tiny: tuple[str, Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_hf_provider import run_toy, toy_world

    kind, path = tiny
    raw = toy_world(tmp_path, 6, seed=11, models={
        "tiny": {"provider": "transformers", "model": str(path), "mode": "both", "max_new_tokens": 3,
                 "batch_size": 4, "answer_prefix": " " if kind == "idefics3" else ""}})
    recorded = run_toy(raw, tmp_path, "once", "recordings-of-tiny-model")
    assert (tmp_path / "recordings-of-tiny-model" / "toy+tiny+paper.jsonl").exists()

    def no_weights(self: Any) -> None:
        raise AssertionError("replay must not load the model")

    monkeypatch.setattr(TransformersProvider, "_load_model", no_weights)
    replayed = run_toy(raw, tmp_path, "none", "recordings-of-tiny-model")
    assert replayed.scores == recorded.scores and replayed.scores.n == 6
    assert replayed.predictions == recorded.predictions
    assert all(abs(sum(p["probs"]) - 1) < 1e-6 for p in replayed.predictions)
    assert [p["parsed"] for p in recorded.predictions] == [p["score_label"] for p in recorded.predictions]


# -- without torchvision: what a user without it is told -----------------------------------
def test_video_capable_processor_without_torchvision_says_so(tmp_path: Path) -> None:
    try:
        import torchvision  # noqa: F401

        pytest.skip("torchvision is installed: these processors load")
    except ImportError:
        pass
    with processors_without_video():  # built with the stand-in, then loaded without it
        path = build_tiny_vlm(VIDEO_CAPABLE[0], tmp_path / "qwen")
    # as a checkpoint saved with torchvision has it (the hub's older ones have none: the same message)
    (path / "video_preprocessor_config.json").write_text(json.dumps(
        {"video_processor_type": "Qwen2VLVideoProcessor", "processor_class": "Qwen2VLProcessor"}))
    from transformers.processing_utils import ProcessorMixin

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ProcessorMixin, "get_attributes", unpatched_get_attributes())  # the stand-in, undone
        provider = make(path, mode="score")
        with pytest.raises(BenchError, match=r"model 'tiny': the processor of .* needs a package that is not "
                                             r"installed \(.*Torchvision.*\); with transformers .* need "
                                             r"torchvision: install the build that matches your torch"):
            provider.processor  # noqa: B018


# -- the default model through `pytest cases`: recorded, replayed, skipped offline ---------------
TINY_ID = "astrobench-tests/tiny-random-idefics3"  # a test model's id, never a real checkpoint's


def test_default_model_through_pytest_cases(world: Any, tmp_path: Path) -> None:
    """The built-in smolvlm entry (score mode, its image settings, the tasks' prompts), pointed at a
    tiny Idefics3 laid out in a Hugging Face cache under a test id, loaded by id with the hub offline:
    recorded with `once`, replayed identically with `none`; with nothing cached and nothing recorded,
    `once` skips its cases with one line and `none` fails them."""
    run, stub, server, tmp = world
    folder = build_tiny_vlm("idefics3", tmp_path / "tiny-idefics3")
    cache = tmp_path / "hub-cache"
    commit = install_in_hub_cache(folder, cache, TINY_ID)
    cfg = tmp / "user.toml"
    cfg.write_text(cfg.read_text() + f'\n[models.smolvlm]\nmodel = "{TINY_ID}"\n')
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}

    first = run("--bench-model", "smolvlm", "--bench-results", str(tmp / "first.json"), extra_env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert re.search(r"\b3 passed\b", first.stdout), first.stdout
    doc = json.loads((tmp / "first.json").read_text())
    cases = {c["case_id"]: c for c in doc["cases"]}
    assert set(cases) == {"lsbg-smolvlm", "morphology-smolvlm", "morphology-merged-smolvlm"}
    assert [cases[c]["metrics"]["n"] for c in sorted(cases)] == [10, 12, 12]
    assert cases["lsbg-smolvlm"]["served_model"] == f"{TINY_ID}@{commit}"
    assert cases["lsbg-smolvlm"]["method"] == "score"
    for c in cases.values():
        assert all(abs(sum(p["probs"]) - 1) < 1e-5 for p in c["predictions"])
    assert len(stub.requests) == 0  # gpt-4o not selected

    again = run("--bench-model", "smolvlm", "--bench-results", str(tmp / "again.json"), mode="none",
                extra_env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")})
    assert again.returncode == 0, again.stdout + again.stderr
    replayed = {c["case_id"]: c for c in json.loads((tmp / "again.json").read_text())["cases"]}
    for cid, case in cases.items():
        assert replayed[cid]["predictions"] == case["predictions"] and replayed[cid]["metrics"] == case["metrics"]
    assert replayed["lsbg-smolvlm"]["cached"] == 10

    # nothing cached, nothing recorded: `once` (make bench) skips with one line, `none` fails
    offline = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache"),
               "ASTROBENCH_CASSETTE_DIR": str(tmp_path / "no-recordings")}
    skipped = run("--bench-model", "smolvlm", "--bench-task", "lsbg", "-rs", extra_env=offline)
    assert skipped.returncode == 0 and re.search(r"\b1 skipped\b", skipped.stdout), skipped.stdout
    line = (f"model 'smolvlm' needs the weights of '{TINY_ID}', which are not in the Hugging Face cache "
            f"({tmp_path / 'empty-cache'}) and cannot be downloaded now (HF_HUB_OFFLINE is set); run once with "
            f"network to download them, or `hf download {TINY_ID}`")
    assert line in skipped.stdout
    failed = run("--bench-model", "smolvlm", "--bench-task", "lsbg", mode="none", extra_env=offline)
    assert failed.returncode == 1 and "1 failed" in failed.stdout, failed.stdout
    assert "lsbg-smolvlm" in failed.stdout and "--record-mode" in failed.stdout


def test_offline_hub_probe_makes_no_retries(tmp_path: Path) -> None:
    """Not HF_HUB_OFFLINE, but no hub answers (a port nothing listens on): one request, then the
    same one-line reason, in a fresh process (huggingface_hub reads its settings at import)."""
    code = (
        "from benchmark.config import ModelConfig\n"
        "from benchmark.providers.hf import TransformersProvider\n"
        f"p = TransformersProvider.from_config(ModelConfig('m', 'transformers', '{TINY_ID}', settings={{}}))\n"
        "print(p.can_call_live(), p.can_call_live())\n"
        "print(p.why_not_live())\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HUB_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, reason = proc.stdout.splitlines()
    assert first == "False False"
    assert reason.startswith(f"model 'm' needs the weights of '{TINY_ID}', which are not in the Hugging Face "
                             f"cache ({tmp_path / 'cache'}) and cannot be downloaded now (ConnectError")
    assert "Retrying" not in proc.stderr
