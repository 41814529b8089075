"""pytest plugin (entry point ``pytest11: astrobench``): options, fixtures, hooks.

Only wiring lives here; the logic is in ``benchmark.session`` and friends.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmark.core import BenchError, Unavailable

_SESSION = pytest.StashKey["object"]()
_BASELINE = pytest.StashKey["object"]()
_WRITE_ERROR = pytest.StashKey[str]()
_REPORT = pytest.StashKey["object"]()
_WRITER = pytest.StashKey["object"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("astrobench", "astronomical VLM benchmark")
    group.addoption("--bench-task", action="append", default=[], metavar="NAME",
                    help="run only this task (repeatable)")
    group.addoption("--bench-model", action="append", default=[], metavar="NAME",
                    help="run only this model, even if disabled in config (repeatable)")
    group.addoption("--bench-prompt", action="append", default=[], metavar="VARIANT",
                    help="run only this prompt variant (repeatable)")
    group.addoption("--bench-limit", type=int, default=None, metavar="N",
                    help="use the first N samples of each task")
    group.addoption("--bench-config", default=None, metavar="PATH",
                    help="TOML merged over cases/bench.toml (default: $ASTROBENCH_CONFIG)")
    group.addoption("--bench-results", default=None, metavar="PATH",
                    help="write results with per-sample predictions as JSON")
    group.addoption("--bench-cassette-dir", default=None, metavar="DIR",
                    help="where recorded answers live, one file per case (default: "
                         "$ASTROBENCH_CASSETTE_DIR, else the vcr_cassette_dir fixture). "
                         "Record and replay with pytest-recording's --record-mode "
                         "(none by default: replay only)")
    group.addoption("--bench-no-progress", action="store_true", default=False,
                    help="hide the per-case progress (done/total, img/s, ETA, live vs replayed)")
    group.addoption("--bench-detail", action="store_true", default=False,
                    help="also print, per case: per-class P/R/F1, confusion matrix (counts and "
                         "row-normalised), ROC-AUC, tokens, cost, wall time and throughput")
    group.addoption("--bench-md", default=None, metavar="PATH",
                    help="write the leaderboard as GitHub-flavoured Markdown")
    group.addoption("--bench-html", default=None, metavar="PATH",
                    help="write a self-contained HTML leaderboard with confusion-matrix heatmaps")
    group.addoption("--bench-baseline", default=None, metavar="PATH",
                    help="compare each case with the same case in this earlier --bench-results JSON "
                         "(shared sample ids, exact McNemar test)")
    group.addoption("--bench-fail-on-regression", action="store_true", default=False,
                    help="fail a case whose accuracy dropped against --bench-baseline with p < --bench-alpha")
    group.addoption("--bench-alpha", type=float, default=0.05, metavar="P",
                    help="significance level of the regression gate (default 0.05)")
    parser.addini("bench_cassette_dir", "folder of recorded answers, relative to the rootdir (default: the "
                  "vcr_cassette_dir fixture, else cassettes/)", default="")
    parser.addini("bench_frozen_dir", "folder of frozen samples, relative to the rootdir", default="fixtures/samples")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "astrobench: a benchmark case (task x model x prompt)")
    opt = config.option
    _load_baseline(config)
    if not config.pluginmanager.hasplugin("xdist"):
        config.addinivalue_line("markers", "xdist_group(name): cases sharing model calls (pytest-xdist)")
    from benchmark.config import CONFIG_ENV

    if (opt.bench_task or opt.bench_model or opt.bench_prompt or opt.bench_config or opt.bench_limit is not None
            or os.environ.get(CONFIG_ENV)):
        _cases(config)  # asked for the benchmark: check config and selection before anything runs


def _load_baseline(config: pytest.Config) -> None:
    from benchmark.compare import Baseline

    opt = config.option
    if not 0 < opt.bench_alpha < 1:
        raise pytest.UsageError(f"expected --bench-alpha in (0, 1), found {opt.bench_alpha}")
    if opt.bench_fail_on_regression and not opt.bench_baseline:
        raise pytest.UsageError("--bench-fail-on-regression expects --bench-baseline PATH, found no --bench-baseline")
    if opt.bench_baseline:
        try:
            config.stash[_BASELINE] = Baseline.load(opt.bench_baseline)
        except BenchError as exc:
            raise pytest.UsageError(str(exc)) from None


def _report(config: pytest.Config, bench):
    """The run's one Report (every output is rendered from it), built on first use: at
    sessionfinish, after xdist merged the workers' results, and reused by the terminal
    summary, which pytest calls after sessionfinish."""
    if _REPORT not in config.stash:
        from benchmark.report import Report

        config.stash[_REPORT] = Report.build(bench.results, config=bench.config, alpha=config.option.bench_alpha,
                                             baseline=config.stash.get(_BASELINE, None),
                                             fail_on_regression=config.option.bench_fail_on_regression,
                                             skipped=_skipped_cases(config))
        from benchmark.provenance import collect

        config.stash[_REPORT].provenance = collect(bench, plugin_config=config)
    return config.stash[_REPORT]


def _skipped_cases(config: pytest.Config) -> list[dict[str, str]]:
    """The benchmark cases skipped in this run (e.g. their data is neither cached nor
    downloadable), each with its task and the skip's one-line reason (what is missing and
    the command that gets it). Read from the terminal reporter, which also holds the
    reports of xdist workers."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    skips = [rep for rep in (reporter.stats.get("skipped", []) if reporter is not None else [])
             if "astrobench" in getattr(rep, "keywords", {}) and isinstance(rep.longrepr, tuple)]
    if not skips:
        return []
    try:
        tasks = {c.id: c.task.name for c in _cases(config)}
    except pytest.UsageError:
        tasks = {}
    out, seen = [], set()
    for rep in skips:
        case_id = rep.nodeid.rsplit("[", 1)[-1].rstrip("]") if rep.nodeid.endswith("]") else rep.nodeid
        if case_id in seen:
            continue
        seen.add(case_id)
        reason = str(rep.longrepr[2]).removeprefix("Skipped: ")
        out.append({"case_id": case_id, "task": tasks.get(case_id, ""), "reason": " ".join(reason.split())})
    return out


