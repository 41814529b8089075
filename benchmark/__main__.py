"""Command line: ``python -m benchmark fetch lsbg galaxy-mnist``."""

from __future__ import annotations

import argparse
import sys

from benchmark.types import BenchError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__)
    parser.add_argument("--bench-config", default=None, help="TOML merged over cases/bench.toml")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download and verify datasets into the cache")
    fetch.add_argument("datasets", nargs="*", help="dataset names (default: all downloadable)")
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
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
