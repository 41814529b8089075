"""Peak memory and replay time of a whole case at 500, 5,000 and 50,000 images.

    python tests/perf/memory_curve.py                       # this checkout
    python tests/perf/memory_curve.py --baseline /work/main # and another checkout beside it
    python tests/perf/memory_curve.py --sizes 500 5000      # fewer sizes

For each size it builds, once (kept in ``--work``, default
``$TMPDIR/astrobench-memory-curve``), two synthetic two-class datasets of random 64x64
images marked for the stand-in's answer styles: a ``folder`` of PNGs and an
``lsbg-npy`` dataset (two ``.npy`` files, already in the cache folder with their
checksums), and for each a complete recording of the designed answers in the real log
format (``tests/perf/test_perf_replay.synthetic_log``: the answers the loopback stand-in
gives, so accuracy is exactly 0.6). Then, each in a fresh subprocess so that its peak RSS
is the run's own (:func:`peak_rss_kib`), a replay-only run of the case
(``BenchSession``, ``--record-mode none``, ``sample_size = "all"``), with this checkout's
code and, with ``--baseline``, the other checkout's (its ``benchmark`` package first on
``PYTHONPATH``). ``folder+frozen`` replays the folder case from a frozen sample (this
checkout only: the image digests are in the file, so no image is read).

Printed per row: peak RSS, RSS after imports and loading the config, their difference,
the run's wall time, the images the run read, and the per-image slope of the peak from
the size before.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIZES = (500, 5_000, 50_000)
PROMPT = "Category 0 is an artifact, category 1 a low-surface-brightness galaxy. Answer with the number."
SEED = 0


# -- building (this checkout's code) ------------------------------------------------------------
def _images(n: int):
    """(id order index, label, image) for n random 64x64 images; labels alternate."""
    import numpy as np

    from tests.support.openai_stub import mark_image

    rng = np.random.default_rng(SEED)
    for i in range(n):
        label = i % 2
        yield i, label, mark_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), label=label,
                                   style=i % 5, n_classes=2)


def _write_recording(path: Path, entries: list[tuple[str, str, object]]) -> None:
    """(sample id, image sha256, top-left marker pixel) -> a complete recording of the stand-in's answers."""
    from benchmark.core import Request
    from tests.perf.test_perf_replay import synthetic_log

    reqs = [Request(sid, PROMPT, marker, 2, digest) for sid, digest, marker in entries]
    path.parent.mkdir(parents=True, exist_ok=True)
    synthetic_log(path, reqs)


def _model_table() -> dict:
    # the settings of tests/perf/test_perf_replay.provider(), so synthetic_log's keys match
    return {"provider": "openai", "model": "gpt-4o", "base_url": "http://127.0.0.1:9/v1", "max_tokens": 20,
            "concurrency": 8, "api_key_env": "ASTROBENCH_MEMORY_CURVE_KEY"}


def build(work: Path, fmt: str, n: int) -> Path:
    """The dataset, recording and config of one (format, size); returns the case folder."""
    import numpy as np
    from PIL import Image

    from benchmark.core import image_digest

    case = work / f"{fmt}-{n}"
    if (case / "config.json").exists():
        return case
    case.mkdir(parents=True, exist_ok=True)
    (case / "prompts").mkdir(exist_ok=True)
    (case / "prompts" / "paper.txt").write_text(PROMPT)
    entries: list[tuple[str, str, object]] = []
    if fmt == "folder":
        root = case / "images"
        for c in ("artifact", "lsbg"):
            (root / c).mkdir(parents=True, exist_ok=True)
        by_class: list[list[tuple[str, str, object]]] = [[], []]
        for i, label, image in _images(n):
            rel = f"{('artifact', 'lsbg')[label]}/img{i:06d}.png"
            Image.fromarray(image).save(root / rel)
            by_class[label].append((rel, image_digest(image), image[:1, :1].copy()))
        entries = [e for pair in zip(*by_class) for e in pair]  # the folder's interleaved order
        spec = {"format": "folder", "path": str(root), "classes": ["artifact", "lsbg"]}
    else:
        cache = case / "cache" / "toy"
        cache.mkdir(parents=True, exist_ok=True)
        images = np.empty((n, 64, 64, 3), np.uint8)
        for i, _, image in _images(n):
            images[i] = image
            entries.append((str(i), image_digest(image), image[:1, :1].copy()))
        half = n // 2
        np.save(cache / "X_1.npy", images[:half])
        np.save(cache / "X_2.npy", images[half:])
        np.save(cache / "y.npy", (np.arange(n) % 2).astype(np.float64))
        del images
        files = {f: {"url": f"http://127.0.0.1:9/{f}",
                     "checksum": "sha256:" + hashlib.sha256((cache / f).read_bytes()).hexdigest()}
                 for f in ("X_1.npy", "X_2.npy", "y.npy")}
        spec = {"format": "lsbg-npy", "images": ["X_1.npy", "X_2.npy"], "labels": "y.npy", "files": files}
    _write_recording(case / "cassettes" / "toy+stub+paper.jsonl", entries)
    raw = {"datasets": {"toy": spec},
           "tasks": {"toy": {"dataset": "toy", "classes": ["artifact", "lsbg"], "prompts": ["paper"]}},
           "models": {"stub": _model_table()}}
    (case / "config.json").write_text(json.dumps(raw))
    return case


