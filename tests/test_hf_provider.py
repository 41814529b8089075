"""The transformers provider on a tiny random LLaVA-NeXT, on CPU, offline.

Only mechanics and exact equalities are asserted (batching, shapes, caching,
prompt strings, errors), never accuracy: the model is random.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from benchmark.config import ModelConfig  # noqa: E402
from benchmark.providers import PROVIDERS  # noqa: E402
from benchmark.providers.hf import INSTALL_HINT, SETTINGS, TransformersProvider  # noqa: E402
from benchmark.recording import Recording, answer_requests  # noqa: E402
from benchmark.core import Answer, BenchError, Request  # noqa: E402
from tests.support.tiny_llava import IMAGE_TOKEN, StubExtractor, build_tiny_llava  # noqa: E402

N_CLASSES = 4


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A seeded tiny LLaVA-NeXT saved with its processor (built once per session).

    Torch runs single-threaded meanwhile: for these toy matrices thread hand-offs
    cost far more than the maths, especially on a busy machine.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def requests() -> list[Request]:
    """8 random 64x64 images; prompts of different lengths so left padding is exercised."""
    rng = np.random.default_rng(0)
    return [Request(f"s{i}", "Which category?" + " Think." * (i % 3) + "\n",
                    rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), N_CLASSES) for i in range(8)]


_PROVIDERS: dict[tuple[Any, ...], TransformersProvider] = {}


def make(path: Path, **settings: Any) -> TransformersProvider:
    return TransformersProvider.from_config(ModelConfig("tiny", "transformers", str(path), settings=settings))


def shared(path: Path, **settings: Any) -> TransformersProvider:
    """One provider per settings for the session (model loads cost ~0.3 s each)."""
    key = (str(path), tuple(sorted(settings.items())))
    if key not in _PROVIDERS:
        _PROVIDERS[key] = make(path, **settings)
    return _PROVIDERS[key]


# -- batching ---------------------------------------------------------------------
def test_score_batch8_equals_batch1(tiny_llava: Path, requests: list[Request]) -> None:
    one = shared(tiny_llava, mode="score", batch_size=1).classify(requests)
    eight = shared(tiny_llava, mode="score", batch_size=8).classify(requests)
    probs1 = np.array([a.probs for a in one])
    probs8 = np.array([a.probs for a in eight])
    assert probs1.shape == probs8.shape == (len(requests), N_CLASSES)
    np.testing.assert_allclose(probs1.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs8, probs1, atol=1e-5)
    assert [a.label for a in eight] == [a.label for a in one] == list(probs1.argmax(axis=1))
    assert [a.raw for a in one] == [str(a.label) for a in one]
    assert [a.sample_id for a in eight] == [r.sample_id for r in requests]


def test_generate_batch8_equals_batch1(tiny_llava: Path, requests: list[Request]) -> None:
    one = shared(tiny_llava, mode="generate", batch_size=1, max_new_tokens=6).classify(requests)
    eight = shared(tiny_llava, mode="generate", batch_size=8, max_new_tokens=6).classify(requests)
    assert [a.raw for a in eight] == [a.raw for a in one]
    assert all(a.label is None and a.probs is None for a in one + eight)  # left to the parser
    assert all(0 < a.usage["completion_tokens"] <= 6 for a in one)


def test_both_mode_paper_format_batches_and_meta(tiny_llava: Path, requests: list[Request]) -> None:
    settings = dict(mode="both", prompt_format="paper", max_new_tokens=4, min_new_tokens=4)
    seen: list[str] = []
    one = shared(tiny_llava, batch_size=1, **settings).classify(requests)
    eight = shared(tiny_llava, batch_size=8, **settings).classify(
        requests, on_answer=lambda a: seen.append(a.sample_id))
    assert seen == [r.sample_id for r in requests]
    for a, b in zip(one, eight):
        assert (a.raw, a.label, a.meta) == (b.raw, b.label, b.meta)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
        assert a.meta["score_label"] == a.label == int(np.argmax(a.probs))
        assert set(a.meta) == {"score_label"}  # the session reads the text (parser or extractor)
        assert a.raw and a.usage["completion_tokens"] == 4


def test_on_answer_called_per_batch(tiny_llava: Path, requests: list[Request]) -> None:
    provider = shared(tiny_llava, mode="score", batch_size=3)
    calls_at: list[int] = []
    provider.classify(requests, on_answer=lambda a: calls_at.append(provider.model_calls))
    first = calls_at[0]
    assert calls_at == [first] * 3 + [first + 1] * 3 + [first + 2] * 2


# -- prompts and label tokens -------------------------------------------------------
def test_paper_prompt_format_exact(tiny_llava: Path) -> None:
    provider = shared(tiny_llava, mode="score", prompt_format="paper")
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    template = "\nYou are tasked to classify astronomical images.\n\nTo what category does the image belong?\n"
    text = provider.prompt_text(Request("a", template, image, 2))
    # the notebook: "USER: <image>\n" + prompt_template + "\nASSISTANT:", nothing stripped
    assert text == ("USER: <image>\n\nYou are tasked to classify astronomical images.\n\n"
                    "To what category does the image belong?\n\nASSISTANT:")
    provider._load_model()
    enc = provider._inputs([text], [Request("a", "", image, 2)])
    ids = enc["input_ids"][0].tolist()
    image_id = provider.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert ids[0] == provider.tokenizer.bos_token_id and ids[1] != provider.tokenizer.bos_token_id
    # anyres at toy size: 64x64 image -> base 4x4 + 8x8 grid + 8 row ends = 88 tokens
    assert ids.count(image_id) == 88


def test_chat_template_prompt(tiny_llava: Path) -> None:
    provider = shared(tiny_llava, mode="score")
    text = provider.prompt_text(Request("a", " Which?\n", np.zeros((64, 64, 3), np.uint8), 2))
    assert text == "<s>[INST] <image>\nWhich? [/INST]"
    ids = provider.label_token_ids(text + " ", 4)
    assert provider.tokenizer.convert_ids_to_tokens(ids) == ["0", "1", "2", "3"]


def test_multi_token_label_fails_clearly(tiny_llava: Path) -> None:
    provider = shared(tiny_llava, mode="score")
    req = Request("a", "Which?", np.zeros((64, 64, 3), np.uint8), 11)
    with pytest.raises(BenchError, match=r"one token.*'10' -> \['1', '0'\]"):
        provider.classify([req])


def test_fingerprint_changes_with_what_changes_answers(tiny_llava: Path) -> None:
    base = dict(mode="score", quantization="none", max_new_tokens=200)
    fp = make(tiny_llava, **base).fingerprint()
    assert fp["model"] == str(tiny_llava) and fp["answer_prefix"] == " "
    for change in (dict(mode="generate"), dict(mode="both"), dict(quantization="4bit"),
                   dict(prompt_format="paper"), dict(answer_prefix=""), dict(revision="0123abcd")):
        assert make(tiny_llava, **{**base, **change}).fingerprint() != fp, change
    gen = dict(mode="generate", max_new_tokens=200)
    assert make(tiny_llava, **gen).fingerprint() != make(tiny_llava, **{**gen, "max_new_tokens": 20}).fingerprint()
    assert make(tiny_llava, **gen).fingerprint() != make(tiny_llava, **{**gen, "min_new_tokens": 5}).fingerprint()
    q4 = dict(mode="generate", quantization="4bit")
    assert make(tiny_llava, **q4).fingerprint() != make(tiny_llava, **{**q4, "compute_dtype": "float32"}).fingerprint()
    # batch size does not change answers, so it does not change the cache key
    assert make(tiny_llava, **base, batch_size=8).fingerprint() == fp


# -- recording and resume -----------------------------------------------------------
class Counting:
    """Wraps a provider; counts requests sent to it and can fail after ``stop_after`` answers."""

    def __init__(self, inner: TransformersProvider, stop_after: int | None = None) -> None:
        self.inner, self.stop_after, self.sent = inner, stop_after, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def classify(self, requests: Any, *, on_answer: Any = None) -> list[Answer]:
        self.sent += len(requests)
        done = 0

        def relay(answer: Answer) -> None:
            nonlocal done
            if self.stop_after is not None and done >= self.stop_after:
                raise KeyboardInterrupt("simulated kill")
            done += 1
            on_answer(answer)

        return self.inner.classify(requests, on_answer=relay)


def test_recording_hits_and_resume(tiny_llava: Path, requests: list[Request], tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"

    def ask(provider: Any, reqs: list[Request], mode: str = "new_episodes") -> dict[str, Answer]:
        with Recording(path, mode=mode) as rec:
            out = answer_requests(provider, reqs, recording=rec)
            rec.finish(complete=False)
        return out

    killed = Counting(make(tiny_llava, mode="score", batch_size=2), stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        ask(killed, requests)
    with Recording(path, mode="none") as rec:
        assert len(rec.committed.entries) == 3  # Ctrl-C: what was answered is kept

    resumed = Counting(make(tiny_llava, mode="score", batch_size=2))
    calls_before = resumed.inner.model_calls
    first = ask(resumed, requests)
    assert resumed.sent == len(requests) - 3
    assert resumed.inner.model_calls - calls_before == 3  # ceil(5 / 2) batches
    assert sorted(first) == sorted(r.sample_id for r in requests)

    again = Counting(make(tiny_llava, mode="score", batch_size=2))
    second = ask(again, requests, mode="none")
    assert again.sent == 0 and again.inner.model_calls == 0
    assert again.inner._model is None  # all recorded: the weights were never loaded
    assert {k: (a.label, a.probs) for k, a in second.items()} == {k: (a.label, a.probs) for k, a in first.items()}

    other = Counting(make(tiny_llava, mode="both", batch_size=2, max_new_tokens=2))
    ask(other, requests[:2])
    assert other.sent == 2  # another mode is another key


# -- 4-bit ------------------------------------------------------------------------
def test_4bit_bitsandbytes_on_cpu(tiny_llava: Path, requests: list[Request]) -> None:
    bnb = pytest.importorskip("bitsandbytes")
    provider = make(tiny_llava, mode="both", quantization="4bit", compute_dtype="float32",
                    batch_size=4, max_new_tokens=3)
    answers = provider.classify(requests[:4])
    n4 = sum(isinstance(m, bnb.nn.Linear4bit) for m in provider._model.modules())
    assert n4 > 0
    probs = np.array([a.probs for a in answers])
    assert probs.shape == (4, N_CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert all(a.label in range(N_CLASSES) and isinstance(a.raw, str) for a in answers)


# -- errors -----------------------------------------------------------------------
def test_missing_extra_says_how_to_install(tiny_llava: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_torch(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    provider = make(tiny_llava, mode="score")  # building it needs neither (replay never does)
    with pytest.raises(BenchError) as err:
        provider.classify([Request("a", "p", np.zeros((64, 64, 3), dtype=np.uint8), 2)])
    assert INSTALL_HINT in str(err.value).splitlines()
    assert INSTALL_HINT == 'pip install "astro-vlm-bench[hf]"'


@pytest.mark.parametrize("settings, message", [
    (dict(temprature=0), r"unknown keys \['temprature'\].*expected some of"),
    (dict(mode="sample"), r"expected 'mode' one of \['generate', 'score', 'both'\], found 'sample'"),
    (dict(quantization="3bit"), r"expected 'quantization' one of .*found '3bit'"),
    (dict(batch_size=0), r"expected 'batch_size' an integer >= 1, found 0"),
    (dict(batch_size=True), r"expected 'batch_size' an integer >= 1, found True"),
    (dict(max_new_tokens=10, min_new_tokens=20), r"expected 'min_new_tokens' <= max_new_tokens \(10\), found 20"),
    (dict(prompt_format="llava"), r"expected 'prompt_format' one of .*found 'llava'"),
    (dict(compute_dtype="fp16"), r"expected 'compute_dtype' one of .*found 'fp16'"),
    (dict(extract_with="nope"), r"extract_with 'nope' is not a model of the bench config"),
    (dict(mode="score", extract_with="gpt"), r"expected mode 'generate' or 'both', found 'score'"),
])
def test_bad_settings(tiny_llava: Path, settings: dict[str, Any], message: str) -> None:
    bench = SimpleNamespace(models={"gpt": ModelConfig("gpt", "openai", "gpt-4o")})
    with pytest.raises(BenchError, match=message):
        TransformersProvider.from_config(ModelConfig("tiny", "transformers", str(tiny_llava),
                                                     settings=settings), bench=bench)


def test_leaderboard_keys_are_accepted_and_ignored_by_the_provider(tiny_llava: Path,
                                                                   requests: list[Request]) -> None:
    """``prices`` of a [models.NAME] table is for the reports: accepted, validated,
    and no part of the provider's settings or of its recording keys."""
    leaderboard = {"prices": {"input_per_mtok": 0.0, "output_per_mtok": 1.5}}
    provider = make(tiny_llava, mode="score", batch_size=2, **leaderboard)
    plain = make(tiny_llava, mode="score", batch_size=2)
    assert provider.settings == {**SETTINGS, "mode": "score", "batch_size": 2} == plain.settings
    assert provider.fingerprint() == plain.fingerprint()
    assert provider.canonical_request(requests[0]) == plain.canonical_request(requests[0])
    # still a checked table: a misspelt key or a bad price is an error naming it
    with pytest.raises(BenchError, match=r"unknown keys \['prize'\] for provider 'transformers' "
                                         r"\(did you mean 'prices'\?\)"):
        make(tiny_llava, prize={"input_per_mtok": 0.0})
    with pytest.raises(BenchError, match=r"models\.tiny\.prices: expected 'input_per_mtok' a number >= 0, found -1"):
        make(tiny_llava, prices={"input_per_mtok": -1})
    with pytest.raises(BenchError, match=r"unknown keys \['label'\]"):  # no display-name key: it was never shown
        make(tiny_llava, label="LLaVA")


