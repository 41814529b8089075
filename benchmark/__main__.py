"""Command line.

``python -m benchmark fetch lsbg galaxy-mnist``  download and verify datasets
``python -m benchmark freeze lsbg morphology``   write tasks' samples to fixtures/samples/
"""

from __future__ import annotations

import argparse
import sys

from benchmark.core import BenchError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__)
    parser.add_argument("--bench-config", default=None, help="TOML merged over cases/bench.toml")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download and verify datasets into the cache")
    fetch.add_argument("datasets", nargs="*", help="dataset names (default: all downloadable)")
    freeze = sub.add_parser("freeze", help="write tasks' samples (images, labels, digests) to "
                                           "fixtures/samples/<dataset>.npz for offline replay")
    freeze.add_argument("tasks", nargs="+", help="task names")
    args = parser.parse_args(argv)

    from benchmark.config import load_config
    from benchmark.datasets import fetch_dataset

    try:
        config = load_config(args.bench_config)
        if args.command == "fetch":
            names = args.datasets or [n for n, s in config.datasets.items() if s.get("files")]
            unknown = [n for n in names if n not in config.datasets]
            if unknown:
                raise BenchError(f"unknown dataset(s) {unknown}; known: {', '.join(sorted(config.datasets))}")
            for name in names:
                for path in fetch_dataset(name, config.datasets[name]):
                    print(f"{name}: {path}")
        elif args.command == "freeze":
            from benchmark.datasets import load_dataset
            from benchmark.frozen import frozen_dir, write_frozen

            unknown = [t for t in args.tasks if t not in config.tasks]
            if unknown:
                raise BenchError(f"unknown task(s) {unknown}; known: {', '.join(sorted(config.tasks))}")
            for name in args.tasks:
                task = config.base_task(config.tasks[name])
                assert task.dataset is not None
                spec = config.datasets[task.dataset]
                samples = load_dataset(task.dataset, spec, limit=task.sample_size,
                                       base_dir=config.dataset_dirs.get(task.dataset))
                path = write_frozen(frozen_dir() / f"{task.dataset}.npz", samples, dataset=task.dataset,
                                    spec=spec, base_dir=config.dataset_dirs.get(task.dataset))
                print(f"{name}: {len(samples)} samples of {task.dataset} -> {path}")
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