def _cases(config: pytest.Config) -> list:
    from benchmark.session import plan_cases

    bench = _bench(config)
    opt = config.option
    try:
        return plan_cases(bench.config, tasks=opt.bench_task, models=opt.bench_model, prompts=opt.bench_prompt)
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
                limit=opt.bench_limit,
                cassette_dir=_cassette_dir(config) or config.rootpath / "cassettes",
                frozen_dir=_frozen_dir(config),
                record_mode=None if getattr(opt, "disable_recording", False)
                else (getattr(opt, "record_mode", None) or "none"),
                progress=False,  # set by bench_run, once the terminal reporter exists
                command_hint=_command_hint(config),
            )
        except BenchError as exc:
            raise pytest.UsageError(str(exc)) from None
        config.stash[_SESSION] = bench
    return config.stash[_SESSION]


def _command_hint(config: pytest.Config) -> str:
    """How this run was started, for the commands that error messages suggest: the paths
    given, and every option that decides where answers live."""
    parts = ["pytest", *config.args]
    if config.option.bench_cassette_dir:
        parts.append(f"--bench-cassette-dir {config.option.bench_cassette_dir}")
    return " ".join(parts)


def _cassette_dir(config: pytest.Config) -> Path | None:
    """Where recordings live when set explicitly: --bench-cassette-dir, $ASTROBENCH_CASSETTE_DIR,
    or the ini option bench_cassette_dir (relative to the rootdir); None: not set."""
    import os

    from benchmark.session import CASSETTES_ENV

    chosen = config.option.bench_cassette_dir or os.environ.get(CASSETTES_ENV)
    if chosen:
        return Path(chosen)
    ini = config.getini("bench_cassette_dir")
    return config.rootpath / ini if ini else None