def toy_world(tmp_path: Path, n: int, *, seed: int, models: dict[str, Any]) -> dict[str, Any]:
    """A two-class folder dataset of ``n`` random images, one prompt, and ``models``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = tmp_path / "images" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "paper.txt").write_text("Which category, 0 or 1?")
    return {"datasets": {"toy": {"format": "folder", "path": str(tmp_path / "images")}},
            "tasks": {"toy": {"dataset": "toy", "classes": ["a", "b"], "prompts": ["paper"]}},
            "models": models}


def run_toy(raw: dict[str, Any], tmp_path: Path, mode: str, cassettes: str) -> Any:
    from benchmark.config import parse_config
    from benchmark.session import BenchSession, plan_cases

    config = parse_config(raw, prompt_dirs={"toy": [tmp_path / "prompts"]})
    bench = BenchSession(config, cassette_dir=tmp_path / cassettes, record_mode=mode,
                         frozen_dir=tmp_path / "frozen", progress=False)
    [case] = plan_cases(config)
    return bench.run(case)


def test_session_records_then_replays_without_loading_weights(tiny_llava, tmp_path, monkeypatch):
    """A GPU run replayed on a laptop: the response cache answers, the model never loads."""
    raw = toy_world(tmp_path, 6, seed=5, models={
        "tiny": {"provider": "transformers", "model": str(tiny_llava), "mode": "score", "batch_size": 4}})

    def run(mode, cassettes="recordings-of-tiny-model"):
        return run_toy(raw, tmp_path, mode, cassettes)

    recorded = run("once")
    assert (tmp_path / "recordings-of-tiny-model" / "toy+tiny+paper.jsonl").exists()

    def no_weights(self):
        raise AssertionError("replay must not load the model")

    monkeypatch.setattr(TransformersProvider, "_load_model", no_weights)
    replayed = run("none")
    assert replayed.scores == recorded.scores and replayed.scores.n == 6
    assert [p["probs"] for p in replayed.predictions] == [p["probs"] for p in recorded.predictions]
    assert all(abs(sum(p["probs"]) - 1) < 1e-6 for p in replayed.predictions)

    # both modes: each prediction carries the two labels, and the report says how often they agree
    monkeypatch.undo()
    raw["models"]["tiny"].update(mode="both", max_new_tokens=3)
    both = run("once", cassettes="recordings-both-modes")
    from benchmark.report import _mode_agreement

    assert all({"generate_label", "score_label"} <= set(p) for p in both.predictions)
    assert [p["score_label"] for p in both.predictions] == [p["parsed"] for p in both.predictions]
    agreement = _mode_agreement(both.predictions)
    assert agreement is not None and 0.0 <= agreement <= 1.0


# -- extraction (the paper's second step), recorded like every other answer --------------
def test_extractor_answers_are_recorded_and_obey_record_modes(tiny_llava, tmp_path, monkeypatch):
    monkeypatch.setitem(PROVIDERS, "stub", "tests.support.tiny_llava:StubExtractor")
    monkeypatch.setattr(StubExtractor, "calls", [])
    raw = toy_world(tmp_path, 4, seed=7, models={
        "tiny": {"provider": "transformers", "model": str(tiny_llava), "mode": "generate",
                 "max_new_tokens": 3, "batch_size": 2, "extract_with": "gpt"},
        "gpt": {"provider": "stub", "model": "gpt-4o", "enabled": False}})
    monkeypatch.setattr(StubExtractor, "answer", 1)
    instruction = "\nYou will receive some text.\n\nOutput only a number\n\nText:\n"
    (tmp_path / "prompts" / "extract-paper.txt").write_text(instruction)

    def run(mode):
        return run_toy(raw, tmp_path, mode, "recordings-of-tiny-model")

    first = run("once")
    sent = [r for call in StubExtractor.calls for r in call]
    assert len(sent) == 4 and sent[0].image is None
    # the paper's extraction message: [the task's instruction file, the model's text]
    assert all(r.prompt == instruction for r in sent)
    assert [r.text for r in sent] == [p["raw"] for p in first.predictions]
    assert [p["parsed"] for p in first.predictions] == [1, 1, 1, 1]
    lines = (tmp_path / "recordings-of-tiny-model" / "toy+tiny+paper.jsonl").read_text().splitlines()
    assert sum('"key"' in ln for ln in lines) == 8  # 4 model answers + 4 extractions, one file

    def no_weights(self):
        raise AssertionError("replay must not load the model")

    monkeypatch.setattr(TransformersProvider, "_load_model", no_weights)
    replayed = run("none")
    assert len(StubExtractor.calls) == 1 and replayed.scores == first.scores
    monkeypatch.undo()
    monkeypatch.setitem(PROVIDERS, "stub", "tests.support.tiny_llava:StubExtractor")
    monkeypatch.setattr(StubExtractor, "calls", [])
    monkeypatch.setattr(StubExtractor, "answer", 0)
    rerecorded = run("all")  # 'all' asks the extractor again too (it used to be skipped)
    assert sum(len(c) for c in StubExtractor.calls) == 4
    assert [p["parsed"] for p in rerecorded.predictions] == [0, 0, 0, 0]
