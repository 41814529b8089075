"""A two-class folder task ("toy": artifact vs lsbg) answered by the loopback OpenAI stand-in.

Builders shared by the recording, progress and wheel tests, and by the subprocess
scripts of the recording tests (which import this module by its dotted name,
``tests.support.folder_task``, with the repository root on ``sys.path``).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from benchmark.config import ModelConfig, parse_config
from benchmark.core import Answer, Request
from benchmark.providers.openai_chat import OpenAIChatProvider
from benchmark.session import BenchSession, plan_cases
from tests.support.openai_stub import (
    BARE,
    CORRECT,
    UNPARSEABLE,
    VERBOSE,
    WRONG,
    OpenAIStub,
    answer_for,
    mark_image,
)

KEY = "sk-recording-DISTINCTIVE-KEY-9f8e7d"
STYLES = (CORRECT, WRONG, UNPARSEABLE, VERBOSE, BARE)
PROMPT = ("You are tasked with classifying astronomical images. Category 0 is an artifact, "
          "category 1 is a low-surface-brightness galaxy. Respond with the number only.")
CASSETTES = "cassettes-from-test-server"


def images(n: int, n_classes: int = 2, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [mark_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), label=i % n_classes,
                       style=STYLES[i % len(STYLES)], n_classes=n_classes) for i in range(n)]


def requests(imgs, prompt: str = PROMPT, n_classes: int = 2) -> list[Request]:
    return [Request(str(i), prompt, im, n_classes) for i, im in enumerate(imgs)]


def provider_for_url(url: str, **settings) -> OpenAIChatProvider:
    model = ModelConfig("stub", "openai", "stub-vlm", settings={"base_url": url, **settings})
    return OpenAIChatProvider.from_config(model, api_key=KEY)


def folder_world(tmp_path: Path, stub: OpenAIStub, n: int, *, prompt: str = PROMPT, seed: int = 0,
                 imgs: list[np.ndarray] | None = None) -> dict:
    from PIL import Image

    root = tmp_path / "images"
    for i, im in enumerate(imgs if imgs is not None else images(n, seed=seed)):
        folder = root / ("artifact" if i % 2 == 0 else "lsbg")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(folder / f"img{i:03d}.png")
    (tmp_path / "prompts" / "toy").mkdir(parents=True, exist_ok=True)
    (tmp_path / "prompts" / "toy" / "paper.txt").write_text(prompt)
    return {
        "datasets": {"toy": {"format": "folder", "path": str(root), "classes": ["artifact", "lsbg"]}},
        "tasks": {"toy": {"dataset": "toy", "classes": ["artifact", "lsbg"], "prompts": ["paper"]}},
        "models": {"stub": {"provider": "openai", "model": "stub-vlm", "base_url": stub.base_url,
                            "api_key_env": "ASTROBENCH_TEST_KEY"}},
    }


def session(raw: dict, tmp_path: Path, mode: str | None, **kw) -> BenchSession:
    config = parse_config(raw, prompt_dirs={t: [tmp_path / "prompts" / "toy"] for t in raw["tasks"]})
    return BenchSession(config, cassette_dir=tmp_path / CASSETTES, record_mode=mode,
                        frozen_dir=tmp_path / "frozen", progress=False, **kw)


def run_case(bench: BenchSession, index: int = 0):
    return bench.run(plan_cases(bench.config)[index])


def write_toml(tmp_path: Path, raw: dict, *, model_extra: str = "") -> Path:
    """``raw`` (from :func:`folder_world`) as a user config file ``toy.toml``, for runs of the
    plugin in a subprocess; ``model_extra`` adds lines to ``[models.stub]``."""
    cfg = tmp_path / "toy.toml"
    cfg.write_text(textwrap.dedent(f"""
        [datasets.toy]
        format = "folder"
        path = "{raw['datasets']['toy']['path']}"
        classes = ["artifact", "lsbg"]
        [tasks.toy]
        dataset = "toy"
        classes = ["artifact", "lsbg"]
        prompts = ["paper"]
        prompt_dir = "{tmp_path / 'prompts' / 'toy'}"
        [models.stub]
        provider = "openai"
        model = "stub-vlm"
        base_url = "{raw['models']['stub']['base_url']}"
        api_key_env = "ASTROBENCH_TEST_KEY"
    """) + model_extra)
    return cfg


class FakeLocalProvider:
    """An in-process provider (no HTTP) that answers like the stub and counts calls;
    subclasses change the answer's text (``text``)."""

    calls = 0
    http = False
    kind = "fake-local"

    def __init__(self, name: str, temperature: float = 0.0) -> None:
        self.name, self.temperature = name, temperature

    @classmethod
    def from_config(cls, model, **_):
        return cls(model.name, float(model.settings.get("temperature", 0.0)))

    def can_call_live(self) -> bool:
        return True

    def canonical_request(self, request):
        return {"provider": self.kind, "temperature": self.temperature, "prompt": request.prompt,
                "image_sha256": request.image_sha256}

    def to_record(self, answer):
        return {"answer": {"raw": answer.raw}}

    def from_record(self, sample_id, record):
        return Answer(sample_id, raw=record["answer"]["raw"])

    def text(self, request) -> str:
        return answer_for(request.load_image())

    def classify(self, reqs, *, on_answer=None):
        out = []
        for r in reqs:
            FakeLocalProvider.calls += 1
            a = Answer(r.sample_id, raw=self.text(r))
            out.append(a)
            if on_answer:
                on_answer(a)
        return out

    def close(self):
        pass