def _frozen_dir(config: pytest.Config) -> Path:
    """$ASTROBENCH_FIXTURES_DIR, else the ini option bench_frozen_dir under the rootdir."""
    import os

    from benchmark.frozen import FIXTURES_ENV

    env = os.environ.get(FIXTURES_ENV)
    return Path(env) if env else config.rootpath / config.getini("bench_frozen_dir")


def _terminal_writer(config: pytest.Config):
    """``write(text, redraw)`` through the terminal reporter with capture suspended (as pytest-benchmark
    prints), one per run so progress and notices share the line; None in xdist workers (their output
    is not shown)."""
    if _WRITER in config.stash:
        return config.stash[_WRITER]
    from contextlib import nullcontext

    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if hasattr(config, "workerinput") or reporter is None:
        config.stash[_WRITER] = None
        return None
    capman = config.pluginmanager.get_plugin("capturemanager")
    drawing = False

    def write(text: str, redraw: bool) -> None:
        nonlocal drawing
        with capman.global_and_fixture_disabled() if capman is not None else nullcontext():
            if not drawing:
                reporter.ensure_newline()  # never draw over pytest's own line
            if redraw:
                reporter.rewrite(text, erase=True)
                drawing = True
            elif text:
                if drawing:  # a line of its own, below the progress line drawn so far
                    reporter.line("")
                    drawing = False
                reporter.write_line(text)
            else:
                reporter.line("")
                drawing = False

    config.stash[_WRITER] = write
    return write


def _progress(config: pytest.Config):
    """Live per-case progress through the terminal reporter; None with --bench-no-progress and
    in xdist workers."""
    from benchmark.progress import Progress

    write = _terminal_writer(config)
    if config.option.bench_no_progress or write is None:
        return None
    return Progress(write, tty=config.pluginmanager.get_plugin("terminalreporter").isatty)


def _announcer(config: pytest.Config):
    """Notices of the recording layer (an interrupted recording folded in, a batch submitted or
    resumed, waiting for another recorder) on the terminal, also with --bench-no-progress: pytest
    would otherwise keep them in a passing test's captured output, never shown."""
    write = _terminal_writer(config)
    return None if write is None else (lambda msg: write(f"astrobench: {msg}", False))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_case" not in metafunc.fixturenames:
        return
    from benchmark.scheduling import share_group

    cases = _cases(metafunc.config)
    metafunc.parametrize(
        "bench_case",
        [pytest.param(c, marks=[pytest.mark.astrobench, pytest.mark.xdist_group(name=share_group(c))])
         for c in cases],
        ids=[c.id for c in cases],
    )


@pytest.fixture(scope="session")
def bench(request: pytest.FixtureRequest):
    """The ``BenchSession`` of this pytest run."""
    return _bench(request.config)


