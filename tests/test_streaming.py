"""Whole datasets in flat memory: ``sample_size = "all"``, the seeded stratified sample, and
images that stay on disk until a request sends them (none at all on a replay whose digests
are known). Runs go through the session against the loopback OpenAI stand-in."""

from __future__ import annotations

import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import benchmark.datasets as datasets
from benchmark.config import parse_config
from benchmark.core import BenchError, Sample
from benchmark.datasets import open_dataset
from benchmark.frozen import frozen_source, write_frozen
from benchmark.provenance import collect, differences
from benchmark.sampling import Selection, select
from tests.support.file_server import FileServer, lsbg_spec, make_lsbg_files
from tests.support.folder_task import KEY, folder_world, run_case, session
from tests.support.openai_stub import CORRECT, WRONG, OpenAIStub, mark_image

IDS_60_40 = [f"img{i:03d}" for i in range(100)]
LABELS_60_40 = [0] * 60 + [1] * 40


class CountingReads:
    """Wraps the folder image reader: how many images were read, and the most alive at once
    (an image is alive until its array is freed)."""

    def __init__(self, real) -> None:
        self.real, self.reads, self.live, self.peak = real, 0, 0, 0
        self._lock = threading.Lock()

    def __call__(self, *args):
        image = self.real(*args)
        with self._lock:
            self.reads += 1
            self.live += 1
            self.peak = max(self.peak, self.live)
        weakref.finalize(image, self._freed)
        return image

    def _freed(self) -> None:
        with self._lock:
            self.live -= 1


@pytest.fixture
def counting(monkeypatch) -> CountingReads:
    counter = CountingReads(datasets.read_folder_image)
    monkeypatch.setattr(datasets, "read_folder_image", counter)
    return counter


def styled_folder(root: Path, styles: dict[str, list[int]]) -> dict:
    """One sub-folder per class (artifact = 0, lsbg = 1), an image per style: the stand-in
    answers CORRECT images right and WRONG ones wrong."""
    for label, (cls, cls_styles) in enumerate(styles.items()):
        (root / cls).mkdir(parents=True)
        rng = np.random.default_rng(label)
        for i, style in enumerate(cls_styles):
            image = mark_image(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), label=label, style=style,
                               n_classes=2)
            Image.fromarray(image).save(root / cls / f"{cls[0]}{i:02d}.png")
    return {"format": "folder", "path": str(root), "classes": list(styles)}


