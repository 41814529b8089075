"""pytest plugin (entry point ``pytest11: astrobench``): options, fixtures, hooks.

Only wiring lives here; the logic is in ``benchmark.session`` and friends.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.types import BenchError, DatasetUnavailable

_SESSION = pytest.StashKey["object"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("astrobench", "astronomical VLM benchmark")
    group.addoption("--task", action="append", default=[], metavar="NAME",
                    help="run only this task (repeatable)")
    group.addoption("--model", action="append", default=[], metavar="NAME",
                    help="run only this model, even if disabled in config (repeatable)")
    group.addoption("--prompt", action="append", default=[], metavar="VARIANT",
                    help="run only this prompt variant (repeatable)")
    group.addoption("--limit", type=int, default=None, metavar="N",
                    help="use the first N samples of each task")
    group.addoption("--bench-config", default=None, metavar="PATH",
                    help="TOML merged over cases/bench.toml (default: $ASTROBENCH_CONFIG)")
    group.addoption("--results", default=None, metavar="PATH",
                    help="write results with per-sample predictions as JSON")
    group.addoption("--responses-dir", default=None, metavar="DIR",
                    help="where answers are saved as they arrive, for resume "
                         "(default: $ASTROBENCH_RESPONSES_DIR or .astrobench/responses)")
    group.addoption("--no-progress", action="store_true", default=False,
                    help="hide the per-case progress bars")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "astrobench: a benchmark case (task x model x prompt)")
    opt = config.option
    if opt.task or opt.model or opt.prompt or opt.bench_config or opt.limit is not None:
        _cases(config)  # asked for the benchmark: check the selection up front


def _cases(config: pytest.Config) -> list:
    from benchmark.session import plan_cases

    bench = _bench(config)
    opt = config.option
    try:
        return plan_cases(bench.config, tasks=opt.task, models=opt.model, prompts=opt.prompt)
    except BenchError as exc:
        raise pytest.UsageError(str(exc)) from None


def _bench(config: pytest.Config):
    """The session object, built on first use (config errors become usage errors)."""
    if _SESSION not in config.stash:
        from benchmark.config import load_config
        from benchmark.session import BenchSession

        opt = config.option
        try:
            bench = BenchSession(
                load_config(opt.bench_config),
                limit=opt.limit,
                responses_dir=Path(opt.responses_dir) if opt.responses_dir else None,
                progress=not opt.no_progress,
            )
        except BenchError as exc:
            raise pytest.UsageError(str(exc)) from None
        config.stash[_SESSION] = bench
    return config.stash[_SESSION]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_case" not in metafunc.fixturenames:
        return
    cases = _cases(metafunc.config)
    metafunc.parametrize(
        "bench_case",
        [pytest.param(c, marks=pytest.mark.astrobench) for c in cases],
        ids=[c.id for c in cases],
    )


@pytest.fixture(scope="session")
def bench(request: pytest.FixtureRequest):
    """The ``BenchSession`` of this pytest run."""
    return _bench(request.config)


@pytest.fixture
def bench_run(bench):
    """Run a case; skip it (with the reason) if its data cannot be had offline."""

    def run(case):
        try:
            return bench.run(case)
        except DatasetUnavailable as exc:
            pytest.skip(str(exc))
        except BenchError as exc:
            pytest.fail(str(exc), pytrace=False)

    return run


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    bench = config.stash.get(_SESSION, None)
    if bench is None or not bench.results:
        return
    from benchmark.leaderboard import render_text

    terminalreporter.write_sep("=", "astrobench leaderboard")
    terminalreporter.write_line(render_text(bench.results))
    if config.option.results:
        terminalreporter.write_line(f"results written to {config.option.results}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    bench = session.config.stash.get(_SESSION, None)
    if bench is None:
        return
    bench.close()
    if session.config.option.results and bench.results:
        from benchmark.leaderboard import results_document, write_json_atomic

        write_json_atomic(Path(session.config.option.results),
                          results_document(bench.results, sources=bench.config.sources))