@pytest.fixture
def bench_run(bench, request: pytest.FixtureRequest):
    """Run a case; skip it (with the reason) if its data cannot be had offline;
    fail it on a significant regression against ``--bench-baseline`` with ``--bench-fail-on-regression``.

    pytest-recording conventions apply: the ``vcr_config`` fixture's options
    reach the recordings, and the ``vcr_cassette_dir`` fixture places them
    unless ``--bench-cassette-dir``, ``$ASTROBENCH_CASSETTE_DIR`` or the ini
    option ``bench_cassette_dir`` says otherwise.
    """
    config = request.config
    if bench.progress is None:
        bench.progress = _progress(config)
    if bench.announce is None:
        bench.announce = _announcer(config)
    if config.pluginmanager.hasplugin("recording"):
        if _cassette_dir(config) is None:
            bench.cassette_dir = Path(request.getfixturevalue("vcr_cassette_dir"))
        bench.vcr_config = dict(request.getfixturevalue("vcr_config"))
        # pytest-recording's public hook: users' pytest_recording_configure(config, vcr) sees our VCR too
        bench.vcr_configure = lambda vcr: config.hook.pytest_recording_configure(config=config, vcr=vcr)

    def run(case):
        problem = None
        try:
            result = bench.run(case)
        except Unavailable as exc:
            pytest.skip(str(exc))
        except BenchError as exc:
            problem = str(exc)
        if problem is not None:  # outside the except: the message is printed once, not chained
            pytest.fail(problem, pytrace=False)
        baseline = config.stash.get(_BASELINE, None)
        if baseline is not None and config.option.bench_fail_on_regression:
            comparison = baseline.compare(result, alpha=config.option.bench_alpha)
            if comparison.regression:
                pytest.fail(f"{comparison.describe()}\n{result.describe()}", pytrace=False)
        return result

    return run


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    bench = config.stash.get(_SESSION, None)
    if bench is None or not bench.results:
        # nothing measured: still show the published reference and what each skipped case needs
        if not _skipped_cases(config):
            return
        bench = _bench(config)
    opt = config.option
    report = _report(config, bench)  # the one built at sessionfinish (or here, when nothing ran)
    terminalreporter.write_sep("=", "astrobench leaderboard")
    terminalreporter.write_line(report.text())  # measured, published, and against the baseline
    _warn_baseline_differences(terminalreporter, config, report)
    if opt.bench_detail:
        terminalreporter.write_sep("-", "astrobench detail")
        terminalreporter.write_line(report.detail())
    problem = config.stash.get(_WRITE_ERROR, None)
    for what, path in (("results", opt.bench_results), ("Markdown", opt.bench_md),
                       ("HTML", opt.bench_html)):
        if path and not (problem and str(path) in problem):
            terminalreporter.write_line(f"{what} written to {path}")
    if problem:
        terminalreporter.write_line(f"astrobench: {problem}", red=True)


def _warn_baseline_differences(terminalreporter, config: pytest.Config, report) -> None:
    """With --bench-baseline: what differs between the baseline's run and this one (prompts, model
    ids, served snapshots, data; ``note:`` lines are softer), or that the baseline does not say."""
    baseline = config.stash.get(_BASELINE, None)
    if baseline is None:
        return
    if baseline.provenance is None:
        terminalreporter.write_line(f"astrobench: baseline {baseline.path} records no provenance (an older "
                                    f"results file, or merged from one): cannot tell whether its prompts, models or data differ "
                                    f"from this run's", yellow=True)
        return
    lines = report.baseline_differences()
    if lines:
        terminalreporter.write_line(f"astrobench: baseline {baseline.path} differs from this run in:", yellow=True)
        for line in lines:
            terminalreporter.write_line(f"  {line}", yellow=not line.startswith("note:"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    bench = session.config.stash.get(_SESSION, None)
    if bench is None:
        return
    bench.close()
    opt = session.config.option
    if hasattr(session.config, "workerinput"):  # xdist worker: the controller merges and writes
        session.config.workeroutput["astrobench"] = json.dumps([r.to_json() for r in bench.results])
        return
    if bench.results:
        report = _report(session.config, bench)  # built once, here; the terminal summary reuses it
        try:
            report.write(
                json_path=opt.bench_results and Path(opt.bench_results), md_path=opt.bench_md and Path(opt.bench_md),
                html_path=opt.bench_html and Path(opt.bench_html), sources=bench.config.sources)
        except BenchError as exc:  # the JSON is written first; a failed report fails the run, visibly
            session.config.stash[_WRITE_ERROR] = str(exc)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """xdist (load / loadgroup): cases sharing model calls go to one worker."""
    if config.getvalue("dist") not in ("load", "loadgroup"):
        return None
    from benchmark.scheduling import make_scheduler

    return make_scheduler(config, log, _cases(config))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """xdist controller: gather the case results a worker sent back, in plan order."""
    data = getattr(node, "workeroutput", {}).get("astrobench")
    if not data:
        return
    from benchmark.results import CaseResult

    bench = _bench(node.config)
    bench.results.extend(CaseResult.from_json(d) for d in json.loads(data))
    order = {c.id: i for i, c in enumerate(_cases(node.config))}
    bench.results.sort(key=lambda r: order.get(r.case_id, len(order)))