# -- selection ------------------------------------------------------------------------------
def test_stratified_keeps_class_proportions_is_seeded_and_deterministic():
    where = "tasks.t (dataset d)"
    pick = select(IDS_60_40, LABELS_60_40, Selection("stratified", 10, 0), n_classes=2, where=where)
    assert sorted(LABELS_60_40[i] for i in pick) == [0] * 6 + [1] * 4
    assert len(set(pick)) == 10
    assert pick == select(IDS_60_40, LABELS_60_40, Selection("stratified", 10, 0), n_classes=2, where=where)
    # pinned: sha256-ranked, so the same on every machine and NumPy version
    assert [IDS_60_40[i] for i in pick] == ["img046", "img078", "img051", "img096", "img019",
                                            "img055", "img089", "img038", "img074", "img030"]
    other = select(IDS_60_40, LABELS_60_40, Selection("stratified", 10, 1), n_classes=2, where=where)
    assert set(other) != set(pick) and sorted(LABELS_60_40[i] for i in other) == [0] * 6 + [1] * 4
    # every prefix (--bench-limit) is as stratified as whole numbers allow
    for k in range(1, 11):
        zeros = sum(LABELS_60_40[i] == 0 for i in pick[:k])
        assert int(0.6 * k) <= zeros <= -(-6 * k // 10), (k, zeros)
    # the order files are listed in does not matter: the sample is a function of ids and labels
    order = np.random.default_rng(3).permutation(100)
    shuffled = select([IDS_60_40[i] for i in order], [LABELS_60_40[i] for i in order],
                      Selection("stratified", 10, 0), n_classes=2, where=where)
    assert [IDS_60_40[order[i]] for i in shuffled] == [IDS_60_40[i] for i in pick]


def test_first_and_all_and_the_selection_errors():
    where = "tasks.t (dataset d)"
    assert select(IDS_60_40, LABELS_60_40, Selection("first", 7), n_classes=2, where=where) == list(range(7))
    assert select(IDS_60_40, LABELS_60_40, Selection("first", None), n_classes=2, where=where) == list(range(100))
    everything = select(IDS_60_40, LABELS_60_40, Selection("stratified", None, 5), n_classes=2, where=where)
    assert sorted(everything) == list(range(100))
    with pytest.raises(BenchError) as err:
        select(IDS_60_40, LABELS_60_40, Selection("first", 101), n_classes=2, where=where)
    assert str(err.value) == ('tasks.t (dataset d): expected sample_size <= 100 (the images of the dataset), '
                              'found 101; use sample_size = "all" for every image')
    labels = [0] * 98 + [1, 2]
    with pytest.raises(BenchError) as err:
        select(IDS_60_40, labels, Selection("stratified", 10, 0), n_classes=3, where=where)
    assert str(err.value) == ("tasks.t (dataset d): a stratified sample of 10 gives classes [1, 2] no image "
                              "(their share of the 100 images is too small: [1, 1] images); expected "
                              'sample_size >= 100, or sample = "first"')
    with pytest.raises(BenchError, match=r"classes \[2\] have none in the dataset \(100 images\)"):
        select(IDS_60_40, LABELS_60_40, Selection("stratified", 10, 0), n_classes=3, where=where)


def test_config_sample_options_and_their_errors(tmp_path):
    def task_error(**task) -> str:
        raw = {"datasets": {"d": {"format": "folder", "path": str(tmp_path / "none"), "classes": ["a", "b"]}},
               "tasks": {"t": {"dataset": "d", "classes": ["a", "b"], "prompts": ["paper"], **task}},
               "models": {}}
        with pytest.raises(BenchError) as err:
            parse_config(raw, prompt_dirs={})
        return str(err.value)

    assert task_error(sample_size="everything") == \
        "tasks.t: expected 'sample_size' an integer >= 1 or \"all\", found 'everything'"
    assert task_error(sample="random") == "tasks.t: expected 'sample' one of ['first', 'stratified'], found 'random'"
    assert task_error(seed=3) == ("tasks.t: 'seed' draws a stratified sample; expected sample = \"stratified\" "
                                  "with it, found sample = 'first'")


# -- runs -----------------------------------------------------------------------------------
def test_sample_size_all_classifies_every_image_with_exact_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 10)  # styles cycle CORRECT, WRONG, UNPARSEABLE, VERBOSE, BARE
        raw["tasks"]["toy"]["sample_size"] = "all"
        result = run_case(session(raw, tmp_path, "once"))
        assert len(stub.requests) == 10
    assert result.scores.n == 10 and result.scores.accuracy == 0.6
    assert sorted(p["sample_id"] for p in result.predictions) == sorted(
        f"{'artifact' if i % 2 == 0 else 'lsbg'}/img{i:03d}.png" for i in range(10))


def test_stratified_sample_runs_records_and_is_in_the_provenance(tmp_path, monkeypatch):
    """8 artifacts (all answered right) and 2 LSBGs (all wrong): a stratified 5 is 4 + 1, accuracy
    0.8; the first 5 (classes interleaved) are 3 + 2, accuracy 0.6."""
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    spec = styled_folder(tmp_path / "imgs", {"artifact": [CORRECT] * 8, "lsbg": [WRONG] * 2})
    (tmp_path / "prompts" / "toy").mkdir(parents=True)
    (tmp_path / "prompts" / "toy" / "paper.txt").write_text("Category 0 or 1?")
    with OpenAIStub() as stub:
        raw = {"datasets": {"toy": spec},
               "tasks": {"toy": {"dataset": "toy", "classes": ["artifact", "lsbg"], "prompts": ["paper"],
                                 "sample_size": 5, "sample": "stratified", "seed": 3}},
               "models": {"stub": {"provider": "openai", "model": "stub-vlm", "base_url": stub.base_url,
                                   "api_key_env": "ASTROBENCH_TEST_KEY"}}}
        bench = session(raw, tmp_path, "once")
        strat = run_case(bench)
        ids = [p["sample_id"] for p in strat.predictions]
        again = session(raw, tmp_path, "none")
        assert [p["sample_id"] for p in run_case(again).predictions] == ids  # same sample, replayed
        first_raw = {**raw, "tasks": {"toy": {**raw["tasks"]["toy"], "sample": "first"}}}
        del first_raw["tasks"]["toy"]["seed"]
        first = run_case(session(first_raw, tmp_path, None))  # unrecorded: all live
    assert strat.scores.accuracy == 0.8 and sum(i.startswith("artifact/") for i in ids) == 4
    assert first.scores.accuracy == 0.6
    assert len(set(ids)) == 5 and strat.sample_sha256 != first.sample_sha256

    prov = collect(again)
    assert prov["cases"]["toy-stub"]["sample"] == {"rule": "stratified", "size": 5, "seed": 3}
    other = {**prov, "cases": {"toy-stub": {**prov["cases"]["toy-stub"],
                                            "sample": {"rule": "first", "size": 5}}}}
    assert "case toy-stub: sample: stratified 5 (seed 3) -> first 5" in differences(prov, other)


