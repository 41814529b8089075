"""The ``astrobench`` command (also ``python -m benchmark``): fetch, freeze, report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.core import BenchError

DESCRIPTION = """\
astrobench: zero-shot classification of astronomical images with vision-language models.

The benchmark itself runs under pytest (pytest cases ...); this command
prepares data for it and turns its results files into a leaderboard."""

EPILOG = """\
examples:
  astrobench fetch                          download and verify every downloadable dataset
  astrobench freeze lsbg morphology         write fixtures/samples/<dataset>.npz for offline replay
  astrobench report results/*.json --md board.md --html site/index.html --json merged.json

run `astrobench COMMAND --help` for a command's options."""

FETCH_EPILOG = """\
examples:
  astrobench fetch                  every dataset with downloadable files
  astrobench fetch lsbg galaxy-mnist
  astrobench --bench-config my.toml fetch my-dataset

files go to $ASTROBENCH_CACHE_DIR (default ~/.cache/astrobench), verified by checksum."""

FREEZE_EPILOG = """\
examples:
  astrobench freeze lsbg morphology
  astrobench --bench-config my.toml freeze lenses

writes fixtures/samples/<dataset>.npz (or $ASTROBENCH_FIXTURES_DIR/<dataset>.npz): images, labels,
per-image sha256 and a digest over the sample; commit it so CI replays without the dataset host."""

REPORT_EPILOG = """\
examples:
  astrobench report results/*.json
  astrobench report results/*.json --md board.md --html site/index.html --json merged.json
  astrobench report old.json new.json --keep newest

A case is (task, model, prompt). The same case in several files is shown once if the
runs are identical (same sample_sha256, prompt_sha256, model_id and predictions).
Any other difference is an error naming both files and what differs (exit 2),
unless --keep newest takes the run from the file with the latest "created" time
(a tie goes to the file named later) and prints a note. The published reference
rows come from cases/published.toml. The merged JSON records per case the file
it came from (source_file, source_created) and the other files that held it."""


def build_parser(prog: str = "astrobench") -> argparse.ArgumentParser:
    from benchmark.results import RESULTS_SCHEMA

    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG, formatter_class=raw)
    parser.add_argument("--bench-config", default=None, metavar="TOML",
                        help="config merged over cases/bench.toml, for fetch and freeze "
                             "(default: $ASTROBENCH_CONFIG, else none)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fetch = sub.add_parser("fetch", help="download and verify datasets into the cache",
                           description="Download datasets into the cache and verify their checksums.",
                           epilog=FETCH_EPILOG, formatter_class=raw)
    fetch.add_argument("datasets", nargs="*", metavar="DATASET",
                       help="dataset names (default: every dataset with downloadable files)")
    fetch.set_defaults(run=_fetch)
    freeze = sub.add_parser("freeze", help="write tasks' samples to fixtures/samples/ for offline replay",
                            description="Write each task's sample (images, labels, digests) to "
                                        "fixtures/samples/<dataset>.npz.",
                            epilog=FREEZE_EPILOG, formatter_class=raw)
    freeze.add_argument("tasks", nargs="+", metavar="TASK", help="task names (at least one)")
    freeze.set_defaults(run=_freeze)
    report = sub.add_parser("report", help="merge results files into one leaderboard (terminal, "
                                           "Markdown, HTML, JSON)",
                            description="Merge results files written by `pytest cases --bench-results X.json` "
                                        "into one leaderboard.",
                            epilog=REPORT_EPILOG, formatter_class=raw)
    report.add_argument("results", nargs="+", type=Path, metavar="RESULTS_JSON",
                        help=f"results files (schema {RESULTS_SCHEMA}), any number")
    report.add_argument("--md", type=Path, metavar="PATH", help="write the leaderboard as Markdown (default: none)")
    report.add_argument("--html", type=Path, metavar="PATH",
                        help="write a self-contained HTML page with confusion matrices (default: none)")
    report.add_argument("--json", type=Path, metavar="PATH",
                        help="write the merged results JSON, with each case's source file (default: none)")
    report.add_argument("--keep", choices=["newest"], default=None,
                        help="when a case's runs differ between files, keep the run of the newest file "
                             "instead of failing (default: fail with exit code 2)")
    report.set_defaults(run=_report)
    return parser


def main(argv: list[str] | None = None, *, prog: str = "astrobench") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        return args.run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _fetch(args: argparse.Namespace) -> int:
    from benchmark.config import load_config
    from benchmark.datasets import fetch_dataset

    config = load_config(args.bench_config)
    names = args.datasets or [n for n, s in config.datasets.items() if s.get("files")]
    unknown = [n for n in names if n not in config.datasets]
    if unknown:
        raise BenchError(f"unknown dataset(s) {unknown}; known: {', '.join(sorted(config.datasets))}")
    for name in names:
        for path in fetch_dataset(name, config.datasets[name]):
            print(f"{name}: {path}")
    return 0


def _freeze(args: argparse.Namespace) -> int:
    from benchmark.config import load_config
    from benchmark.frozen import frozen_dir, write_frozen
    from benchmark.sampling import task_sample

    config = load_config(args.bench_config)
    unknown = [t for t in args.tasks if t not in config.tasks]
    if unknown:
        raise BenchError(f"unknown task(s) {unknown}; known: {', '.join(sorted(config.tasks))}")
    for name in args.tasks:
        task = config.base_task(config.tasks[name])
        assert task.dataset is not None
        spec, base_dir = config.datasets[task.dataset], config.dataset_dirs.get(task.dataset)
        samples = task_sample(task, spec, base_dir=base_dir)  # images stream into the file one by one
        path = write_frozen(frozen_dir() / f"{task.dataset}.npz", samples, dataset=task.dataset,
                            spec=spec, base_dir=base_dir, selection=task.selection)
        print(f"{name}: {len(samples)} samples of {task.dataset} ({task.selection.describe()}) -> {path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from benchmark.merge import MergedReport, load_results

    files = [load_results(p) for p in args.results]
    report, notes = MergedReport.from_files(files, keep=args.keep)
    for note in notes:
        print(note, file=sys.stderr)
    print(report.text())
    print()
    print(report.sources_text())
    for path in report.write(json_path=args.json, md_path=args.md, html_path=args.html):
        print(f"wrote {path}")
    return 0