def freeze(case: Path) -> Path:
    """A frozen sample of the case's whole dataset (this checkout's code), in ``case/frozen``."""
    from benchmark.frozen import write_frozen
    from benchmark.sampling import task_sample

    path = case / "frozen" / "toy.npz"
    if not path.exists():
        config = _config(case)
        task = config.tasks["toy"]
        write_frozen(path, task_sample(task, config.datasets["toy"]), dataset="toy",
                     spec=config.datasets["toy"], selection=task.selection)
    return path


def _config(case: Path):
    from benchmark.config import parse_config

    raw = json.loads((case / "config.json").read_text())
    return parse_config(raw, prompt_dirs={"toy": [case / "prompts"]})


# -- one measured replay (a fresh process) ----------------------------------------------------------
def peak_rss_kib() -> int:
    """This process's peak resident memory. On Linux ``VmHWM`` of ``/proc/self/status``:
    ``ru_maxrss`` also counts the parent's memory at the fork (the kernel keeps the larger
    of the two across ``execve``), so a child of a big parent would report the parent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(case: Path, frozen: bool) -> None:
    import benchmark.datasets as ds  # imported before the baseline is taken
    import benchmark.providers.openai_chat  # noqa: F401
    from benchmark.session import BenchSession, plan_cases

    config = _config(case)
    reads = [0]
    if hasattr(ds, "SampleSource"):  # count image reads where the code reads images one by one
        real = ds.SampleSource.image

        def counted(self, index):
            reads[0] += 1
            return real(self, index)

        ds.SampleSource.image = counted
    else:
        reads[0] = -1
    base = peak_rss_kib()
    t0 = time.perf_counter()
    bench = BenchSession(config, cassette_dir=case / "cassettes", record_mode="none",
                         frozen_dir=case / ("frozen" if frozen else "no-frozen"), progress=False)
    result = bench.run(plan_cases(config)[0])
    wall = time.perf_counter() - t0
    print(json.dumps({"n": result.scores.n, "accuracy": result.scores.accuracy, "wall_s": wall,
                      "peak_mib": peak_rss_kib() / 1024, "base_mib": base / 1024,
                      "cached": result.cached, "reads": reads[0]}))


def measure(case: Path, code: Path, *, frozen: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), str(ROOT)]),
           "ASTROBENCH_CACHE_DIR": str(case / "cache")}
    proc = subprocess.run([sys.executable, __file__, "--child", str(case)] + (["--frozen"] if frozen else []),
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--formats", nargs="+", default=["folder", "npy", "folder+frozen"])
    parser.add_argument("--baseline", type=Path, help="another checkout to measure beside this one")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "astrobench-memory-curve")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--frozen", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.frozen)
        return
    sys.path.insert(0, str(ROOT))
    codes = [("this", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    rows = []
    for fmt in args.formats:
        frozen = fmt.endswith("+frozen")
        for n in args.sizes:
            t0 = time.perf_counter()
            case = build(args.work, fmt.removesuffix("+frozen"), n)
            if frozen:
                freeze(case)
            print(f"# built {fmt} {n} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            for name, code in codes[:1] if frozen else codes:
                r = measure(case, code, frozen=frozen)
                rows.append((fmt, n, name, r))
                print(f"# {fmt} {n} {name}: {r}", file=sys.stderr, flush=True)
    print(f"{'dataset':<14} {'n':>6} {'code':<9} {'peak MiB':>9} {'after imports':>13} {'run MiB':>8} "
          f"{'replay s':>9} {'images read':>11} {'KiB/image':>10}  accuracy")
    previous: dict[tuple[str, str], tuple[int, float]] = {}
    for fmt, n, name, r in rows:
        if "error" in r:
            print(f"{fmt:<14} {n:>6} {name:<9} error: {r['error']}")
            continue
        run = r["peak_mib"] - r["base_mib"]
        slope = ""  # of the peak: the "after imports" point includes loading the config (a folder is listed)
        if (fmt, name) in previous:
            pn, ppeak = previous[(fmt, name)]
            slope = f"{(r['peak_mib'] - ppeak) * 1024 / (n - pn):.2f}"
        previous[(fmt, name)] = (n, r["peak_mib"])
        reads = "-" if r["reads"] < 0 else str(r["reads"])
        print(f"{fmt:<14} {n:>6} {name:<9} {r['peak_mib']:>9.1f} {r['base_mib']:>13.1f} {run:>8.1f} "
              f"{r['wall_s']:>9.2f} {reads:>11} {slope:>10}  {r['accuracy']:.3f} ({r['cached']} replayed)")


if __name__ == "__main__":
    main()