def test_images_stay_on_disk_until_sent_and_a_replay_with_known_digests_reads_none(
        tmp_path, monkeypatch, counting):
    monkeypatch.setenv("ASTROBENCH_TEST_KEY", KEY)
    with OpenAIStub(delay_s=0.02) as stub:
        raw = folder_world(tmp_path, stub, 24)
        raw["models"]["stub"]["concurrency"] = 3
        bench = session(raw, tmp_path, "once")
        live = run_case(bench)
        assert stub.max_in_flight == 3
    # each image read twice (its digest, then its request), never more than the requests in flight alive
    assert counting.reads == 48 and 1 <= counting.peak <= 3 and counting.live == 0

    counting.reads = counting.peak = 0
    replay = run_case(session(raw, tmp_path, "none"))
    assert replay.scores == live.scores and counting.reads == 24 and counting.peak == 1  # digests only

    task = bench.config.tasks["toy"]
    write_frozen(tmp_path / "frozen" / "toy.npz", bench.samples(task), dataset="toy",
                 spec=bench.config.datasets["toy"], selection=task.selection)
    counting.reads = 0
    monkeypatch.setattr("benchmark.frozen._ZipImages.__call__",
                        lambda *_: pytest.fail("a replay with known digests decompressed an image"))
    from_frozen = run_case(session(raw, tmp_path, "none"))
    assert from_frozen.scores == live.scores and from_frozen.sample_sha256 == live.sample_sha256
    assert counting.reads == 0


def test_a_frozen_stratified_sample_serves_only_its_own_rule(tmp_path, monkeypatch):
    spec = styled_folder(tmp_path / "imgs", {"artifact": [CORRECT] * 6, "lsbg": [CORRECT] * 4})
    (tmp_path / "prompts" / "toy").mkdir(parents=True)
    (tmp_path / "prompts" / "toy" / "paper.txt").write_text("Category 0 or 1?")
    raw = {"datasets": {"toy": spec},
           "tasks": {"toy": {"dataset": "toy", "classes": ["artifact", "lsbg"], "prompts": ["paper"],
                             "sample_size": 5, "sample": "stratified", "seed": 1}},
           "models": {"stub": {"provider": "openai", "model": "stub-vlm", "base_url": "http://127.0.0.1:9/v1"}}}
    bench = session(raw, tmp_path, "none")
    task = bench.config.tasks["toy"]
    drawn = [(s.id, s.sha256) for s in bench.samples(task)]
    write_frozen(tmp_path / "frozen" / "toy.npz", bench.samples(task), dataset="toy", spec=spec,
                 selection=task.selection)
    source = frozen_source(tmp_path / "frozen" / "toy.npz", dataset="toy", spec=spec)
    assert source is not None and source.selection == Selection("stratified", 5, 1)

    limited = session(raw, tmp_path, "none", limit=2)
    assert [(s.id, s.sha256) for s in limited.samples(task)] == drawn[:2]  # a prefix of the frozen sample
    first_raw = {**raw, "tasks": {"toy": {**raw["tasks"]["toy"], "sample": "first"}}}
    del first_raw["tasks"]["toy"]["seed"]
    first = session(first_raw, tmp_path, "none")
    ids = [s.id for s in first.samples(first.config.tasks["toy"])]
    assert ids == ["artifact/a00.png", "lsbg/l00.png", "artifact/a01.png", "lsbg/l01.png", "artifact/a02.png"]


def test_freeze_all_streams_the_whole_dataset(tmp_path):
    import subprocess
    import sys

    spec = styled_folder(tmp_path / "imgs", {"artifact": [CORRECT] * 3, "lsbg": [WRONG] * 2})
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "paper.txt").write_text("Category 0 or 1?")
    cfg = tmp_path / "mine.toml"
    cfg.write_text(f'[datasets.mine]\nformat = "folder"\npath = "{spec["path"]}"\n\n'
                   '[tasks.mine]\ndataset = "mine"\nclasses = ["artifact", "lsbg"]\nprompts = ["paper"]\n'
                   f'prompt_dir = "{tmp_path / "prompts"}"\nsample_size = "all"\n')
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "benchmark", "--bench-config", str(cfg), "freeze", "mine"],
                          cwd=repo, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo),
                               "ASTROBENCH_FIXTURES_DIR": str(tmp_path / "frozen")})
    assert proc.returncode == 0, proc.stderr
    assert "mine: 5 samples of mine (first all) ->" in proc.stdout
    from benchmark.config import load_config

    spec = load_config(cfg).datasets["mine"]
    source = frozen_source(tmp_path / "frozen" / "mine.npz", dataset="mine", spec=spec)
    assert source is not None and len(source) == 5 and source.selection == Selection("first", None)
    dataset = open_dataset("mine", spec)
    assert all(np.array_equal(source.image(i), dataset.image(i)) for i in range(5))


# -- sources --------------------------------------------------------------------------------
def test_npy_source_reads_one_image_at_a_time(tmp_path):
    files, images, labels = make_lsbg_files([3, 4], seed=5)
    with FileServer(files) as server:
        source = open_dataset("lsbg", lsbg_spec(server, files), cache_dir=tmp_path)
        assert source.ids == [str(i) for i in range(7)] and source.labels.tolist() == labels.tolist()
        assert dict(server.hits) == {"y_labels.npy": 1}  # the labels alone: no image file yet
        assert np.array_equal(source.image(5), images[5]) and source.reads == 1
        assert source.index_of("5") == 5 and source.sample(2).sha256 == Sample("2", images[2], 0).sha256
    with pytest.raises(BenchError, match="expected a sample id of the dataset, found 'x'"):
        source.index_of("x")


def test_frozen_images_read_out_of_order_match_and_corruption_is_caught(tmp_path):
    rng = np.random.default_rng(0)
    samples = [Sample(str(i), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), i % 2) for i in range(100)]
    spec = {"format": "lsbg-npy", "images": ["x.npy"], "labels": "y.npy",
            "files": {"x.npy": {"url": "http://127.0.0.1:9/x.npy", "checksum": "md5:" + "1" * 32},
                      "y.npy": {"url": "http://127.0.0.1:9/y.npy", "checksum": "md5:" + "2" * 32}}}
    path = write_frozen(tmp_path / "toy.npz", samples, dataset="toy", spec=spec)
    source = frozen_source(path, dataset="toy", spec=spec)
    assert source is not None
    for i in [5, 3, 4, 99, 0, 98]:  # back within the window, then a restart from the start
        assert np.array_equal(source.image(i), samples[i].image)
    assert [source.digest(i) for i in range(3)] == [s.sha256 for s in samples[:3]]
    source._read.digests = np.array(["0" * 64] * 100)  # as if the stored pixels had changed
    with pytest.raises(BenchError, match=r"image 7 has sha256 [0-9a-f]{64}, expected 0{64}; the file is corrupt"):
        source.image(7)


def test_sample_size_larger_than_an_npy_dataset_is_an_error(tmp_path, monkeypatch):
    files, _, _ = make_lsbg_files([3, 2], seed=6)
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "paper.txt").write_text("Category 0 or 1?")
    with FileServer(files) as server:
        raw = {"datasets": {"toy": lsbg_spec(server, files)},
               "tasks": {"toy": {"dataset": "toy", "classes": ["artifact", "lsbg"], "prompts": ["paper"],
                                 "sample_size": 6}},
               "models": {"stub": {"provider": "openai", "model": "stub-vlm",
                                   "base_url": "http://127.0.0.1:9/v1"}}}
        monkeypatch.setenv("ASTROBENCH_CACHE_DIR", str(tmp_path / "cache"))
        config = parse_config(raw, prompt_dirs={"toy": [tmp_path / "prompts"]})
        from benchmark.session import BenchSession

        bench = BenchSession(config, cassette_dir=tmp_path / "c", frozen_dir=tmp_path / "f", progress=False)
        with pytest.raises(BenchError) as err:
            bench.samples(config.tasks["toy"])
    assert str(err.value) == ('tasks.toy (dataset toy): expected sample_size <= 5 (the images of the '
                              'dataset), found 6; use sample_size = "all" for every image')
